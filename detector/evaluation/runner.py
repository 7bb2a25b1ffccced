"""Scoring a labelled evaluation set once, with a cache, so thresholds can be tried for free.

Each labelled image is scored by the unchanged scoring flow (:class:`detector.scoring.Detector`);
what evaluation keeps per image is every brand's best score. Those results are cached in a
SQLite file keyed by the image's content sha256 and a *context* hash: model fingerprint, index
identity and generation, and the scoring options (regions, verification, search). Rerunning
with other thresholds, another report or another tuning target costs no model time; changing
the model, the index, the options or the image bytes recomputes exactly what changed.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from detector.errors import ImageLoadError
from detector.evaluation.labels import LabelSet
from detector.evaluation.scores import EvalScores, Prediction, Query
from detector.images import read_bytes, sha256_bytes
from detector.thresholds import threshold_key
from index.atomic import atomic_write_bytes
from index.records import canonical_json

SCORES_FILE = "scores.jsonl"


@dataclass
class EvalRun:
    """Outcome of scoring a labelled set."""

    scores: EvalScores
    failed: list[tuple[str, str]] = field(default_factory=list)
    cached: int = 0
    computed: int = 0
    seconds: float = 0.0


def scoring_context(detector: Any) -> str:
    """Hash of everything besides the image that decides a scoring result."""
    info = detector.index.info()
    config = detector.config
    payload = {
        "model": list(detector.fingerprint.comparable_key()),
        "index": [str(Path(info.path).resolve()), info.created_at, info.generation],
        "regions": asdict(config.regions),
        "verify": asdict(config.verify),
        "silhouettes": asdict(config.silhouettes),
        "search": [config.search_k, config.search_params],
        "result_format": 2,  # brand scores carry "verified" since format 2
    }
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


class ResultCache:
    """Per-image brand scores, keyed by (image sha256, scoring context). SQLite, one file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS results (image_sha TEXT, context TEXT, brand_scores TEXT,"
            " PRIMARY KEY (image_sha, context))"
        )

    def get(self, shas: Iterable[str], context: str) -> dict[str, list[dict[str, Any]]]:
        found = {}
        for sha in set(shas):
            row = self._db.execute(
                "SELECT brand_scores FROM results WHERE image_sha=? AND context=?", (sha, context)
            ).fetchone()
            if row is not None:
                found[sha] = json.loads(row[0])
        return found

    def put(self, items: dict[str, list[dict[str, Any]]], context: str) -> None:
        with self._db:  # one transaction: a crash keeps the cache consistent
            self._db.executemany(
                "INSERT OR REPLACE INTO results VALUES (?, ?, ?)",
                [(sha, context, json.dumps(scores)) for sha, scores in items.items()],
            )

    def close(self) -> None:
        self._db.close()


def run_evaluation(
    detector: Any,
    labels: LabelSet,
    *,
    cache_path: str | Path | None = None,
    batch_size: int = 8,
    progress: Callable[[int], None] | None = None,
) -> EvalRun:
    """Score every labelled image (cache first) and return the pooled brand scores.

    Images that cannot be read are left out of the scores and listed in ``failed``.
    """
    started = time.perf_counter()
    cache = ResultCache(cache_path) if cache_path is not None else None
    context = scoring_context(detector)
    run = EvalRun(scores=EvalScores.from_predictions((), ()))
    kept: list[Query] = []
    per_query: list[list[dict[str, Any]]] = []
    queries = labels.queries
    try:
        for start in range(0, len(queries), batch_size):
            chunk = list(range(start, min(start + batch_size, len(queries))))
            blobs: dict[int, bytes] = {}
            for i in chunk:
                try:
                    blobs[i] = read_bytes(labels.image_path(i))
                except ImageLoadError as e:
                    run.failed.append((queries[i].id, str(e)))
            shas = {i: sha256_bytes(b) for i, b in blobs.items()}
            hits = cache.get(shas.values(), context) if cache else {}
            todo = [i for i in blobs if shas[i] not in hits]
            fresh: dict[str, list[dict[str, Any]]] = {}
            if todo:
                analyses = detector.analyse_many([blobs[i] for i in todo], [queries[i].id for i in todo])
                for i, analysis in zip(todo, analyses):
                    if analysis.verdict.error:
                        run.failed.append((queries[i].id, analysis.verdict.error))
                        continue
                    fresh[shas[i]] = [asdict(bs) for bs in analysis.brand_scores]
                if cache and fresh:
                    cache.put(fresh, context)
            run.cached += sum(1 for i in blobs if shas[i] in hits)
            run.computed += len(fresh)
            for i in chunk:
                result = hits.get(shas.get(i, "")) or fresh.get(shas.get(i, ""))
                if result is None:
                    continue
                kept.append(queries[i])
                per_query.append(result)
            if progress:
                progress(len(chunk))
    finally:
        if cache:
            cache.close()
    predictions = [
        Prediction(q, bs["brand"], float(bs["score"]), threshold_key(bs["kind"], bs["verified"], bs.get("basis")))
        for q, brand_scores in enumerate(per_query)
        for bs in brand_scores
    ]
    run.scores = EvalScores.from_predictions(kept, predictions)
    run.seconds = time.perf_counter() - started
    return run


def save_scores(scores: EvalScores, path: str | Path) -> None:
    """Write scores as JSONL: one line per query with its per-brand predictions."""
    by_query: list[list[dict[str, Any]]] = [[] for _ in scores.queries]
    for q, brand, score, kind in zip(scores.query_idx, scores.brand, scores.score, scores.ref_kind):
        by_query[int(q)].append({"brand": str(brand), "score": float(score), "ref_kind": str(kind)})
    lines = [
        json.dumps({**asdict(query), "predictions": preds}) for query, preds in zip(scores.queries, by_query)
    ]
    atomic_write_bytes(Path(path), ("\n".join(lines) + "\n").encode())


def load_scores(path: str | Path) -> EvalScores:
    """Read scores written by :func:`save_scores` (the ``eval`` command's ``scores.jsonl``)."""
    queries: list[Query] = []
    predictions: list[Prediction] = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        q = len(queries)
        queries.append(Query(id=row["id"], brand=row.get("brand"), kind=row.get("kind"), group=row.get("group")))
        predictions.extend(Prediction(q, p["brand"], float(p["score"]), p["ref_kind"]) for p in row["predictions"])
    return EvalScores.from_predictions(queries, predictions)
