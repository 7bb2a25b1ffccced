"""Named scoring variants of the bench and the Detector each one scores with.

Every variant shares the model and index of one base Detector; only the scoring switches
(and, for a profile, its shipped thresholds) differ.
"""

from __future__ import annotations

from typing import Any

from detector.errors import ConfigError

# Scoring switches of each named variant, applied over the preset's defaults and --scoring.
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    # One vector per image: the "before" of region matching (no border-trimmed frame either,
    # no shape search, whatever the preset's defaults).
    "whole-image": {"regions": {"enabled": False, "trim_frame": False}, "verify": {"enabled": False},
                    "silhouettes": {"enabled": False}},
    "regions": {"regions": {"enabled": True}, "verify": {"enabled": False}},
    "verify": {"regions": {"enabled": False}, "verify": {"enabled": True}},
    "regions+verify": {"regions": {"enabled": True}, "verify": {"enabled": True}},
    # The "lean" and "thorough" scoring profiles (detector.scoring.PROFILES), each with its
    # own thresholds.
    "lean": {"profile": "lean"},
    "thorough": {"profile": "thorough"},
    # "thorough" with the regions its text signal can offer around the lines it reads (off by
    # default; docs/text.md: what they add and cost).
    "thorough-text-regions": {"profile": "thorough", "text": {"regions": True}},
}


def variant_detector(
    base: Any, name: str, overrides: dict[str, Any] | None = None, *, explicit_thresholds: bool = False
) -> Any:
    """A Detector sharing ``base``'s model and index, with variant ``name``'s scoring.

    Settings resolve as: preset defaults < a profile < ``overrides`` < the variant's
    switches. A profile variant scores with the profile's shipped thresholds unless the
    thresholds were given explicitly (``explicit_thresholds``).

    Raises:
        ConfigError: Unknown variant or scoring option.
    """
    from detector.scoring import Detector, merge_options, resolve_scoring
    from detector.thresholds import default_thresholds_path
    from detector.thresholds import load_thresholds

    if name not in VARIANTS:
        raise ConfigError(f"unknown variant {name!r}; choose from {list(VARIANTS)}")
    config, profile = resolve_scoring(
        base.embedder.preset.defaults.get("scoring", {}), merge_options(overrides or {}, VARIANTS[name])
    )
    thresholds = base.thresholds
    if profile is not None and not explicit_thresholds:
        thresholds = load_thresholds(default_thresholds_path(base.embedder.preset.name, profile))
    return Detector(base.index, base.embedder, thresholds=thresholds, config=config)
