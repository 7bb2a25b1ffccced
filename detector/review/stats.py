"""Per-brand statistics of the queue: backlog, decisions per day, confirmation rate, reversals.

Computed in the database (a few grouped queries), for the analyst view and ``/metrics``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import func, select

from detector.review.models import Decision, ReviewItem, utcnow
from detector.review.store import ReviewStore

REVERSAL_PAIRS = {("confirmed", "rejected"), ("rejected", "confirmed")}


@dataclass
class BrandStats:
    brand: str
    backlog: int = 0  # pending items
    confirmed: int = 0  # items whose current decision is confirmed
    rejected: int = 0
    skipped: int = 0
    decisions: int = 0  # rows in the audit log
    reversals: int = 0  # confirmed -> rejected or back
    per_day: dict[str, int] = field(default_factory=dict)  # last `days` days, oldest first

    @property
    def confirmation_rate(self) -> float | None:
        decided = self.confirmed + self.rejected
        return self.confirmed / decided if decided else None


def brand_stats(store: ReviewStore, *, days: int = 7) -> list[BrandStats]:
    """Statistics of every brand with queued items, sorted by brand."""
    today = utcnow().date()
    day_keys = [(today - timedelta(days=d)).isoformat() for d in range(days - 1, -1, -1)]
    out: dict[str, BrandStats] = {}

    def get(brand: str) -> BrandStats:
        if brand not in out:
            out[brand] = BrandStats(brand, per_day=dict.fromkeys(day_keys, 0))
        return out[brand]

    with store.session() as db:
        for brand, status, n in db.execute(
            select(ReviewItem.brand, ReviewItem.status, func.count()).group_by(ReviewItem.brand, ReviewItem.status)
        ):
            s = get(brand)
            if status == "pending":
                s.backlog = n
            elif status in ("confirmed", "rejected", "skipped"):
                setattr(s, status, n)
        for brand, decision, previous, n in db.execute(
            select(Decision.brand, Decision.decision, Decision.previous, func.count())
            .group_by(Decision.brand, Decision.decision, Decision.previous)
        ):
            s = get(brand)
            s.decisions += n
            if (previous, decision) in REVERSAL_PAIRS:
                s.reversals += n
        since = utcnow() - timedelta(days=days)
        for brand, created_at in db.execute(
            select(Decision.brand, Decision.created_at).where(Decision.created_at >= since)
        ):
            key = created_at.date().isoformat()
            if key in get(brand).per_day:
                out[brand].per_day[key] += 1
    return [out[b] for b in sorted(out)]
