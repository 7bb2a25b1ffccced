"""The quickstart's review queue: its scored sample listings recorded into a SQLite queue, with
a portal user for each queued brand and a platform analyst (tokens in a file only the owner
reads)."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select

from detector.review.models import ReviewItem
from detector.review.recorder import QueueRecorder, RecordContext
from detector.review.store import ReviewStore
from detector.review.users import add_user
from detector.verdict import Verdict

ANALYST = "analyst"
SAMPLE_MARGIN = 0.05


@dataclass(frozen=True)
class SampleQueue:
    db_path: Path
    tokens_path: Path
    tokens: dict[str, str]  # user name -> token
    kinds: dict[str, int]  # items queued by kind (this run)
    brands: tuple[str, ...]  # brands with items in the queue

    def brand_user(self) -> str | None:
        """The sample brand whose token the quickstart prints (the one with most items)."""
        return f"brand-{self.brands[0]}" if self.brands else None


def fill_sample_queue(out: Path, verdicts: Sequence[Verdict], images: Sequence[Path],
                      context: RecordContext, *, near_margin: float = SAMPLE_MARGIN) -> SampleQueue:
    """Record ``verdicts`` (of ``images``) into ``out/review.sqlite`` and create the users."""
    db_path = out / "review.sqlite"
    store = ReviewStore(db_path)
    try:
        recorder = QueueRecorder(store, near_margin=near_margin)
        kinds: Counter[str] = Counter()
        for verdict, image in zip(verdicts, images):
            kind = recorder.queue_kind(verdict)
            if kind and recorder.record(verdict, context, image=image, listing_id=verdict.image,
                                        seller_id="sample-seller") is not None:
                kinds[kind] += 1
        with store.session() as db:
            per_brand = Counter(dict(db.execute(
                select(ReviewItem.brand, func.count()).group_by(ReviewItem.brand)).all()))
            brands = tuple(b for b, _ in sorted(per_brand.items(), key=lambda kv: (-kv[1], kv[0])))
            tokens = {ANALYST: add_user(db, ANALYST, "analyst")}
            for brand in brands:
                name = f"brand-{brand}"
                tokens[name] = add_user(db, name, "brand", brand)
    finally:
        store.close()
    tokens_path = out / "review-tokens.txt"
    fd = os.open(tokens_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.writelines(f"{name} {token}\n" for name, token in tokens.items())
    os.chmod(tokens_path, 0o600)
    return SampleQueue(db_path, tokens_path, tokens, dict(kinds), brands)
