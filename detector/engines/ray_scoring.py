"""``score`` of a backlog of listings on Ray Data.

Shape of the job::

    driver: the listing entries (command-line files and folders, a manifest of paths or URLs),
            cut into chunks
      ──► Ray tasks (CPU): read (file or URL) and decode each image ──► RGB pixels
      ──► Ray actors (one :class:`~detector.scoring.Detector` each: the model, a GPU where the
          cluster has them, and the index opened read-only): the whole scoring flow
      ──► driver: each finished chunk's verdicts are written to the work folder as Parquet.

A rerun of the same backlog (same entries, index generation and options) reads the finished
chunks back and scores only the rest. Every actor opens the index by its path: on a cluster the
index folder must be on storage all nodes see.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from detector.engines.checkpoint import ChunkCheckpoint
from detector.engines.ray_runtime import actor_resources, ray_session
from detector.listing_manifest import URL_SCHEMES, ListingEntry
from detector.verdict import Verdict

#: Listings per Ray batch (decode task and Detector call).
BATCH_LISTINGS = 16


def decode_batch(batch: dict[str, np.ndarray], max_pixels: int) -> dict[str, np.ndarray]:
    """The CPU stage: read and decode each listing; a bad one gets its failed verdict here."""
    from detector.errors import ImageLoadError
    from detector.images import load_image
    from detector.listing_manifest import read_listing

    pixels, heights, widths, failed = [], [], [], []
    for name, source, problem in zip(batch["name"], batch["source"], batch["problem"]):
        entry = ListingEntry(str(name), str(source), str(problem) or None)
        try:
            image = load_image(read_listing(entry), name=entry.name, max_pixels=max_pixels)
        except ImageLoadError as e:
            pixels.append(b"")
            heights.append(0)
            widths.append(0)
            # Named as given (the task reads it by its absolute path): the local engine's error.
            error = str(ImageLoadError(entry.name, e.reason))
            failed.append(json.dumps(Verdict.failed(entry.name, error).to_dict()))
            continue
        array = np.asarray(image, dtype=np.uint8)
        pixels.append(array.tobytes())
        heights.append(array.shape[0])
        widths.append(array.shape[1])
        failed.append("")
    return {
        "chunk": batch["chunk"], "pos": batch["pos"], "name": batch["name"],
        "pixels": np.array(pixels, dtype=object), "height": np.array(heights, dtype=np.int64),
        "width": np.array(widths, dtype=np.int64), "verdict": np.array(failed, dtype=object),
    }


class ScoreActor:
    """The model stage: one Detector per actor; decoded listings -> verdicts (JSON)."""

    def __init__(self, index_dir: str, detector_options: dict[str, Any]) -> None:
        from detector.scoring import Detector

        self.detector = Detector.open(index_dir, **detector_options)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from PIL import Image

        todo = [i for i, v in enumerate(batch["verdict"]) if not v]
        images = [
            Image.fromarray(np.frombuffer(batch["pixels"][i], dtype=np.uint8).reshape(
                int(batch["height"][i]), int(batch["width"][i]), 3))
            for i in todo
        ]
        verdicts = list(batch["verdict"])
        names = [str(batch["name"][i]) for i in todo]
        for i, analysis in zip(todo, self.detector.analyse_images(images, names)):
            verdicts[i] = json.dumps(analysis.verdict.to_dict())
        return {"chunk": batch["chunk"], "pos": batch["pos"], "verdict": np.array(verdicts, dtype=object)}


@dataclasses.dataclass(frozen=True)
class IndexIdentity:
    """What a scoring job is keyed and recorded by: the index's model, generation and folder."""

    fingerprint: Any
    generation: int | None
    folder: Path

    @classmethod
    def of(cls, index_dir: str | Path) -> IndexIdentity:
        from index.open import open_index

        with open_index(index_dir) as index:
            return cls(index.fingerprint, index.generation, Path(index.path).resolve())


