"""Reviewers' decisions as labelled data: confirmed = the brand is present, rejected = it is not
(the listing shows another brand, an authorised product, or nothing of the brand).

* :func:`review_scores` builds the :class:`~detector.evaluation.scores.EvalScores` the tuner
  reads: one query per decided item, with its brand's recorded score as the one prediction.
* :func:`export_labels` writes a labelled set (JSONL, images copied beside it) that
  ``counterfeit eval`` reads, so reviewed listings can be re-scored with another model or index.
Skipped and pending items are left out; the latest decision of an item counts.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from detector.errors import ConfigError
from detector.evaluation.scores import EvalScores, Prediction, Query
from detector.review.models import ReviewItem
from detector.review.store import ReviewStore
from index.atomic import atomic_write_bytes
from index.records import KINDS


def review_scores(items: Sequence[ReviewItem]) -> EvalScores:
    """One labelled query per confirmed/rejected item (others are ignored)."""
    queries: list[Query] = []
    predictions: list[Prediction] = []
    for item in items:
        if item.status not in ("confirmed", "rejected"):
            continue
        truth = item.brand if item.status == "confirmed" else None
        predictions.append(Prediction(len(queries), item.brand, float(item.score), item.match_key or "logo"))
        queries.append(Query(id=f"item-{item.id}", brand=truth, kind=_kind(item), group=item.brand))
    return EvalScores.from_predictions(queries, predictions)


@dataclass(frozen=True)
class ExportReport:
    path: Path
    rows: int
    no_image: int  # items kept only by URL: nothing to copy
    conflicts: int  # the same image confirmed for one listing and rejected for another


def export_labels(store: ReviewStore, out: str | Path) -> ExportReport:
    """Write the decided items as a ``.jsonl`` labelled set; images go to ``<stem>-images/``."""
    out = Path(out)
    if out.suffix.lower() not in (".jsonl", ".ndjson"):
        raise ConfigError(f"write the labelled set as .jsonl, got {out.name}")
    image_dir = out.parent / f"{out.stem}-images"
    rows: dict[str, dict[str, object]] = {}
    conflicting: set[str] = set()
    no_image = 0
    for item in store.decided_items():
        source = store.image_file(item.image_blob)
        if source is None:
            no_image += 1
            continue
        rel = f"{image_dir.name}/{source.name}"
        row: dict[str, object] = {"image": rel, "brand": item.brand if item.status == "confirmed" else None,
               "kind": _kind(item) if item.status == "confirmed" else None, "group": "reviews",
               "listing_id": item.listing_id, "review_item": item.id}
        if rel in rows and rows[rel]["brand"] != row["brand"]:
            conflicting.add(rel)
        rows.setdefault(rel, row)
        target = image_dir / source.name
        if not target.exists():
            image_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    kept = [r for rel, r in rows.items() if rel not in conflicting]
    atomic_write_bytes(out, "".join(json.dumps(r) + "\n" for r in kept).encode())
    return ExportReport(out, len(kept), no_image, len(conflicting))


def _kind(item: ReviewItem) -> str | None:
    kind = (item.match_key or "").split(":", 1)[0]
    return kind if kind in KINDS else None
