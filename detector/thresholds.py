"""Threshold files: a global default, per-kind and per-brand overrides.

Format (JSON, or YAML when the file ends in .yaml/.yml)::

    {
      "version": "effnet-lite0-2026-11-28",   # free text, reported by the service
      "score": "fused",                        # which score the thresholds apply to
      "default": 0.80,                         # global threshold
      "kinds": {"logo": 0.75, "logo:verified": 0.70, "product": 0.85},
      "brands": {"acme": 0.70, "globex": {"default": 0.72, "logo": 0.68}}
    }

A key is a reference kind, ``<kind>:verified`` for matches whose geometric verification
was accepted (RANSAC found the reference in the listing), or ``<kind>:text`` for matches
whose score a brand name read in the photo decided (:mod:`detector.signals.text`). The two kinds of evidence fail
differently: an embedding-only match of a flat mark can reach a high cosine on any similar
shape, while a verified one rarely happens by chance, so each may need its own threshold
(measured on the benchmark's tuning set, effnet-lite0 ``thorough``: one logo threshold had
to sit at 0.98 to keep logo-free listings out, which most verified logos never reach).

Resolution order, most specific first: brand+key, brand+kind, brand, key, kind, default
(``key`` = ``<kind>:verified`` for a verified match; for others key and kind are the same).
A brand's own threshold thus still wins over a verified-evidence one. The verdict records
which one applied (``source``), so an analyst can see why a listing was flagged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detector.configs import configs_root
from detector.errors import ConfigError
from index.atomic import atomic_write_bytes
from index.records import KINDS

THRESHOLDS_DIR = configs_root() / "thresholds"  # the shipped tables
VERIFIED = "verified"
TEXT = "text"
# Every key a kinds/brands table may hold: the kinds, each kind's verified evidence and each
# kind's text evidence (older tables without the last keep working: a key falls back to its kind).
THRESHOLD_KEYS: tuple[str, ...] = KINDS + tuple(f"{k}:{VERIFIED}" for k in KINDS) + tuple(f"{k}:{TEXT}" for k in KINDS)


def threshold_key(kind: str, verified: bool, basis: str | None = None) -> str:
    """The table key of a match: ``<kind>:<basis>`` when a signal with its own threshold
    decided the score (``text``), else ``<kind>:verified`` or its reference kind.

    Example:
        >>> threshold_key("logo", True), threshold_key("logo", False), threshold_key("logo", True, "text")
        ('logo:verified', 'logo', 'logo:text')
    """
    if basis and f"{kind}:{basis}" in THRESHOLD_KEYS:
        return f"{kind}:{basis}"
    return f"{kind}:{VERIFIED}" if verified else kind


def key_fallbacks(key: str) -> list[str]:
    """The table keys that may govern a match with ``key``, most specific first: ``key``,
    then (for a verified or text key) its plain kind."""
    kind = key.split(":", 1)[0]
    return [key] if kind == key else [key, kind]


@dataclass(frozen=True)
class AppliedThreshold:
    """The threshold that applied to one (brand, kind) and where it came from."""

    value: float
    source: str  # "brand:<b>:<kind>", "brand:<b>", "kind:<kind>" or "default"


@dataclass(frozen=True)
class Thresholds:
    """Resolved threshold table. Scores at or above the threshold are flagged."""

    default: float
    kinds: dict[str, float] = field(default_factory=dict)
    brands: dict[str, dict[str, float]] = field(default_factory=dict)
    version: str = "unversioned"
    score: str = "fused"

    def for_match(self, brand: str, key: str) -> AppliedThreshold:
        """Threshold for a match of ``brand`` with table key ``key`` (:func:`threshold_key`)."""
        per_brand = self.brands.get(brand)
        if per_brand is not None:
            for k in key_fallbacks(key):
                if k in per_brand:
                    return AppliedThreshold(per_brand[k], f"brand:{brand}:{k}")
            if "default" in per_brand:
                return AppliedThreshold(per_brand["default"], f"brand:{brand}")
        for k in key_fallbacks(key):
            if k in self.kinds:
                return AppliedThreshold(self.kinds[k], f"kind:{k}")
        return AppliedThreshold(self.default, "default")

    def keys_in_use(self) -> tuple[str, ...]:
        """The kinds, plus each verified or text key some entry of the table sets (for reports)."""
        used = set(self.kinds).union(*(set(v) for v in self.brands.values()))
        return KINDS + tuple(k for k in THRESHOLD_KEYS if k not in KINDS and k in used)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "score": self.score,
            "default": self.default,
            "kinds": dict(self.kinds),
            "brands": {b: dict(v) for b, v in self.brands.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, origin: str = "<dict>") -> Thresholds:
        """Validate and build a table; raises ConfigError naming ``origin`` and the bad field."""
        if not isinstance(data, dict) or "default" not in data:
            raise ConfigError(f"{origin}: a thresholds file needs a top-level 'default' number")
        default = _threshold(data["default"], f"{origin}: default")
        kinds = {}
        for kind, value in (data.get("kinds") or {}).items():
            if kind not in THRESHOLD_KEYS:
                raise ConfigError(f"{origin}: unknown kind {kind!r}; known: {', '.join(THRESHOLD_KEYS)}")
            kinds[kind] = _threshold(value, f"{origin}: kinds.{kind}")
        brands: dict[str, dict[str, float]] = {}
        for brand, value in (data.get("brands") or {}).items():
            if isinstance(value, dict):
                entry = {}
                for key, v in value.items():
                    if key != "default" and key not in THRESHOLD_KEYS:
                        raise ConfigError(
                            f"{origin}: brands.{brand}: unknown key {key!r}; "
                            f"use 'default' or one of {', '.join(THRESHOLD_KEYS)}"
                        )
                    entry[key] = _threshold(v, f"{origin}: brands.{brand}.{key}")
                brands[str(brand)] = entry
            else:
                brands[str(brand)] = {"default": _threshold(value, f"{origin}: brands.{brand}")}
        return cls(
            default=default,
            kinds=kinds,
            brands=brands,
            version=str(data.get("version", "unversioned")),
            score=str(data.get("score", "fused")),
        )


def _threshold(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if not -1.0 <= float(value) <= 2.0:
        raise ConfigError(f"{where}: {value} is outside the score range [-1, 2]")
    return float(value)


def load_thresholds(path: str | Path) -> Thresholds:
    """Read a thresholds file (.json, .yaml or .yml)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read thresholds file {path}: {e}") from e
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as e:  # json/yaml both raise their own types
        raise ConfigError(f"{path}: not valid {path.suffix.lstrip('.') or 'JSON'}: {e}") from e
    return Thresholds.from_dict(data, origin=str(path))


def save_thresholds(thresholds: Thresholds, path: str | Path) -> None:
    """Write a thresholds file atomically (JSON, or YAML by extension)."""
    path = Path(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        text = yaml.safe_dump(thresholds.to_dict(), sort_keys=True)
    else:
        text = json.dumps(thresholds.to_dict(), indent=2, sort_keys=True) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, text.encode("utf-8"))


def default_thresholds_path(preset: str, profile: str | None = None) -> Path:
    """The shipped thresholds file of a preset and profile.

    ``<preset>-<profile>.json`` when it exists (a profile changes the score's scale, e.g.
    the shape bonus), else ``<preset>.json``, else ``default.json``.
    """
    names = ([f"{preset}-{profile}.json"] if profile else []) + [f"{preset}.json", "default.json"]
    return next(p for p in (THRESHOLDS_DIR / n for n in names) if p.exists() or p.name == "default.json")
