"""Held-out-brand negatives: what a branded listing would score if its brand were not indexed.

A labelled set has few listings that show no indexed brand (a benchmark set of 400 listings
holds 100), so a threshold tuned for "no false flag" on them can sit just above their highest
score and still flag 10 % of another collection's logo-free listings (docs/benchmarks.md). The
branded listings hold many more such scores: with its true brand's predictions removed, a
listing that shows brand X is a listing showing a brand the library does not hold — the most
common false flag there is. This is leave-one-class-out, the usual way to evaluate open-set
recognition without more labelled data.

Each positive query yields one negative query: same id with ``#without:<brand>``, no brand,
group :data:`HELD_OUT_GROUP`, and every prediction except its true brand's. The other brands'
scores were computed with X in the library, so they are a slightly optimistic stand-in where a
brand's score depends on its rivals (the ratio test across brands, ``verify.rival_test``,
discounts inliers that match X as well): a held-out negative can only score lower than the
same listing would with X truly absent, never higher. They are for tuning; report figures on
real listings.
"""

from __future__ import annotations

import numpy as np

from detector.evaluation.scores import EvalScores, Query

HELD_OUT_GROUP = "held_out_brand"


def held_out_brand_negatives(scores: EvalScores) -> EvalScores:
    """One logo-free query per positive query of ``scores``: its predictions without the true brand.

    Example:
        >>> from detector.evaluation.scores import Prediction
        >>> s = EvalScores.from_predictions(
        ...     [Query("a.jpg", "acme")],
        ...     [Prediction(0, "acme", 0.99, "logo"), Prediction(0, "bolt", 0.7, "logo")])
        >>> held = held_out_brand_negatives(s)
        >>> held.queries[0].brand, held.brand.tolist(), held.score.tolist()
        (None, ['bolt'], [0.7])
    """
    branded = scores.subset(scores.positive)
    others = branded.only_predictions(~branded.is_true)
    return EvalScores(
        queries=tuple(Query(f"{q.id}#without:{q.brand}", None, q.kind, HELD_OUT_GROUP) for q in branded.queries),
        query_idx=others.query_idx,
        brand=others.brand,
        score=others.score,
        ref_kind=others.ref_kind,
        score_name=scores.score_name,
    )


def with_held_out_brands(scores: EvalScores) -> EvalScores:
    """``scores`` plus :func:`held_out_brand_negatives` of it (the real queries first, unchanged)."""
    held = held_out_brand_negatives(scores)
    offset = scores.n_queries
    return EvalScores(
        queries=scores.queries + held.queries,
        query_idx=np.concatenate([scores.query_idx, held.query_idx + offset]),
        brand=np.concatenate([scores.brand, held.brand]),
        score=np.concatenate([scores.score, held.score]),
        ref_kind=np.concatenate([scores.ref_kind, held.ref_kind]),
        score_name=scores.score_name,
    )
