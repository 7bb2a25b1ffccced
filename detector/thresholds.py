"""Threshold files: a global default, per-kind and per-brand overrides.

Format (JSON, or YAML when the file ends in .yaml/.yml)::

    {
      "version": "effnet-lite0-2026-11-28",   # free text, reported by the service
      "score": "fused",                        # which score the thresholds apply to
      "default": 0.80,                         # global threshold
      "kinds": {"logo": 0.75, "product": 0.85},
      "brands": {"acme": 0.70, "globex": {"default": 0.72, "logo": 0.68}}
    }

Resolution order, most specific first: brand+kind, brand, kind, default. The verdict records
which one applied (``source``), so an analyst can see why a listing was flagged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detector.errors import ConfigError
from index.atomic import atomic_write_bytes
from index.records import KINDS


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

    def for_match(self, brand: str, kind: str) -> AppliedThreshold:
        """Threshold for a match of ``brand`` on a reference of ``kind``."""
        per_brand = self.brands.get(brand)
        if per_brand is not None:
            if kind in per_brand:
                return AppliedThreshold(per_brand[kind], f"brand:{brand}:{kind}")
            if "default" in per_brand:
                return AppliedThreshold(per_brand["default"], f"brand:{brand}")
        if kind in self.kinds:
            return AppliedThreshold(self.kinds[kind], f"kind:{kind}")
        return AppliedThreshold(self.default, "default")

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
            if kind not in KINDS:
                raise ConfigError(f"{origin}: unknown kind {kind!r}; known kinds: {', '.join(KINDS)}")
            kinds[kind] = _threshold(value, f"{origin}: kinds.{kind}")
        brands: dict[str, dict[str, float]] = {}
        for brand, value in (data.get("brands") or {}).items():
            if isinstance(value, dict):
                entry = {}
                for key, v in value.items():
                    if key != "default" and key not in KINDS:
                        raise ConfigError(
                            f"{origin}: brands.{brand}: unknown key {key!r}; "
                            f"use 'default' or one of {', '.join(KINDS)}"
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
