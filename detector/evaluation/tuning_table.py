"""Threshold tuning steps judged on the whole table rather than one slot.

Build a table and check it against the bounds; re-tune the shared entries (kinds, default) on
what the brand overrides leave them; raise the default or add overrides greedily when the
assembled table misses; and the joint search of the kind entries and the default.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

from detector.evaluation.scores import EvalScores
from detector.evaluation.tuning_slots import _choose, _slot_curve, _support
from detector.thresholds import THRESHOLD_KEYS, VERIFIED, Thresholds


def _table(
    default: float,
    kinds: dict[str, float],
    brands: dict[str, dict[str, float]],
    version: str,
    score: str,
) -> Thresholds:
    # from_dict validates the range a thresholds file accepts, so what we return can be saved
    return Thresholds.from_dict(
        {"default": default, "kinds": kinds, "brands": brands, "version": version, "score": score},
        origin=f"tuned thresholds {version!r}",
    )


def _with(table: Thresholds, level: str, entries: dict[str, float]) -> Thresholds:
    kinds, brands = dict(table.kinds), {b: dict(v) for b, v in table.brands.items()}
    if level == "kinds":
        kinds.update(entries)
    else:
        brands.update({b: {"default": v} for b, v in entries.items()})
    return _table(table.default, kinds, brands, table.version, table.score)


def _table_outcome(
    scores: EvalScores, table: Thresholds, target_precision: float | None, max_fpr: float | None
) -> tuple[int, bool]:
    """(true flags, whether the table meets the bounds) on ``scores``."""
    # decide() without building the per-query brand arrays: this runs once per greedy step
    best = scores.best_per_query(scores.score >= scores.thresholds_per_prediction(table))
    flagged_mask = best >= 0
    tp, flagged = int(scores.is_true[best[flagged_mask]].sum()), int(flagged_mask.sum())
    neg = ~scores.positive
    precision = tp / flagged if flagged else math.nan
    fpr = float((flagged_mask & neg).sum() / neg.sum()) if neg.any() else math.nan
    return tp, _meets(precision, fpr, tp, target_precision, max_fpr)


def _table_meets(
    scores: EvalScores, table: Thresholds, target_precision: float | None, max_fpr: float | None
) -> bool:
    return _table_outcome(scores, table, target_precision, max_fpr)[1]


def _meets(
    precision: float, fpr: float, tp: int, target_precision: float | None, max_fpr: float | None
) -> bool:
    if tp == 0:
        return False
    if target_precision is not None and not precision >= target_precision:
        return False
    return max_fpr is None or fpr <= max_fpr  # NaN FPR (no logo-free queries) fails the bound


# ---- adjusting a table ------------------------------------------------------------------


def _refit_shared(
    scores: EvalScores,
    table: Thresholds,
    target_precision: float | None,
    max_fpr: float | None,
    min_support: int,
    notes: list[str],
) -> Thresholds:
    """Re-tune the kind entries and the default on the predictions they still govern.

    Once strong brands have their own thresholds, the shared thresholds cover what is left
    (often the weaker brands), so they are tuned again on that, in the context of the overrides.
    A kind entry left with under ``min_support`` positives is removed (the default takes its
    predictions); the default is always re-tuned when its remainder can meet the target. Two
    rounds, as each re-tune changes the others' context.
    """
    overridden = scores.has_brand(table.brands)
    removed: list[str] = []
    for _ in range(2):
        for kind in sorted(table.kinds):
            governed = (scores.governing_kind(table.kinds) == kind) & ~overridden
            if _support(scores, governed) < min_support:
                kinds = {k: v for k, v in table.kinds.items() if k != kind}
                table = _table(table.default, kinds, table.brands, table.version, table.score)
                removed.append(kind)
                continue
            table = _refit_one(scores, table, governed, kind, target_precision, max_fpr)
        governed = (scores.governing_kind(table.kinds) == "") & ~overridden
        if _support(scores, governed) > 0:
            table = _refit_one(scores, table, governed, None, target_precision, max_fpr)
    if removed:
        notes.append(
            f"kind override(s) {', '.join(removed)} removed: under {min_support} positives are left "
            "to them once brands have their own thresholds"
        )
    return table


def _refit_one(
    scores: EvalScores,
    table: Thresholds,
    governed: np.ndarray,
    kind: str | None,
    target_precision: float | None,
    max_fpr: float | None,
) -> Thresholds:
    """Re-tune one shared slot (a kind, or the default when ``kind`` is None) if it can meet."""
    curve = _slot_curve(scores, table, governed, int(scores.positive.sum()))
    point, met = _choose(curve, target_precision, max_fpr)
    if not met or point is None or point.threshold is None:
        return table
    if kind is None:
        return _table(point.threshold, table.kinds, table.brands, table.version, table.score)
    return _with(table, "kinds", {kind: point.threshold})


def _raise_default(
    scores: EvalScores,
    table: Thresholds,
    target_precision: float | None,
    max_fpr: float | None,
    notes: list[str],
) -> Thresholds:
    """Lowest default at or above the current one with which the whole table meets the bounds.

    Used when the predictions left to the default (brands without their own threshold) cannot
    meet the target alone. Bisects over the scores those predictions can win (assuming the
    table's precision rises with the default; every answer is checked exactly). Returns the
    table unchanged when even flagging none of them does not help.
    """
    overridden = scores.has_brand(table.brands)
    governed = (scores.governing_kind(table.kinds) == "") & ~overridden
    cands = np.unique(scores.score[governed & (scores.score > table.default)])
    top = np.nextafter(float(scores.score.max()), np.inf)  # flags none of them
    cands = np.append(cands, top)

    def ok(i: int) -> bool:
        trial = _table(float(cands[i]), table.kinds, table.brands, table.version, table.score)
        return _table_meets(scores, trial, target_precision, max_fpr)

    if not ok(len(cands) - 1):
        return table
    lo, hi = -1, len(cands) - 1  # cands[hi] meets; everything at or below lo is assumed not to
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    value = float(cands[hi])
    notes.append(
        f"default raised from {table.default:.4f} to {value:.4f}: the brands without their own "
        "threshold cannot meet the target alone, so the table as a whole is held to it"
    )
    return _table(value, table.kinds, table.brands, table.version, table.score)


def _add_greedily(
    scores: EvalScores,
    table: Thresholds,
    candidates: Sequence[tuple[str, int, float]],
    level: str,
    target_precision: float | None,
    max_fpr: float | None,
) -> Thresholds:
    """Add candidates one by one (most support first), keeping each that keeps the table met."""
    for name, _, thr in candidates:
        trial = _with(table, level, {name: thr})
        if _table_meets(scores, trial, target_precision, max_fpr):
            table = trial
    return table


def _polish_shared(
    scores: EvalScores,
    table: Thresholds,
    target_precision: float | None,
    max_fpr: float | None,
    min_support: int,
    notes: list[str],
    *,
    rounds: int = 2,
    max_candidates: int = 128,
    pair_candidates: int = 40,
) -> Thresholds:
    """Joint search of each kind and its verified entry, then coordinate ascent on the kind
    entries and the default, against the whole table's recall and bounds.

    Slot-by-slot tuning gives each entry its own share of the bounds; once a kind's verified
    evidence has an entry of its own, the table with the most recall often spends the bounds
    unevenly between them (measured on the benchmark's tuning sets, effnet-lite0
    ``thorough``, seeds 0 and 2: the slot-wise table, logo 1.065 / logo:verified 0.76,
    flagged 0.403 of branded listings; this search found logo 0.995 / logo:verified 0.76,
    0.468, within the same bounds). So each kind and its verified
    entry (both with ``min_support`` positives) are first searched jointly, ``pair_candidates``
    values each; then every entry in turn, holding the others. Candidate thresholds are the
    scores that can change a decision (true matches and each query's three best wrong ones),
    at most ``max_candidates`` by quantile. A step is taken only when it flags more true
    matches and keeps the table within the bounds, so recall never drops.
    """
    tp, met = _table_outcome(scores, table, target_precision, max_fpr)
    if not met:
        return table
    start = tp
    overridden = scores.has_brand(table.brands)
    deciding = scores.is_true.copy()
    for _ in range(3):
        wrong = scores.best_per_query(~deciding)
        deciding[wrong[wrong >= 0]] = True

    def candidates(selected: np.ndarray, count: int) -> np.ndarray:
        values = np.unique(scores.score[selected & ~overridden & deciding])
        if len(values) > count:
            values = np.unique(np.quantile(values, np.linspace(0, 1, count), method="nearest"))
        return values

    def supported(key: str) -> bool:
        return _support(scores, (scores.ref_kind == key) & ~overridden) >= min_support

    # A kind and its verified evidence trade the bounds between them: search them jointly
    # (one coordinate at a time cannot lower one while raising the other).
    for key in [k for k in scores.ref_kinds if k.endswith(f":{VERIFIED}") and k in THRESHOLD_KEYS]:
        kind = key.split(":", 1)[0]
        if not (supported(key) and (kind in table.kinds or supported(kind))):
            continue
        plain_values = candidates(scores.ref_kind == kind, pair_candidates)
        verified_values = candidates(scores.ref_kind == key, pair_candidates)
        for plain, verified in itertools.product(plain_values, verified_values):
            trial = _with(table, "kinds", {kind: float(plain), key: float(verified)})
            trial_tp, trial_met = _table_outcome(scores, trial, target_precision, max_fpr)
            if trial_met and trial_tp > tp:
                table, tp = trial, trial_tp
    for _ in range(rounds):
        changed = False
        for entry in [*sorted(table.kinds), None]:
            governing = scores.governing_kind(table.kinds) == (entry or "")
            for value in candidates(governing, max_candidates):
                trial = (
                    _with(table, "kinds", {entry: float(value)}) if entry is not None
                    else _table(float(value), table.kinds, table.brands, table.version, table.score)
                )
                trial_tp, trial_met = _table_outcome(scores, trial, target_precision, max_fpr)
                if trial_met and trial_tp > tp:
                    table, tp, changed = trial, trial_tp, True
        if not changed:
            break
    if tp > start:
        notes.append(
            f"kind thresholds and default searched jointly: {tp - start} more true flags "
            f"({start} -> {tp}) within the same bounds"
        )
    return table
