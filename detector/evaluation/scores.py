"""The evaluation data model: labelled queries, per-brand scores, and the flag decision rule.

An evaluation set is a list of :class:`Query` (one listing photo each, with its true brand or
``None`` for a logo-free listing / a brand that is not indexed). The scorer's output for it is
reduced to *predictions*: for each query, the best score per brand among the retrieved matches,
with the kind of the reference that gave that score. A prediction is true iff its brand equals
the query's true brand. :class:`EvalScores` holds both as flat numpy arrays.

Flag rule (the same as ``detector.scoring.Detector``): a query is flagged when any of its
predictions reaches the threshold that applies to its (brand, reference kind); the flagged brand
is the highest-scoring passing brand. Equal scores are broken worst-case: a wrong brand is
preferred to the true one, so ties never flatter the system.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol

import numpy as np

from detector.errors import DetectorError
from detector.evaluation.synthetic import synthetic_scores
from detector.thresholds import Thresholds, key_fallbacks, threshold_key

# synthetic_scores lives in its own module and stays importable from here
__all__ = [
    "Decisions",
    "EvalScores",
    "EvaluationError",
    "Prediction",
    "Query",
    "as_thresholds",
    "group_indices",
    "synthetic_scores",
]


class EvaluationError(DetectorError):
    """Evaluation data is inconsistent (bad predictions, unknown group) or a metric cannot run."""


@dataclass(frozen=True)
class Query:
    """One labelled listing photo.

    Attributes:
        id: Identifier, usually the image path as written in the labels file.
        brand: True brand, or None for a logo-free listing or a brand that is not indexed.
        kind: Optional label of what shows the brand (e.g. "logo" or "product").
        group: Optional tag (split, transformation class...) for breakdowns and holdout.
    """

    id: str
    brand: str | None
    kind: str | None = None
    group: str | None = None


@dataclass(frozen=True)
class Prediction:
    """The best score of one brand for one query, and the thresholds key of the match that
    gave it: its reference kind, or ``<kind>:verified`` (:func:`detector.thresholds.threshold_key`)."""

    query_idx: int
    brand: str
    score: float
    ref_kind: str


class _MatchLike(Protocol):
    brand: str
    kind: str
    score: float


@dataclass(frozen=True)
class Decisions:
    """Per-query outcome of applying a threshold table (arrays of length n_queries).

    Attributes:
        flagged: The query reaches some threshold.
        brand: Flagged brand (object array, None where not flagged).
        score: Score of the flagged brand (NaN where not flagged).
        threshold: Threshold that applied to the flagged prediction (NaN where not flagged).
        correct: Flagged and the flagged brand is the true brand.
        prediction: Index of the flagged prediction (-1 where not flagged).
    """

    flagged: np.ndarray
    brand: np.ndarray
    score: np.ndarray
    threshold: np.ndarray
    correct: np.ndarray
    prediction: np.ndarray


@dataclass(frozen=True, eq=False)
class EvalScores:
    """Labelled queries plus their per-brand predictions as parallel arrays.

    Build it with :meth:`from_predictions` or :meth:`from_matches`; the constructor takes the
    arrays directly and validates them. Arrays are made read-only.

    Attributes:
        queries: The evaluation set.
        query_idx: int64 index into ``queries`` per prediction.
        brand: Object array of brand names per prediction.
        score: float64 score per prediction (higher = more similar).
        ref_kind: Object array, thresholds key of the match per prediction (the reference's
            kind, or ``<kind>:verified`` when geometric verification accepted it).
        score_name: Which score the values are ("fused", "cosine"); copied into tuned thresholds.

    Example:
        >>> qs = [Query("a.jpg", "acme"), Query("b.jpg", None)]
        >>> s = EvalScores.from_predictions(qs, [Prediction(0, "acme", 0.9, "logo")])
        >>> s.is_true.tolist()
        [True]
    """

    queries: tuple[Query, ...]
    query_idx: np.ndarray
    brand: np.ndarray
    score: np.ndarray
    ref_kind: np.ndarray
    score_name: str = "fused"

    def __post_init__(self) -> None:
        object.__setattr__(self, "queries", tuple(self.queries))
        qi = np.asarray(self.query_idx, dtype=np.int64).reshape(-1)
        sc = np.asarray(self.score, dtype=np.float64).reshape(-1)
        br = _object_array(self.brand)
        rk = _object_array(self.ref_kind)
        if not (len(qi) == len(sc) == len(br) == len(rk)):
            raise EvaluationError(
                f"prediction arrays differ in length: query_idx={len(qi)}, score={len(sc)}, "
                f"brand={len(br)}, ref_kind={len(rk)}"
            )
        _validate(self.queries, qi, br, sc, rk)
        for name, arr in (("query_idx", qi), ("score", sc), ("brand", br), ("ref_kind", rk)):
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)

    # ---- construction -------------------------------------------------------------------

    @classmethod
    def from_predictions(
        cls,
        queries: Sequence[Query],
        predictions: Iterable[Prediction],
        *,
        score_name: str = "fused",
    ) -> EvalScores:
        """Build from Prediction values; raises EvaluationError on a duplicate (query, brand)."""
        preds = list(predictions)
        return cls(
            queries=tuple(queries),
            query_idx=np.array([p.query_idx for p in preds], dtype=np.int64),
            brand=_object_array([p.brand for p in preds]),
            score=np.array([p.score for p in preds], dtype=np.float64),
            ref_kind=_object_array([p.ref_kind for p in preds]),
            score_name=score_name,
        )

    @classmethod
    def from_matches(
        cls,
        queries: Sequence[Query],
        matches: Sequence[Sequence[_MatchLike]],
        *,
        score_name: str = "fused",
    ) -> EvalScores:
        """Build from each query's retrieved matches (``Match``/``ScoredMatch``: brand, kind,
        score, and ``verified`` where the match has it).

        Keeps the best-scoring match per brand, as the scorer does.

        Raises:
            EvaluationError: ``matches`` is not one list per query.
        """
        if len(matches) != len(queries):
            raise EvaluationError(
                f"got match lists for {len(matches)} queries, expected {len(queries)}"
            )
        preds: list[Prediction] = []
        for qi, ms in enumerate(matches):
            best: dict[str, _MatchLike] = {}
            for m in ms:
                if m.brand not in best or m.score > best[m.brand].score:
                    best[m.brand] = m
            preds.extend(
                Prediction(qi, b, float(m.score), threshold_key(m.kind, getattr(m, "verified", False)))
                for b, m in best.items()
            )
        return cls.from_predictions(queries, preds, score_name=score_name)

    # ---- derived arrays ----------------------------------------------------------------

    @property
    def n_queries(self) -> int:
        return len(self.queries)

    @property
    def n_predictions(self) -> int:
        return len(self.score)

    @cached_property
    def true_brand(self) -> np.ndarray:
        """Object array: each query's true brand (None for negatives)."""
        return _object_array([q.brand for q in self.queries])

    @cached_property
    def positive(self) -> np.ndarray:
        """Bool per query: has a true brand (counts in recall denominators)."""
        return np.array([q.brand is not None for q in self.queries], dtype=bool)

    @cached_property
    def is_true(self) -> np.ndarray:
        """Bool per prediction: its brand is the query's true brand."""
        return self.brand_code == self.true_code[self.query_idx]

    @cached_property
    def brand_code(self) -> np.ndarray:
        """int64 per prediction: index of its brand in :attr:`brands` (fast grouping)."""
        if self.n_predictions == 0:
            return np.zeros(0, dtype=np.int64)
        return np.searchsorted(np.array(self.brands), self.brand.astype(str)).astype(np.int64)

    @cached_property
    def true_code(self) -> np.ndarray:
        """int64 per query: index of its true brand in :attr:`brands`, -1 for logo-free."""
        index = {b: i for i, b in enumerate(self.brands)}
        return np.array(
            [-1 if q.brand is None else index[q.brand] for q in self.queries], dtype=np.int64
        )

    @cached_property
    def ref_kinds(self) -> list[str]:
        """Sorted distinct reference kinds among the predictions."""
        return sorted({str(k) for k in self.ref_kind})

    @cached_property
    def kind_code(self) -> np.ndarray:
        """int64 per prediction: index of its reference kind in :attr:`ref_kinds`."""
        if self.n_predictions == 0:
            return np.zeros(0, dtype=np.int64)
        return np.searchsorted(np.array(self.ref_kinds), self.ref_kind.astype(str)).astype(np.int64)

    def has_brand(self, names: Iterable[str]) -> np.ndarray:
        """Bool per prediction: its brand is one of ``names`` (compares codes, not strings)."""
        index = {b: i for i, b in enumerate(self.brands)}
        return np.isin(self.brand_code, [index[n] for n in names if n in index])

    def governing_kind(self, entries: Iterable[str]) -> np.ndarray:
        """Str per prediction: which of a table's kind ``entries`` governs it ("" = none).

        A ``<kind>:verified`` prediction falls back to its plain kind's entry
        (:func:`detector.thresholds.key_fallbacks`).
        """
        entries = set(entries)
        per_kind = [next((k for k in key_fallbacks(kind) if k in entries), "") for kind in self.ref_kinds]
        return np.array(per_kind + [""], dtype=object)[self.kind_code] if self.n_predictions else np.zeros(0, object)

    def predictions_by_brand(self) -> dict[str, np.ndarray]:
        """Prediction indices of every brand in :attr:`brands` (one pass, for per-brand loops)."""
        groups = group_indices(self.brand_code, len(self.brands))
        return dict(zip(self.brands, groups))

    def brand_code_of(self, prediction: np.ndarray) -> np.ndarray:
        """Brand codes of prediction indices, -1 where the index is -1 (nothing)."""
        out = np.full(len(prediction), -1, dtype=np.int64)
        has = prediction >= 0
        out[has] = self.brand_code[prediction[has]]
        return out

    @cached_property
    def groups(self) -> list[str]:
        """Sorted distinct group tags (queries without a group are not listed)."""
        return sorted({q.group for q in self.queries if q.group is not None})

    @cached_property
    def query_kinds(self) -> list[str]:
        """Sorted distinct query kind labels."""
        return sorted({q.kind for q in self.queries if q.kind is not None})

    @cached_property
    def brands(self) -> list[str]:
        """Sorted brands that are a true brand or appear in a prediction."""
        names = {q.brand for q in self.queries if q.brand is not None}
        names.update(str(b) for b in self.brand)
        return sorted(names)

    def support(self) -> dict[str, int]:
        """Number of labelled positive queries per true brand."""
        counts: dict[str, int] = {}
        for q in self.queries:
            if q.brand is not None:
                counts[q.brand] = counts.get(q.brand, 0) + 1
        return counts

    # ---- filtering ---------------------------------------------------------------------

    def subset(self, query_mask: np.ndarray) -> EvalScores:
        """Keep the queries where ``query_mask`` is true, with their predictions (reindexed)."""
        mask = np.asarray(query_mask, dtype=bool)
        if mask.shape != (self.n_queries,):
            raise EvaluationError(
                f"query mask has shape {mask.shape}, expected ({self.n_queries},)"
            )
        new_index = np.cumsum(mask) - 1
        keep = mask[self.query_idx] if self.n_predictions else np.zeros(0, dtype=bool)
        return EvalScores(
            queries=tuple(q for q, m in zip(self.queries, mask) if m),
            query_idx=new_index[self.query_idx[keep]],
            brand=self.brand[keep],
            score=self.score[keep],
            ref_kind=self.ref_kind[keep],
            score_name=self.score_name,
        )

    def for_group(self, group: str) -> EvalScores:
        """Queries tagged ``group``; raises EvaluationError listing the known groups if none."""
        if group not in self.groups:
            raise EvaluationError(
                f"unknown group {group!r}; groups in this set: {', '.join(self.groups) or 'none'}"
            )
        return self.subset(np.array([q.group == group for q in self.queries], dtype=bool))

    def for_query_kind(self, kind: str) -> EvalScores:
        """Queries whose kind label is ``kind`` (may be empty)."""
        return self.subset(np.array([q.kind == kind for q in self.queries], dtype=bool))

    def only_predictions(self, prediction_mask: np.ndarray) -> EvalScores:
        """All queries, but only the predictions where ``prediction_mask`` is true."""
        keep = np.asarray(prediction_mask, dtype=bool)
        if keep.shape != (self.n_predictions,):
            raise EvaluationError(
                f"prediction mask has shape {keep.shape}, expected ({self.n_predictions},)"
            )
        return EvalScores(
            queries=self.queries,
            query_idx=self.query_idx[keep],
            brand=self.brand[keep],
            score=self.score[keep],
            ref_kind=self.ref_kind[keep],
            score_name=self.score_name,
        )

    def with_brand(self, brand: str) -> EvalScores:
        """All queries, only the predictions of ``brand``."""
        return self.only_predictions(self.brand == brand)

    def with_ref_kind(self, kind: str) -> EvalScores:
        """All queries, only the predictions on references of ``kind``."""
        return self.only_predictions(self.ref_kind == kind)

    # ---- decisions ---------------------------------------------------------------------

    def thresholds_per_prediction(self, thresholds: Thresholds | float) -> np.ndarray:
        """The threshold value that applies to each prediction's (brand, reference kind)."""
        table = as_thresholds(thresholds)
        if self.n_predictions == 0:
            return np.zeros(0, dtype=np.float64)
        grid = np.array(
            [[table.for_match(b, k).value for k in self.ref_kinds] for b in self.brands],
            dtype=np.float64,
        )
        return grid[self.brand_code, self.kind_code]

    def top_prediction(self) -> np.ndarray:
        """Index of each query's highest-scoring prediction (-1 if none); ties pick a wrong brand."""
        return self._top.copy()

    @cached_property
    def _top(self) -> np.ndarray:
        return self.best_per_query(np.ones(self.n_predictions, dtype=bool))

    @cached_property
    def _ranked(self) -> np.ndarray:
        """All predictions by query, then score descending, then false before true (worst case)."""
        # lexsort: the last key is the primary one
        return np.lexsort((self.is_true, -self.score, self.query_idx))

    def decide(self, thresholds: Thresholds | float) -> Decisions:
        """Apply a threshold table (or one global value) to every query; see the module docstring."""
        thr = self.thresholds_per_prediction(thresholds)
        best = self.best_per_query(self.score >= thr)
        flagged = best >= 0
        idx = best[flagged]
        brand = np.full(self.n_queries, None, dtype=object)
        score = np.full(self.n_queries, np.nan)
        applied = np.full(self.n_queries, np.nan)
        correct = np.zeros(self.n_queries, dtype=bool)
        brand[flagged] = self.brand[idx]
        score[flagged] = self.score[idx]
        applied[flagged] = thr[idx]
        correct[flagged] = self.is_true[idx]
        return Decisions(
            flagged=flagged,
            brand=brand,
            score=score,
            threshold=applied,
            correct=correct,
            prediction=best,
        )

    def best_per_query(self, eligible: np.ndarray) -> np.ndarray:
        """Index of each query's best prediction among ``eligible`` (-1 if none); ties pick a wrong brand."""
        best = np.full(self.n_queries, -1, dtype=np.int64)
        # the worst-case ranking is fixed, so the best eligible one is the first eligible in it
        order = self._ranked[np.asarray(eligible, dtype=bool)[self._ranked]]
        if len(order) == 0:
            return best
        q_sorted = self.query_idx[order]
        first = np.ones(len(order), dtype=bool)
        first[1:] = q_sorted[1:] != q_sorted[:-1]
        best[q_sorted[first]] = order[first]
        return best

    def describe(self) -> dict[str, Any]:
        """Counts for reports: queries, positives, logo-free queries, predictions, brands."""
        return {
            "n_queries": self.n_queries,
            "n_positive": int(self.positive.sum()),
            "n_logo_free": int((~self.positive).sum()),
            "n_predictions": self.n_predictions,
            "n_brands_labelled": len(self.support()),
            "score_name": self.score_name,
        }


