"""Choose thresholds from labelled scores: global, per reference kind, per brand.

Everything is measured at the query level (a flag is right iff it names the true brand), on the
rule the scorer applies (highest-scoring brand that reaches its own threshold wins).

1. ``default``: one global threshold for every prediction (each query's top brand flags).
2. ``kinds.<k>`` / ``brands.<b>``: a *slot* is the set of predictions one entry governs. Its
   curve is the flags its predictions win with the other entries held fixed: a query's best
   slot prediction flags it when it reaches the threshold and beats the best other passing
   prediction (equal scores: the wrong brand wins). For a brand, flags as that brand on other
   brands' and on logo-free listings are its false positives.

In every slot the chosen threshold is the lowest one meeting the constraints (precision >=
``target_precision``, FPR on logo-free listings <= ``max_fpr``), which maximises recall; among
equal recalls the highest such threshold. A kind or brand gets an entry only with at least
``min_support`` labelled positives (for a kind: positives whose true brand was matched through
that kind) and when its target is reachable on its own flags; otherwise it inherits. So the
target holds for each overridden brand's own flags, not only on average.

Kinds are tuned against the global threshold, brands against that; then the shared entries
(kinds, default) are re-tuned on what the brand entries leave them (usually the weaker brands;
a kind left with under ``min_support`` positives is removed) and the brands re-tuned in that
context, for up to three rounds. The assembled table is then checked on the whole set; if it
misses, the default is raised until it does not, and failing that the overrides are added one
by one onto the global table (most support first), keeping those that keep it met. The result
says whether the target was met and, if not, the best that was achievable.

This module runs that procedure (:func:`tune_thresholds`, :func:`evaluate_holdout`);
:mod:`~detector.evaluation.tuning_slots` tunes one slot, :mod:`~detector.evaluation.tuning_table`
builds, checks and adjusts whole tables, :mod:`~detector.evaluation.tuning_result` holds what
is returned and :mod:`~detector.evaluation.splits` makes the tune/test parts.
"""

from __future__ import annotations

from collections.abc import Sequence

from detector.evaluation.decision_metrics import rate_upper_bound, trials_to_show
from detector.evaluation.held_out_brands import HELD_OUT_GROUP
from detector.evaluation.metrics import evaluate_decisions, query_pr_curve
from detector.evaluation.scores import EvalScores, EvaluationError
from detector.evaluation.splits import split_by_group, split_random
from detector.evaluation.tuning_result import HoldoutResult, SlotResult, TuningResult, _fmt
from detector.evaluation.tuning_slots import _brand_candidates, _choose, _kind_candidates, _support
from detector.evaluation.tuning_table import (
    _add_greedily,
    _meets,
    _polish_shared,
    _raise_default,
    _refit_shared,
    _table,
    _table_meets,
    _with,
)
from detector.thresholds import Thresholds

# the result types and the tune/test splits live in their own modules and stay importable here
__all__ = [
    "HoldoutResult",
    "SlotResult",
    "TuningResult",
    "evaluate_holdout",
    "split_by_group",
    "split_random",
    "tune_thresholds",
]


