"""Seeded synthetic evaluation scores for tests, examples and notebooks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from detector.evaluation.scores import EvalScores


def synthetic_scores(
    n_queries: int = 400,
    *,
    brand_support: Sequence[int] = (120, 60, 30, 12, 5),
    logo_free_fraction: float = 0.3,
    true_mean: float | dict[str, float] = 0.78,
    false_mean: float = 0.55,
    spread: float = 0.07,
    distractors: int = 3,
    groups: Sequence[str] = ("val", "test"),
    seed: int = 0,
) -> EvalScores:
    """Seeded synthetic scores for tests, examples and notebooks (like faiss' SyntheticDataset).

    Brands are named ``b0, b1, ...``; ``brand_support`` sets their relative frequency among the
    branded queries. Each query gets a prediction for its true brand (score ~ N(true_mean,
    spread), per brand when a dict) and ``distractors`` other brands (~ N(false_mean, spread)).
    Queries alternate over ``groups`` and over the reference kinds.
    """
    # imported on call: scores re-exports this function, so it cannot import scores at load time
    from detector.evaluation.scores import EvalScores, Prediction, Query
    from index.records import KINDS

    rng = np.random.default_rng(seed)
    brands = [f"b{i}" for i in range(len(brand_support))]
    weights = np.asarray(brand_support, dtype=np.float64)
    weights /= weights.sum()
    queries: list[Query] = []
    preds: list[Prediction] = []
    for i in range(n_queries):
        brand = (
            None
            if rng.random() < logo_free_fraction
            else brands[int(rng.choice(len(brands), p=weights))]
        )
        queries.append(
            Query(f"q{i:05d}.jpg", brand, kind=KINDS[i % len(KINDS)], group=groups[i % len(groups)])
        )
        others = [b for b in brands if b != brand]
        picked = sorted(
            rng.choice(others, size=min(distractors, len(others)), replace=False).tolist()
        )
        for b in ([brand] if brand is not None else []) + picked:
            mean = (
                (true_mean.get(b, 0.78) if isinstance(true_mean, dict) else true_mean)
                if b == brand
                else false_mean
            )
            kind = KINDS[int(rng.integers(len(KINDS)))]
            preds.append(Prediction(i, b, float(rng.normal(mean, spread)), kind))
    return EvalScores.from_predictions(queries, preds)
