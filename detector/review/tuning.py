"""``counterfeit tune --from-reviews``: per-brand thresholds from reviewers' decisions, with the
project's tuner (:func:`detector.evaluation.tuning.tune_thresholds`: min support, target
precision), reported per brand with the decisions each threshold rests on.

With a base table (the one the service runs with; the CLI defaults to the shipped table of the
queue's model), only the brand entries the reviews support are written into it; the default and
kind entries stay as they are, because decisions cover only what was flagged (or queued near
the threshold), not the whole stream of listings. For the same reason a brand's threshold is
raised only when some rejected item scored at or above its current threshold (status "kept"
otherwise), and it can only fall where items queued below the threshold were confirmed.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass

from detector.errors import DetectorError
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
    status: str  # "set" (own threshold), "kept" (not raised: no rejection above it), "inherited", "dropped"
    reason: str


@dataclass(frozen=True)
class ReviewTuning:
    thresholds: Thresholds
    result: TuningResult
    brands: tuple[BrandTuning, ...]

    def summary(self) -> str:
        confirmed = sum(b.confirmed for b in self.brands)
        rejected = sum(b.rejected for b in self.brands)
        changed = sum(abs(b.after - b.before) > 1e-9 for b in self.brands)
        lines = [(f"{confirmed + rejected} decisions ({confirmed} confirmed, {rejected} rejected) on "
                 f"{len(self.brands)} brand(s); {changed} brand threshold(s) changed"), "",
                 (f"{'brand':20s} {'decisions':>9s} {'confirmed':>9s} {'rejected':>8s} "
                 f"{'before':>7s} {'after':>7s}  status")]
        for b in self.brands:
            lines.append(f"{b.brand:20s} {b.confirmed + b.rejected:9d} {b.confirmed:9d} {b.rejected:8d} "
                         f"{b.before:7.3f} {b.after:7.3f}  {b.status}: {b.reason}")
        lines += ["", "the tuner on the decisions alone:"]
        lines += [f"  {line}" for line in self.result.summary().splitlines()]
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
    counts = Counter((i.brand, i.status) for i in items)
    latest = {i.brand: i for i in sorted(items, key=lambda i: (i.decided_at is not None, i.decided_at, i.id))}
    slots = {s.slot.split(":", 1)[1]: s for s in result.slots if s.slot.startswith("brand:")}
    overrides: dict[str, dict[str, float]] = {}
    rows: list[tuple[str, str, str]] = []
    for brand in sorted(latest):
        item = latest[brand]
        slot = slots.get(brand)
        status = slot.status if slot else "inherited"
        reason = slot.reason if slot else f"fewer than {min_support} confirmed decisions"
        if status == "set":
            raised = tuned.for_match(brand, item.match_key or "logo").value > item.threshold
            if raised and not any(i.brand == brand and i.status == "rejected" and i.score >= i.threshold
                                  for i in items):
                # Decisions only exist for what was flagged: the lowest confirmed score is not
                # evidence that the threshold flags too much. Only rejections above it are.
                status, reason = "kept", "no rejected decision at or above the current threshold"
                if base is None:
                    overrides[brand] = {"default": item.threshold}
            else:
                overrides[brand] = dict(tuned.brands[brand])
        rows.append((brand, status, reason))
    shared = base if base is not None else tuned
    table = dataclasses.replace(shared, version=version, brands={
        **(base.brands if base is not None else {}), **overrides})
    brands = tuple(
        BrandTuning(brand, counts[(brand, "confirmed")], counts[(brand, "rejected")],
                    latest[brand].threshold,
                    table.for_match(brand, latest[brand].match_key or "logo").value, status, reason)
        for brand, status, reason in rows
    )
    return ReviewTuning(table, result, brands)


def preset_thresholds(store: ReviewStore) -> Thresholds | None:
    """The shipped table of the model most decided items were scored with (None: unknown)."""
    from detector.thresholds import default_thresholds_path, load_thresholds

    presets = Counter(i.model_preset for i in store.decided_items() if i.model_preset)
    if not presets:
        return None
    try:
        return load_thresholds(default_thresholds_path(presets.most_common(1)[0][0]))
    except (DetectorError, OSError):  # an unknown preset, or one without a shipped table
        return None