def run_ray_scoring(
    entries: Sequence[ListingEntry],
    index_dir: str | Path,
    *,
    thresholds: str | Path | None = None,
    scoring: dict[str, Any] | None = None,
    detector_options: dict[str, Any] | None = None,
    ray_address: str | None = None,
    work_dir: str | Path = "counterfeit-ray-work",
    actors: int | None = None,
    chunk_size: int = 256,
    progress: Callable[[int], None] | None = None,
    identity: IndexIdentity | None = None,
) -> Iterator[Verdict]:
    """Score ``entries`` against the index on Ray; yield the verdicts in input order.

    Args:
        entries: From :func:`detector.listing_manifest.listing_entries`.
        index_dir, thresholds, scoring: As :meth:`detector.scoring.Detector.open`'s
            ``index_dir``, ``thresholds`` and ``config``.
        detector_options: ``device``, ``precision``, ``checkpoint``, ``batch_size``.
        ray_address: The cluster; None starts a local Ray.
        work_dir: Where the job's checkpoint folder (its results, as Parquet) is kept.
        actors: Scoring actors; default one per GPU of the cluster, else 1.
        chunk_size: Listings per checkpoint file.
        progress: Called with the number of listings of each finished chunk.
        identity: ``IndexIdentity.of(index_dir)`` when the caller has it already.
    """
    from detector.models.registry import get_preset
    from detector.scoring_config import resolve_scoring
    identity = identity or IndexIdentity.of(index_dir)
    fingerprint, generation, folder = identity.fingerprint, identity.generation, identity.folder
    config, _ = resolve_scoring(get_preset(fingerprint.preset).defaults.get("scoring", {}), scoring)
    options = {k: v for k, v in (detector_options or {}).items() if k != "device"}
    size = max(1, chunk_size)
    chunks = [list(range(s, min(s + size, len(entries)))) for s in range(0, len(entries), size)]
    checkpoint = ChunkCheckpoint(
        work_dir, "score",
        {"index": str(folder), "generation": generation,
         "fingerprint": dataclasses.asdict(fingerprint), "thresholds": str(thresholds), "scoring": scoring,
         "options": options, "chunk_size": size, "entries": [dataclasses.astuple(e) for e in entries]},
    )
    todo = [c for c in range(len(chunks)) if not checkpoint.finished(c)]
    if todo:
        with ray_session(ray_address) as ray:
            resources = actor_resources(ray, actors, (detector_options or {}).get("device", "auto"))
            source = [{"chunk": c, "pos": p, **dataclasses.asdict(entries[p])} for c in todo for p in chunks[c]]
            for row in source:
                row["problem"] = row["problem"] or ""
                if row["source"] and not row["source"].startswith(URL_SCHEMES):  # workers have another cwd
                    row["source"] = os.path.abspath(row["source"])
            ds = ray.data.from_items(source).map_batches(
                decode_batch, batch_size=BATCH_LISTINGS, batch_format="numpy",
                fn_kwargs={"max_pixels": config.max_pixels},
            )
            ds = ds.map_batches(
                ScoreActor, batch_size=BATCH_LISTINGS, batch_format="numpy",
                fn_constructor_kwargs={"index_dir": _absolute(index_dir), "detector_options": {
                    **options, "device": resources.device, "thresholds": thresholds, "config": scoring}},
                **resources.map_options(ray),
            )
            waiting = {c: len(chunks[c]) for c in todo}
            rows: dict[int, list[dict[str, Any]]] = {c: [] for c in todo}
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                for c, pos, verdict in zip(batch["chunk"], batch["pos"], batch["verdict"]):
                    rows[int(c)].append({"pos": int(pos), "verdict": str(verdict)})
                    waiting[int(c)] -= 1
                    if waiting[int(c)] == 0:
                        checkpoint.write_chunk(int(c), sorted(rows.pop(int(c)), key=lambda r: r["pos"]))
                        if progress:
                            progress(len(chunks[int(c)]))
    for c in range(len(chunks)):
        for row in checkpoint.read_chunk(c):
            yield Verdict.from_dict(json.loads(row["verdict"]))


def _absolute(index_dir: str | Path) -> str:
    """A FAISS folder as an absolute path (actors run in another working directory); an index
    URL (``milvus://...``, ``milvus-lite:...``) as given."""
    return os.path.abspath(index_dir) if Path(index_dir).is_dir() else str(index_dir)