def tune_thresholds(
    scores: EvalScores,
    *,
    target_precision: float | None = 0.95,
    max_fpr: float | None = None,
    min_support: int = 20,
    per_kind: bool = True,
    per_brand: bool = True,
    version: str = "tuned",
    n_boot: int = 1000,
    seed: int = 0,
) -> TuningResult:
    """Pick the thresholds with the most recall that keep precision (and FPR) within bounds.

    A global threshold first, then kind and brand overrides slot by slot, then a joint search
    of the kind entries and the default against the whole table (:func:`_polish_shared`).

    Args:
        scores: Labelled predictions (``scores.score_name`` becomes the table's ``score``).
        target_precision: Minimum query-level precision, in (0, 1]; None for no precision bound.
        max_fpr: Maximum share of logo-free listings flagged, in [0, 1]; None for no bound.
        min_support: Labelled positives a kind or brand needs for its own threshold.
        per_kind: Tune ``kinds`` entries.
        per_brand: Tune ``brands`` entries.
        version: Free-text version written into the table.
        n_boot: Bootstrap replicates for the intervals of ``expected``.
        seed: Bootstrap seed.

    Returns:
        TuningResult; check ``met`` (and ``notes``) before shipping the table.

    Raises:
        EvaluationError: No constraint given, a bound out of range, or no predictions at all.
        ConfigError: A tuned value falls outside the range a thresholds file accepts.

    Example:
        >>> from detector.evaluation.scores import synthetic_scores
        >>> result = tune_thresholds(synthetic_scores(400, seed=0), target_precision=0.9)
        >>> result.met, result.expected.precision >= 0.9
        (True, True)
        >>> save_thresholds(result.thresholds, "configs/thresholds/mine.json")  # doctest: +SKIP
    """
    _check_constraints(target_precision, max_fpr, min_support)
    if scores.n_predictions == 0:
        raise EvaluationError("no predictions to tune on: every query retrieved nothing")
    notes: list[str] = []
    slots: list[SlotResult] = []
    if max_fpr is not None and scores.positive.all():
        notes.append(
            "no logo-free queries in the set: the FPR bound cannot be checked, so it fails"
        )

    global_point, global_met = _choose(query_pr_curve(scores), target_precision, max_fpr)
    if global_point is None:  # only possible when every point has nothing true
        raise EvaluationError("no query is a correct top match at any threshold; cannot tune")
    default = float(global_point.threshold)  # type: ignore[arg-type]
    slots.append(
        SlotResult(
            "default",
            int(scores.positive.sum()),
            "set",
            default,
            global_point,
            "global threshold" if global_met else "global target unreachable; best achievable",
        )
    )
    table = _table(default, {}, {}, version, scores.score_name)
    if not global_met:
        notes.append(
            f"global target unreachable: {_describe_constraints(target_precision, max_fpr)}; "
            f"best achievable precision {_fmt(global_point.precision)} at recall "
            f"{_fmt(global_point.recall)}, FPR {_fmt(global_point.fpr)} (threshold {default:.4f}); "
            "no kind or brand overrides were tuned"
        )
    elif per_kind or per_brand:
        table = _tune_overrides(
            scores, table, target_precision, max_fpr, min_support, per_kind, per_brand, slots, notes
        )
        if per_kind:
            polished = _polish_shared(scores, table, target_precision, max_fpr, min_support, notes)
            if polished != table:
                table = polished
                slots[:] = _resynced(slots, table, scores)
        if table.default != default:
            slots[0] = SlotResult(
                "default",
                slots[0].support,
                "set",
                table.default,
                None,
                f"re-tuned on the predictions no override covers (global threshold was {default:.4f})",
            )

    level = {"default": 0, "kind": 1, "brand": 2}
    slots.sort(key=lambda s: (level[s.slot.split(":")[0]], -s.support, s.slot))
    expected = evaluate_decisions(scores, table, n_boot=n_boot, seed=seed, name="tuning")
    global_only = evaluate_decisions(
        scores,
        _table(default, {}, {}, version, scores.score_name),
        n_boot=n_boot,
        seed=seed,
        name="tuning",
    )
    met = global_met and _meets(
        expected.precision, expected.fpr, expected.tp, target_precision, max_fpr
    )
    if global_met and not met:  # cannot happen by construction; kept as a loud guard
        notes.append("assembled table misses the target on the data")
    if max_fpr is not None and not scores.positive.all():
        held_out = sum(q.group == HELD_OUT_GROUP for q in scores.queries)
        notes.append(
            _false_flag_bound(expected.fp_logo_free, int((~scores.positive).sum()), held_out, max_fpr)
        )
    return TuningResult(
        thresholds=table,
        met=met,
        target_precision=target_precision,
        max_fpr=max_fpr,
        expected=expected,
        global_only=global_only,
        best_achievable=None if global_met else global_point,
        slots=tuple(slots),
        notes=tuple(notes),
    )


def _tune_overrides(
    scores: EvalScores,
    table: Thresholds,
    target_precision: float | None,
    max_fpr: float | None,
    min_support: int,
    per_kind: bool,
    per_brand: bool,
    slots: list[SlotResult],
    notes: list[str],
) -> Thresholds:
    """Kind and brand overrides on top of a global ``table`` that meets the bounds.

    Kinds are tuned against the global threshold, then brands against that; the shared
    thresholds are re-tuned on what the brands leave them and brands re-tuned in that new
    context, up to three rounds (each slot's flags depend on the others' thresholds). If the
    result still misses on the data: raise the default; failing that, add the overrides one by
    one onto the global table, keeping those that keep it met.
    """
    kind_cands = (
        _kind_candidates(scores, table, target_precision, max_fpr, min_support, slots, notes)
        if per_kind
        else []
    )
    assembled = _with(table, "kinds", {k: t for k, _, t in kind_cands})
    brand_cands: list[tuple[str, int, float]] = []
    round_slots: list[SlotResult] = []
    round_notes: list[str] = []  # brand notes: only the last round's stand
    refit_notes: list[str] = []  # shared-entry notes: kept from every round
    for _ in range(3 if per_brand else 1):
        round_slots, round_notes = [], []
        if per_brand:
            brand_cands = _brand_candidates(
                scores, assembled, target_precision, max_fpr, min_support, round_slots, round_notes
            )
        brands = {b: {"default": t} for b, _, t in brand_cands}
        before = assembled
        assembled = _table(assembled.default, assembled.kinds, brands, table.version, table.score)
        if kind_cands or brand_cands:
            assembled = _refit_shared(
                scores, assembled, target_precision, max_fpr, min_support, refit_notes
            )
        if assembled == before:
            break
    slots.extend(round_slots)
    notes.extend(round_notes)
    notes.extend(dict.fromkeys(refit_notes))  # de-duplicated, in order
    if not _table_meets(scores, assembled, target_precision, max_fpr):
        assembled = _raise_default(scores, assembled, target_precision, max_fpr, notes)
    if not _table_meets(scores, assembled, target_precision, max_fpr):
        notes.append(
            "the assembled table missed the target on the data; overrides were added one at "
            "a time onto the global threshold instead, keeping those that keep it met"
        )
        assembled = _add_greedily(scores, table, kind_cands, "kinds", target_precision, max_fpr)
        assembled = _add_greedily(
            scores, assembled, brand_cands, "brands", target_precision, max_fpr
        )
    _record(slots, "kind", kind_cands, assembled)
    _record(slots, "brand", brand_cands, assembled)
    return assembled


