"""A distributed job's checkpoint: finished chunks as Parquet files in a work directory.

A job's inputs are cut into numbered chunks. Each finished chunk is written once, atomically,
as ``chunk-NNNNNN.parquet``; an indexing job also records which chunks are committed into the
index (``committed.json``). A rerun of the same job (same inputs, hence the same key and folder)
reads finished chunks back instead of computing them again and skips committed ones.

Nothing here imports Ray: the driver reads and writes the checkpoint itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from index.atomic import atomic_write_bytes, atomic_write_json

_COMMITTED = "committed.json"


def job_key(description: dict[str, Any]) -> str:
    """A short, stable name for a job: the hash of everything that decides its results."""
    text = json.dumps(description, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class ChunkCheckpoint:
    """The work folder of one job (``work_dir/<kind>-<key>``).

    Args:
        work_dir: Where jobs keep their folders.
        kind: ``"index"`` or ``"score"``: part of the folder name.
        description: What decides the job's results (inputs, model, options); its hash is the key.
    """

    def __init__(self, work_dir: str | Path, kind: str, description: dict[str, Any]) -> None:
        self.key = job_key({"kind": kind, **description})
        self.folder = Path(work_dir) / f"{kind}-{self.key}"
        self.folder.mkdir(parents=True, exist_ok=True)

    def chunk_path(self, chunk: int) -> Path:
        return self.folder / f"chunk-{chunk:06d}.parquet"

    def finished(self, chunk: int) -> bool:
        return self.chunk_path(chunk).is_file()

    def write_chunk(self, chunk: int, rows: Sequence[dict[str, Any]]) -> None:
        """Write a finished chunk's rows (all with the same columns) atomically."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(list(rows)), buffer)
        atomic_write_bytes(self.chunk_path(chunk), buffer.getvalue())

    def read_chunk(self, chunk: int) -> list[dict[str, Any]]:
        import pyarrow.parquet as pq

        return pq.read_table(self.chunk_path(chunk)).to_pylist()

    def committed(self) -> set[int]:
        """Chunks already committed into the index (indexing jobs)."""
        path = self.folder / _COMMITTED
        if not path.is_file():
            return set()
        return {int(c) for c in json.loads(path.read_text(encoding="utf-8"))["chunks"]}

    def mark_committed(self, chunks: set[int]) -> None:
        atomic_write_json(self.folder / _COMMITTED, {"chunks": sorted(chunks)})

    def remove(self) -> None:
        """Delete the job's folder (a finished indexing job), and the work folder once empty."""
        shutil.rmtree(self.folder, ignore_errors=True)
        with contextlib.suppress(OSError):  # other jobs' folders are still there
            self.folder.parent.rmdir()
