"""``counterfeit tune --from-reviews``: per-brand thresholds from reviewers' decisions, with the
project's tuner (:func:`detector.evaluation.tuning.tune_thresholds`: min support, target
precision), reported per brand with the decisions each threshold rests on.

With a base table (the one the service runs with), only the brand entries the reviews support
are written into it; the default and kind entries stay as they are, because decisions cover
only what was flagged (or near the threshold), not the whole stream of listings.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass

from detector.evaluation.scores import EvaluationError
from detector.evaluation.tuning import TuningResult, tune_thresholds
from detector.review.labelled import review_scores
from detector.review.store import ReviewStore
from detector.thresholds import Thresholds


@dataclass(frozen=True)
class BrandTuning:
    brand: str
    confirmed: int
    rejected: int
    before: float  # threshold recorded with the brand's latest decided item
    after: float  # what the new table applies to the brand (its latest item's match kind)
    status: str  # "set" (own threshold), "inherited" or "dropped"
    reason: str


@dataclass(frozen=True)
class ReviewTuning:
    thresholds: Thresholds
    result: TuningResult
    brands: tuple[BrandTuning, ...]

    def summary(self) -> str:
        lines = [self.result.summary(), "",
                 f"{'brand':20s} {'decisions':>9s} {'confirmed':>9s} {'rejected':>8s} "
                 f"{'before':>7s} {'after':>7s}  status"]
        for b in self.brands:
            lines.append(f"{b.brand:20s} {b.confirmed + b.rejected:9d} {b.confirmed:9d} {b.rejected:8d} "
                         f"{b.before:7.3f} {b.after:7.3f}  {b.status}: {b.reason}")
        return "\n".join(lines)


def tune_from_reviews(
    store: ReviewStore,
    *,
    target_precision: float = 0.95,
    min_support: int = 20,
    base: Thresholds | None = None,
    version: str = "tuned-from-reviews",
) -> ReviewTuning:
    """Tune per-brand thresholds on the queue's confirmed/rejected decisions.

    Raises:
        EvaluationError: No decisions, or no confirmed item at all (nothing to tune on).
    """
    items = store.decided_items()
    if not items:
        raise EvaluationError("no confirmed or rejected decisions in the review queue yet")
    scores = review_scores(items)
    if not scores.positive.any():
        raise EvaluationError("no confirmed decisions: the tuner needs examples of each brand")
    result = tune_thresholds(scores, target_precision=target_precision, min_support=min_support,
                             per_kind=False, per_brand=True, version=version)
    tuned = result.thresholds
    table = tuned if base is None else dataclasses.replace(
        base, version=version,
        brands={**base.brands, **{b: tuned.brands[b] for b in tuned.brands}},
    )
    counts = Counter((i.brand, i.status) for i in items)
    latest = {i.brand: i for i in sorted(items, key=lambda i: (i.decided_at is not None, i.decided_at, i.id))}
    slots = {s.slot.split(":", 1)[1]: s for s in result.slots if s.slot.startswith("brand:")}
    brands = []
    for brand in sorted(latest):
        item = latest[brand]
        slot = slots.get(brand)
        status = slot.status if slot else "inherited"
        reason = slot.reason if slot else f"fewer than {min_support} confirmed decisions"
        brands.append(BrandTuning(
            brand, counts[(brand, "confirmed")], counts[(brand, "rejected")], item.threshold,
            table.for_match(brand, item.match_key or "logo").value, status, reason))
    return ReviewTuning(table, result, tuple(brands))