def evaluate_holdout(
    tune_part: EvalScores,
    test_part: EvalScores,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    **tune_options: object,
) -> HoldoutResult:
    """Tune on ``tune_part`` and report the same table on ``test_part``.

    Args:
        tune_part: Scores to choose thresholds on.
        test_part: Held-out scores, never seen by the tuning.
        n_boot: Bootstrap replicates for both parts' intervals.
        seed: Bootstrap seed.
        **tune_options: Passed to :func:`tune_thresholds` (target_precision, min_support...).

    Example:
        >>> from detector.evaluation.scores import synthetic_scores
        >>> tune, test = split_by_group(synthetic_scores(400, seed=0), "val", "test")
        >>> r = evaluate_holdout(tune, test, target_precision=0.9, n_boot=0)
        >>> r.n_tune, r.n_test
        (200, 200)
    """
    tuning = tune_thresholds(tune_part, n_boot=n_boot, seed=seed, **tune_options)  # type: ignore[arg-type]
    test = evaluate_decisions(
        test_part, tuning.thresholds, n_boot=n_boot, seed=seed, name="holdout"
    )
    return HoldoutResult(
        tuning=tuning, test=test, n_tune=tune_part.n_queries, n_test=test_part.n_queries
    )


# ---- internals -----------------------------------------------------------------------------


def _record(
    slots: list[SlotResult],
    prefix: str,
    candidates: Sequence[tuple[str, int, float]],
    table: Thresholds,
) -> None:
    for name, support, thr in candidates:
        if prefix == "kind":
            final = table.kinds.get(name)
        else:
            final = table.brands[name]["default"] if name in table.brands else None
        ok = final is not None
        slots.append(
            SlotResult(
                f"{prefix}:{name}",
                support,
                "set" if ok else "dropped",
                final if final is not None else thr,
                None,
                "own threshold" if ok else "not kept (see notes); inherits",
            )
        )


def _resynced(slots: list[SlotResult], table: Thresholds, scores: EvalScores) -> list[SlotResult]:
    """Slots after the joint search changed the shared entries: those it set say so."""
    reason = "set by the joint search of the shared entries"
    out = []
    for slot in slots:
        if slot.slot == "default" and slot.threshold != table.default:
            slot = SlotResult("default", slot.support, "set", table.default, None, reason)
        elif slot.slot.startswith("kind:"):
            value = table.kinds.get(slot.slot[len("kind:"):])
            if value is not None and (slot.status != "set" or slot.threshold != value):
                slot = SlotResult(slot.slot, slot.support, "set", value, None, reason)
        out.append(slot)
    known = {slot.slot for slot in out}
    for kind, value in table.kinds.items():
        if f"kind:{kind}" not in known:
            support = _support(scores, scores.ref_kind == kind)
            out.append(SlotResult(f"kind:{kind}", support, "set", value, None, reason))
    return out


def _check_constraints(
    target_precision: float | None, max_fpr: float | None, min_support: int
) -> None:
    if target_precision is None and max_fpr is None:
        raise EvaluationError("give target_precision, max_fpr or both")
    if target_precision is not None and not 0.0 < target_precision <= 1.0:
        raise EvaluationError(f"target_precision must be in (0, 1], got {target_precision}")
    if max_fpr is not None and not 0.0 <= max_fpr <= 1.0:
        raise EvaluationError(f"max_fpr must be in [0, 1], got {max_fpr}")
    if min_support < 1:
        raise EvaluationError(f"min_support must be >= 1, got {min_support}")


def _false_flag_bound(flagged: int, logo_free: int, held_out: int, max_fpr: float) -> str:
    """What the tuning set's logo-free listings can show about the false-flag rate."""
    bound = rate_upper_bound(flagged, logo_free)
    of_them = f" ({held_out} of them held-out-brand negatives)" if held_out else ""
    text = (
        f"{flagged} of {logo_free} logo-free listings{of_them} flagged: a false-flag rate up to "
        f"{bound:.1%} fits that (95 % upper bound)"
    )
    needed = trials_to_show(max_fpr)
    if bound > max_fpr and needed is not None:
        text += f"; showing <= {max_fpr:g} takes >= {needed} logo-free listings with none flagged"
    return text


def _describe_constraints(target_precision: float | None, max_fpr: float | None) -> str:
    parts = []
    if target_precision is not None:
        parts.append(f"precision >= {target_precision}")
    if max_fpr is not None:
        parts.append(f"FPR <= {max_fpr}")
    return " and ".join(parts)
