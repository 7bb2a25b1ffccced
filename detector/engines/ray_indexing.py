"""``index build`` / ``index add`` on Ray Data.

Shape of the job::

    driver: collect the references (folder or manifest), open the index, cut the items into
            chunks of ``chunk_size`` (the local engine's commit units)
      ──► Ray tasks (CPU): read, hash, skip what the index holds, decode, reference views,
          local features, the preset's resize ──► pixels
      ──► Ray actors (the model; one GPU each where the cluster has GPUs): pixels ──► vectors
      ──► driver: each finished chunk is written to the work folder as Parquet (the
          checkpoint), then committed into the index, in chunk order, by this single writer
          through the index API the local engine uses.

The index, its records and the run's report are therefore the local engine's. An interrupted
run is resumed by running it again: committed chunks are skipped, finished but uncommitted ones
are committed from their Parquet files, only the rest is computed.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from detector.engines.checkpoint import ChunkCheckpoint
from detector.engines.ray_runtime import actor_resources, ray_session
from detector.engines.reference_rows import (
    OK,
    commit_chunk,
    item_to_json,
    prepare_row,
    recount_committed,
    row_pixels,
)
from detector.index_factory import DEFAULT_MEMORY_BUDGET
from detector.indexing import IndexingReport, IndexingTarget, open_indexing_target, sync_side_indexes, write_report
from detector.reference_manifest import ReferenceItem
from index.records import Fingerprint

log = logging.getLogger(__name__)

#: Items per Ray batch (decode task and model call).
BATCH_ITEMS = 16


class PrepareReferences:
    """The CPU stage: a batch of items -> prepared rows (see :func:`prepare_row`)."""

    def __init__(self, preset: Any, prep: Any, verify_config: Any, known_sha256: set[str], read_text: bool) -> None:
        from detector.models.preprocess import build_pil_transform

        self.transform = build_pil_transform(preset)
        self.args = (prep, verify_config, known_sha256)
        self.read_text = read_text

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = [prepare_row(text, self.transform, *self.args, read_text=self.read_text) for text in batch["item"]]
        out = {"chunk": batch["chunk"], "pos": batch["pos"]}
        for key in ("status", "reason", "sha256", "attributes", "features", "n_views", "pixels"):
            out[key] = np.array([r[key] for r in rows], dtype=np.int64 if key == "n_views" else object)
        return out


def prepare_batch(batch: dict[str, np.ndarray], **options: Any) -> dict[str, np.ndarray]:
    """Ray task entry point (a plain function runs as tasks, not actors)."""
    return PrepareReferences(**options)(batch)


class EmbedActor:
    """The model stage: loads the embedder once per actor; pixels -> float32 vector bytes."""

    def __init__(self, preset: Any, options: dict[str, Any], fingerprint: Fingerprint) -> None:
        from detector.embedder import create_embedder
        from detector.errors import DetectorError

        self.embedder = create_embedder(preset, **options)
        if not self.embedder.fingerprint.is_compatible(fingerprint):
            raise DetectorError(f"the actor's model differs from the index's: "
                                f"{fingerprint.describe_difference(self.embedder.fingerprint)}")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        size = self.embedder.image_size
        rows = [{"n_views": n, "pixels": p} for n, p in zip(batch["n_views"], batch["pixels"])]
        pixels = [px for row, status in zip(rows, batch["status"]) if status == OK for px in row_pixels(row, size)]
        vectors = self.embedder.embed_pixels(pixels)
        out, start = [], 0
        for n, status in zip(batch["n_views"], batch["status"]):
            take = int(n) if status == OK else 0
            out.append(vectors[start : start + take].tobytes())
            start += take
        result = {k: v for k, v in batch.items() if k != "pixels"}
        result["vectors"] = np.array(out, dtype=object)
        return result


def run_ray_indexing(
    refs: str | Path,
    index_dir: str | Path,
    *,
    preset: str | None = None,
    factory: str = "Flat",
    create: bool = True,
    default_kind: str = "product",
    embedder_options: dict[str, Any] | None = None,
    chunk_size: int = 128,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    read_text: bool = False,
    ray_address: str | None = None,
    work_dir: str | Path | None = None,
    actors: int | None = None,
    on_commit: Callable[[int], None] | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> IndexingReport:
    """:func:`detector.indexing.run_indexing` on Ray: same arguments, same index, same report.

    Args:
        ray_address: The cluster (``ray.init`` address); None starts a local Ray.
        work_dir: Where the checkpoint folder goes; default ``<index folder>.ray-work`` (a
            Milvus store's: its side folder's). It is
            removed after a complete run. Every worker reads the references by their paths, so
            on a cluster they must be on storage all nodes see.
        actors: Model actors; default one per GPU of the cluster, else 1.
        on_commit: Called with each chunk's number after it is committed (tests use it to
            interrupt a run).
    """
    options = dict(embedder_options or {})
    # The driver's model only gives the index's fingerprint: keep it off the GPU.
    target = open_indexing_target(
        refs, index_dir, preset=preset, factory=factory, create=create, default_kind=default_kind,
        embedder_options={**options, "device": "cpu"}, memory_budget=memory_budget,
    )
    fingerprint = target.embedder.fingerprint
    options["random_weights"] = fingerprint.weights.startswith("random:")
    items = target.items
    chunks = [list(range(s, min(s + max(1, chunk_size), len(items)))) for s in range(0, len(items), max(1, chunk_size))]
    verify = target.verify_config if target.verify_config.enabled else None
    checkpoint = ChunkCheckpoint(
        work_dir or f"{target.report_dir}.ray-work", "index",
        {"index": str(target.report_dir.resolve()), "fingerprint": dataclasses.asdict(fingerprint),
         "chunk_size": chunk_size, "prep": repr(target.prep), "verify": repr(verify), "read_text": read_text,
         "items": [item_to_json(i) for i in items]},
    )
    if on_total:
        on_total(len(items))
    report = IndexingReport()
    started = time.perf_counter()
    with target.index as index:
        committed = checkpoint.committed()
        todo = [c for c in range(len(chunks)) if c not in committed and not checkpoint.finished(c)]
        log.info("chunks: %d in all, %d committed, %d finished, %d to compute", len(chunks), len(committed),
                 len(chunks) - len(committed) - len(todo), len(todo))
        results = None
        try:
            for c in range(len(chunks)):
                if c in committed:
                    recount_committed(checkpoint.read_chunk(c), items, report)
                    if progress:
                        progress(len(chunks[c]))
            results = _computed_chunks(
                todo, chunks, items, target, options, fingerprint, read_text, ray_address, actors,
                known_sha256={r.sha256 for r in index.references()},
            )
            pending = sorted(set(range(len(chunks))) - committed)
            for chunk, rows in results:
                if chunk >= 0:
                    checkpoint.write_chunk(chunk, rows)
                while pending and checkpoint.finished(pending[0]):
                    c = pending.pop(0)
                    commit_chunk(checkpoint.read_chunk(c), items, index, report, verify, fingerprint.dim)
                    committed.add(c)
                    checkpoint.mark_committed(committed)
                    if progress:
                        progress(len(chunks[c]))
                    if on_commit:
                        on_commit(c)
        except KeyboardInterrupt:
            report.interrupted = True
        finally:
            if results is not None:
                results.close()  # stops the Ray pipeline of an interrupted run
        # As the local engine does after its commits (the store even when nothing was added).
        sync_side_indexes(index, shapes=bool(report.added), features=verify is not None, memory_budget=memory_budget)
    report.seconds = time.perf_counter() - started
    report.failed[:0] = target.failures
    write_report(target.report_dir, "build" if create else "add", report)
    if not report.interrupted:
        checkpoint.remove()
    return report


def _computed_chunks(
    todo: Sequence[int],
    chunks: Sequence[Sequence[int]],
    items: Sequence[ReferenceItem],
    target: IndexingTarget,
    options: dict[str, Any],
    fingerprint: Fingerprint,
    read_text: bool,
    ray_address: str | None,
    actors: int | None,
    known_sha256: set[str],
) -> Generator[tuple[int, list[dict[str, Any]]], None, None]:
    """Run the Ray pipeline over the chunks in ``todo``; yield ``(chunk, rows)`` as each one
    finishes (in chunk order), then a final ``(-1, [])`` so the driver commits what is left."""
    if todo:
        with ray_session(ray_address) as ray:
            resources = actor_resources(ray, actors, options.get("device", "auto"))
            # Absolute paths: the tasks run in another working directory (and on other nodes).
            source = [
                {"chunk": c, "pos": p, "item": item_to_json(dataclasses.replace(items[p], path=items[p].path.absolute()))}
                for c in todo for p in chunks[c]
            ]
            ds = ray.data.from_items(source)
            ds = ds.map_batches(
                prepare_batch, batch_size=BATCH_ITEMS, batch_format="numpy",
                fn_kwargs={"preset": target.embedder.preset, "prep": target.prep,
                           "verify_config": target.verify_config if target.verify_config.enabled else None,
                           "known_sha256": known_sha256, "read_text": read_text},
            )
            ds = ds.map_batches(
                EmbedActor, batch_size=BATCH_ITEMS, batch_format="numpy",
                fn_constructor_kwargs={"preset": target.embedder.preset,
                                       "options": {**options, "device": resources.device},
                                       "fingerprint": fingerprint},
                **resources.map_options(ray),
            )
            waiting = {c: len(chunks[c]) for c in todo}
            rows: dict[int, list[dict[str, Any]]] = {c: [] for c in todo}
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                for i in range(len(batch["pos"])):
                    c = int(batch["chunk"][i])
                    rows[c].append({k: _plain(v[i]) for k, v in batch.items() if k != "chunk"})
                    waiting[c] -= 1
                    if waiting[c] == 0:
                        yield c, rows.pop(c)
    yield -1, []


def _plain(value: Any) -> Any:
    """NumPy scalars -> Python values (Parquet columns and JSON want plain ones)."""
    return value.item() if isinstance(value, np.generic) else value
