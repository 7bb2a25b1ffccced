"""Values that cross module borders: references, matches, the model fingerprint and reports.

All are frozen dataclasses with JSON-friendly fields, identical in the Python API, the
CLI's JSON lines and the HTTP responses.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

Kind = Literal["logo", "product"]
KINDS: tuple[str, ...] = ("logo", "product")


@dataclass(frozen=True)
class Fingerprint:
    """Identity of the embedding model: vectors are comparable only when fingerprints are equal.

    Attributes:
        preset: Preset name the embedder was created from (informational, not compared).
        arch: Backend and architecture, e.g. ``"open_clip:ViT-B-32"``.
        weights: Weights identity: an open_clip pretrained tag, an hf-hub id, ``"sha256:<hex>"``
            of a local checkpoint, or ``"random:<seed>"``.
        preprocess: Canonical JSON of the preprocessing (size, mean, std, interpolation, resize mode).
        dim: Output dimension.
    """

    preset: str
    arch: str
    weights: str
    preprocess: str
    dim: int

    def comparable_key(self) -> tuple[str, str, str, int]:
        """The fields that decide whether two vector sets can be mixed (preset name excluded)."""
        return (self.arch, self.weights, self.preprocess, self.dim)

    def is_compatible(self, other: Fingerprint) -> bool:
        return self.comparable_key() == other.comparable_key()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fingerprint:
        return cls(
            preset=str(data["preset"]),
            arch=str(data["arch"]),
            weights=str(data["weights"]),
            preprocess=str(data["preprocess"]),
            dim=int(data["dim"]),
        )

    def describe_difference(self, other: Fingerprint) -> str:
        """Human-readable list of the fields that differ (for error messages)."""
        diffs = [
            f"{name}: {getattr(self, name)!r} != {getattr(other, name)!r}"
            for name in ("arch", "weights", "preprocess", "dim")
            if getattr(self, name) != getattr(other, name)
        ]
        return "; ".join(diffs) or "none"


@dataclass(frozen=True)
class NewReference:
    """A reference image about to be added (the index assigns the id and the time)."""

    brand: str
    sha256: str
    source: str
    kind: str = "product"
    product_id: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.brand or not self.brand.strip():
            raise ValueError("brand must be a non-empty string")
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")


@dataclass(frozen=True)
class Reference:
    """A stored reference record."""

    id: int
    brand: str
    kind: str
    product_id: str | None
    source: str
    sha256: str
    added_at: str
    attributes: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Match:
    """One reference matched by a query, best vector of that reference."""

    ref_id: int
    brand: str
    kind: str
    product_id: str | None
    score: float
    source: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class AddReport:
    """Outcome of :meth:`index.store.ReferenceIndex.add` (and of ``import_records``).

    Attributes:
        added: New reference ids, in input order of the references that were added.
        skipped: ``(input position, existing ref id, sha256)`` for each reference whose content
            was already stored (or repeated earlier in the same call).
    """

    added: list[int]
    skipped: list[tuple[int, int, str]]


@dataclass(frozen=True)
class IndexInfo:
    """Summary of an index (committed state in SQLite)."""

    path: str
    fingerprint: Fingerprint
    factory: str
    dim: int
    metric: str
    count: int
    vectors: int
    per_brand: dict[str, dict[str, int]]
    size_bytes: int
    generation: int
    created_at: str
    updated_at: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def canonical_json(value: Any) -> str:
    """Stable JSON text (sorted keys, no spaces) used for fingerprints and hashes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def utc_now() -> str:
    """Current UTC time, ISO 8601 to the second: the format of ``added_at`` and of index times."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
