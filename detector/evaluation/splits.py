"""Split labelled scores into a tune part and a held-out test part (by group tag or at random)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from detector.evaluation.scores import EvalScores, EvaluationError


def split_by_group(
    scores: EvalScores, tune_groups: str | Iterable[str], test_groups: str | Iterable[str]
) -> tuple[EvalScores, EvalScores]:
    """Split by group tag into (tune part, test part).

    Raises:
        EvaluationError: An unknown group, or a group on both sides.
    """
    tune, test = _as_set(tune_groups), _as_set(test_groups)
    unknown = (tune | test) - set(scores.groups)
    if unknown:
        raise EvaluationError(
            f"unknown group(s) {', '.join(sorted(unknown))}; groups in this set: "
            f"{', '.join(scores.groups) or 'none'}"
        )
    if tune & test:
        raise EvaluationError(
            f"group(s) {', '.join(sorted(tune & test))} on both sides of the split"
        )
    groups = [q.group for q in scores.queries]
    return (
        scores.subset(np.array([g in tune for g in groups], dtype=bool)),
        scores.subset(np.array([g in test for g in groups], dtype=bool)),
    )


def split_random(
    scores: EvalScores, *, test_fraction: float = 0.5, seed: int = 0
) -> tuple[EvalScores, EvalScores]:
    """Seeded random split into (tune part, test part), stratified by true brand.

    Each brand's queries (and the logo-free ones) are shuffled and split in proportion, so small
    brands appear on both sides when they have two or more queries.
    """
    if not 0.0 < test_fraction < 1.0:
        raise EvaluationError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    is_test = np.zeros(scores.n_queries, dtype=bool)
    strata: dict[str | None, list[int]] = {}
    for i, q in enumerate(scores.queries):
        strata.setdefault(q.brand, []).append(i)
    for key in sorted(strata, key=lambda k: (k is None, k or "")):  # fixed order: reproducible
        idx = np.array(strata[key])
        rng.shuffle(idx)
        is_test[idx[: round(len(idx) * test_fraction)]] = True
    return scores.subset(~is_test), scores.subset(is_test)


def _as_set(groups: str | Iterable[str]) -> set[str]:
    return {groups} if isinstance(groups, str) else set(groups)
