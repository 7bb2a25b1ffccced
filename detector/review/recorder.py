"""Turn verdicts into queue items: which ones are queued and what each item keeps.

A flagged verdict is queued as ``flagged``; with ``near_margin`` > 0, an unflagged verdict whose
best brand scored within the margin below its threshold is queued as ``near``. The listing
image is stored by content (bounded in size) or referenced by URL; the matched references'
images are stored too when their source is a readable file, so the portal can show them.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from detector.review.models import ReviewItem
from detector.review.store import ReviewStore
from detector.thresholds import threshold_key
from detector.verdict import Verdict

log = logging.getLogger(__name__)
MAX_REFERENCE_IMAGES = 3


@dataclass(frozen=True)
class RecordContext:
    """What the scorer knows beside the verdict: the model and index it ran on."""

    fingerprint: dict[str, Any]
    index_generation: int | None

    @classmethod
    def of(cls, detector: Any) -> RecordContext:
        return cls.of_index(detector.fingerprint, getattr(detector.index, "generation", None))

    @classmethod
    def of_index(cls, fingerprint: Any, generation: int | None) -> RecordContext:
        """From the index's model fingerprint and generation (a scorer that holds no Detector)."""
        return cls(fingerprint.to_dict() if hasattr(fingerprint, "to_dict") else dict(fingerprint), generation)


class QueueRecorder:
    """Records verdicts into a :class:`ReviewStore`.

    Args:
        store: The queue.
        near_margin: Queue unflagged verdicts scoring at least ``threshold - near_margin`` (0: off).
        reference_root: Folder that relative reference sources are resolved against (default:
            the working directory).
    """

    def __init__(self, store: ReviewStore, *, near_margin: float = 0.0,
                 reference_root: str | Path | None = None) -> None:
        if near_margin < 0:
            raise ValueError(f"near_margin must be >= 0, got {near_margin}")
        self.store = store
        self.near_margin = near_margin
        self.reference_root = Path(reference_root) if reference_root else None

    def queue_kind(self, verdict: Verdict) -> str | None:
        """``flagged``, ``near`` or None (not queued)."""
        if verdict.error is not None or verdict.brand is None or verdict.score is None:
            return None
        if verdict.flagged:
            return "flagged"
        if (self.near_margin > 0 and verdict.threshold is not None
                and verdict.score >= verdict.threshold - self.near_margin):
            return "near"
        return None

    def record(self, verdict: Verdict, context: RecordContext, *, image: bytes | str | Path | None = None,
               image_url: str | None = None, listing_id: str | None = None,
               seller_id: str | None = None) -> int | None:
        """Queue ``verdict`` if it qualifies and is not queued yet; returns the new item's id."""
        kind = self.queue_kind(verdict)
        if kind is None:
            return None
        data = Path(image).read_bytes() if isinstance(image, (str, Path)) else image
        if data is None and image_url is None:
            raise ValueError("record needs the image bytes/file or its URL")
        sha = hashlib.sha256(data if data is not None else image_url.encode()).hexdigest()  # type: ignore[union-attr]
        blob = width = height = None
        if data is not None and self.store.blobs is not None:
            try:
                stored = self.store.blobs.put(data)
                blob, width, height = stored.path, stored.width, stored.height
            except (OSError, ValueError, Image.DecompressionBombError) as e:  # keep the item without it
                log.warning("could not store the image of %s: %s", verdict.image, e)
        brand_matches = [m for m in verdict.matches if m.brand == verdict.brand]
        top = max(brand_matches, key=lambda m: m.score, default=None)
        item = ReviewItem(
            image_sha256=sha, listing_id=listing_id or "", seller_id=seller_id,
            image_name=verdict.image, image_blob=blob, image_url=image_url,
            image_width=width, image_height=height, brand=verdict.brand, kind=kind,
            score=float(verdict.score),  # type: ignore[arg-type]
            threshold=float(verdict.threshold if verdict.threshold is not None else 0.0),
            threshold_source=verdict.threshold_source or "",
            match_key=threshold_key(top.kind, top.verified) if top else "",
            matches=[m.to_dict() for m in verdict.matches],
            box=list(verdict.box) if verdict.box is not None else None,
            reference_blobs=self._reference_blobs(brand_matches),
            model_fingerprint=context.fingerprint, model_preset=str(context.fingerprint.get("preset", "")),
            index_generation=context.index_generation, status="pending",
        )
        return self.store.add_item(item)

    def _reference_blobs(self, matches: list[Any]) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.store.blobs is None:
            return out
        for m in sorted(matches, key=lambda m: -m.score)[:MAX_REFERENCE_IMAGES]:
            path = Path(m.source)
            if not path.is_absolute() and self.reference_root is not None:
                path = self.reference_root / path
            try:
                if path.is_file():
                    out[str(m.ref_id)] = self.store.blobs.put_file(path).path
            except (OSError, ValueError, Image.DecompressionBombError) as e:
                log.warning("could not store reference image %s: %s", path, e)
        return out