def group_indices(codes: np.ndarray, n_codes: int) -> list[np.ndarray]:
    """Indices holding each code 0..n_codes-1, in index order (negative codes are ignored)."""
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(n_codes + 1), side="left")
    return [order[bounds[c] : bounds[c + 1]] for c in range(n_codes)]


def as_thresholds(thresholds: Thresholds | float) -> Thresholds:
    """Accept a Thresholds table or a bare global threshold."""
    if isinstance(thresholds, Thresholds):
        return thresholds
    if isinstance(thresholds, bool) or not isinstance(thresholds, (int, float, np.floating)):
        raise EvaluationError(
            f"thresholds must be a Thresholds table or a number, got {thresholds!r}"
        )
    return Thresholds(default=float(thresholds))


def _object_array(values: Any) -> np.ndarray:
    arr = np.empty(len(values), dtype=object)
    arr[:] = list(values)
    return arr


def _validate(
    queries: tuple[Query, ...], qi: np.ndarray, br: np.ndarray, sc: np.ndarray, rk: np.ndarray
) -> None:
    for q in queries:
        if not isinstance(q, Query):
            raise EvaluationError(f"queries must be Query values, got {type(q).__name__}")
    if len(qi) == 0:
        return
    bad = np.flatnonzero((qi < 0) | (qi >= len(queries)))
    if len(bad):
        raise EvaluationError(
            f"prediction {bad[0]}: query_idx {qi[bad[0]]} outside [0, {len(queries) - 1}]"
        )
    bad = np.flatnonzero(~np.isfinite(sc))
    if len(bad):
        raise EvaluationError(f"prediction {bad[0]}: score {sc[bad[0]]} is not finite")
    for name, arr in (("brand", br), ("ref_kind", rk)):
        for i, v in enumerate(arr):
            if not isinstance(v, str) or not v:
                raise EvaluationError(
                    f"prediction {i}: {name} must be a non-empty string, got {v!r}"
                )
    names, b_code = np.unique(br.astype(str), return_inverse=True)
    key = qi * len(names) + b_code
    order = np.argsort(key, kind="stable")
    dup = np.flatnonzero(key[order][1:] == key[order][:-1])
    if len(dup):
        i, j = int(order[dup[0]]), int(order[dup[0] + 1])
        qn = int(qi[i])
        raise EvaluationError(
            f"predictions {i} and {j} are both for query {qn} ({queries[qn].id}) and brand "
            f"{br[i]!r}; keep only the best score per (query, brand)"
        )
