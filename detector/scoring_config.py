"""Scoring settings: :class:`ScoringConfig` (a preset's ``scoring`` section, a profile, the
caller's overrides, merged in that order) and the named profiles."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from detector.background import NormaliseConfig
from detector.errors import ConfigError
from detector.images import DEFAULT_MAX_PIXELS
from detector.regions import RegionConfig
from detector.signals.registry import DEFAULT_SIGNALS
from detector.signals.text import TextConfig
from detector.silhouettes import SilhouetteConfig
from detector.verify import VerifyConfig


@dataclass(frozen=True)
class ScoringConfig:
    """Knobs of the scoring flow. Defaults come from the model preset's ``scoring`` section.

    Attributes:
        top_k: Matches reported per image.
        search_k: Neighbours fetched per region before merging (>= top_k).
        regions: Query-side region proposals (disabled = whole frame only).
        verify: Geometric verification of the top candidates (disabled = cosine only).
        silhouettes: Mark silhouettes of the first regions, embedded and shape-checked.
        search_params: FAISS search parameters, e.g. ``{"efSearch": 128}``.
        max_pixels: Decompression-bomb guard for listing images.
        signals: The signals that score, in order (:mod:`detector.signals.registry`); each
            also needs its own section enabled (``verify`` for local features and the
            product logo area, ``silhouettes`` for the shape search, ``text`` for the
            brand names read in the photo).
        normalise: Background normalisation of the embedding cosine
            (:mod:`detector.background`; off by default).
        text: The text signal's OCR and score (:mod:`detector.signals.text`).
    """

    top_k: int = 5
    search_k: int = 20
    regions: RegionConfig = field(default_factory=RegionConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    silhouettes: SilhouetteConfig = field(default_factory=SilhouetteConfig)
    search_params: dict[str, Any] = field(default_factory=dict)
    max_pixels: int = DEFAULT_MAX_PIXELS
    signals: tuple[str, ...] = DEFAULT_SIGNALS
    normalise: NormaliseConfig = field(default_factory=NormaliseConfig)
    text: TextConfig = field(default_factory=TextConfig)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ScoringConfig:
        data = dict(data or {})
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown scoring option(s): {', '.join(sorted(unknown))}")
        base = cls()
        return cls(
            top_k=int(data.get("top_k", base.top_k)),
            search_k=int(data.get("search_k", base.search_k)),
            regions=_override(base.regions, data.get("regions")),
            verify=_override(base.verify, data.get("verify")),
            silhouettes=_override(base.silhouettes, data.get("silhouettes")),
            search_params=dict(data.get("search_params", {})),
            max_pixels=int(data.get("max_pixels", base.max_pixels)),
            signals=tuple(data.get("signals", base.signals)),
            normalise=_override(base.normalise, data.get("normalise")),
            text=_override(base.text, data.get("text")),
        )


# Named scoring profiles, applied over a preset's own ``scoring`` defaults. "thorough" finds
# more logos inside photos (a few regions and colour components, their mark silhouettes, shape
# and RANSAC checks, the mirrored listing) at about a third of the default's speed
# (effnet-lite0, 2-core CPU: 3.96 vs 12.6 images/s); see docs/benchmarks.md for measured figures.
PROFILES: dict[str, dict[str, Any]] = {
    "fast": {},
    # The preset's defaults without the shape search: the whole frame and local features only
    # (effnet-lite0 on the benchmark: 16.1 vs 12.6 images/s, logos in photos found less often).
    "lean": {"silhouettes": {"enabled": False}},
    "thorough": {
        "regions": {"enabled": True, "max_regions": 5, "embed_crops": False},
        "verify": {"enabled": True, "mirrored": True},
        # The library's silhouette settings, whatever the preset's (effnet-lite0's default only
        # searches marks by shape): marks' silhouettes embedded, shapes checked and added; a
        # shape another brand's logo or a generic shape (a star) comes close to counts less.
        "silhouettes": {**asdict(SilhouetteConfig()), "enabled": True, "distinct_margin": 0.05},
        # Brand names read in the photo (offline OCR, the ``text`` extra; skipped when it is not
        # installed): recall of names written on goods, misspelled ones included, for ~0.2-0.6 s
        # a listing on 2 cores — too slow for the default profile (docs/text.md).
        "signals": [*DEFAULT_SIGNALS, "text"],
    },
}


def resolve_scoring(preset_defaults: dict[str, Any], options: dict[str, Any] | None) -> tuple[ScoringConfig, str | None]:
    """Scoring settings as preset defaults < ``options["profile"]`` < the other options.

    Returns:
        The config and the profile name (None when not given).

    Raises:
        ConfigError: Unknown profile or option.
    """
    options = dict(options or {})
    profile = options.pop("profile", None)
    if profile is not None and profile not in PROFILES:
        raise ConfigError(f"unknown scoring profile {profile!r}; choose from {', '.join(PROFILES)}")
    merged = merge_options(preset_defaults, PROFILES[profile] if profile else {})
    return ScoringConfig.from_dict(merge_options(merged, options)), profile


def merge_options(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Scoring options ``overrides`` on top of ``base``, section by section (regions, verify)."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_options(merged[key], value)
        else:
            merged[key] = value
    return merged


def _override(obj: Any, values: dict[str, Any] | None) -> Any:
    if not values:
        return obj
    try:
        return replace(obj, **{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    except TypeError as e:
        raise ConfigError(f"bad {type(obj).__name__} option: {e}") from e
