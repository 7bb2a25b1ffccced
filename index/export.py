"""The export folder: writing an index's records and vectors to it, and reading them back.

An export folder holds ``export.json`` (format, fingerprint, factory, counts), ``records.jsonl``
(one record per line with its row range in the vectors file and aux as base64) and
``vectors.npy`` (float32, ``(total vectors, dim)``). No pickle, so exports from untrusted
sources are safe to read.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np

from index.atomic import atomic_write_json, fsync_dir, fsync_path
from index.catalog import Catalog
from index.errors import IndexCorruptError, IndexExistsError, IndexMismatchError
from index.records import Fingerprint, NewReference, Reference, utc_now

EXPORT_FORMAT = "counterfeit-detector/reference-export"


def write_export(
    dest: str | os.PathLike[str],
    read_view: Callable[[], AbstractContextManager[Catalog]],
    *,
    fingerprint: Fingerprint,
    dim: int,
    metric: str,
) -> int:
    """Write a new export folder at ``dest``; returns the number of references exported.

    Args:
        dest: Folder to create.
        read_view: Opens the index's catalog in one read transaction, so the whole export is
            one consistent snapshot.
        fingerprint, dim, metric: The index's, recorded in ``export.json``.

    Raises:
        IndexExistsError: ``dest`` already exists.
    """
    dest = Path(dest)
    if dest.exists():
        raise IndexExistsError(f"{dest} already exists; export writes a new folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Written in a hidden sibling and renamed: a crash mid-export leaves no half export at dest.
    tmp = dest.parent / f".{dest.name}.exporting-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        with read_view() as catalog:
            count, meta = _write_export_files(catalog, tmp, dim)
        for name in ("records.jsonl", "vectors.npy"):
            fsync_path(tmp / name)
        atomic_write_json(tmp / "export.json", {
            "format": EXPORT_FORMAT, "version": 1, "fingerprint": fingerprint.to_dict(),
            "dim": dim, "factory": meta["factory"], "metric": metric, "count": count,
            "vectors": int(meta["vectors"]), "generation": int(meta["generation"]),
            "exported_at": utc_now(),
        })  # fmt: skip
        os.rename(tmp, dest)
        fsync_dir(dest.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return count


def _write_export_files(catalog: Catalog, folder: Path, dim: int) -> tuple[int, dict[str, Any]]:
    meta = catalog.meta()
    total = int(meta["vectors"])
    out = np.lib.format.open_memmap(folder / "vectors.npy", mode="w+", dtype=np.float32,
                                    shape=(total, dim))  # fmt: skip
    offset = count = 0
    with open(folder / "records.jsonl", "w", encoding="utf-8") as f:
        batch: list[Reference] = []
        for ref in catalog.iter_references():
            batch.append(ref)
            if len(batch) == 1000:
                offset = _export_batch(catalog, batch, f, out, offset, dim)
                count += len(batch)
                batch = []
        if batch:
            offset = _export_batch(catalog, batch, f, out, offset, dim)
            count += len(batch)
    out.flush()
    del out
    if offset != total:
        raise IndexCorruptError(f"exported {offset} vectors but the index records {total}")
    return count, meta


def _export_batch(
    catalog: Catalog, refs: list[Reference], f: Any, out: np.ndarray, offset: int, dim: int
) -> int:
    ids = [r.id for r in refs]
    vectors = catalog.get_vectors(ids, dim)
    aux = catalog.get_aux(ids)
    for ref in refs:
        v = vectors[ref.id]
        out[offset : offset + len(v)] = v
        line = {**ref.to_dict(), "vector_offset": offset, "n_vectors": len(v),
                "aux_b64": base64.b64encode(aux[ref.id]).decode() if ref.id in aux else None}  # fmt: skip
        f.write(json.dumps(line, sort_keys=True) + "\n")
        offset += len(v)
    return offset


def load_export(
    src: str | os.PathLike[str], fingerprint: Fingerprint
) -> tuple[list[NewReference], list[np.ndarray], list[bytes | None], list[str]]:
    """The references of an export folder as the index's add takes them.

    Returns:
        ``(references, vectors, aux, added_at)``, one entry per exported record, in export order.

    Raises:
        IndexMismatchError: The export was made with a model other than ``fingerprint``'s.
        IndexCorruptError: ``src`` is not a readable export.
    """
    meta, records, vectors = read_export(Path(src))
    exported = Fingerprint.from_dict(meta["fingerprint"])
    if not exported.is_compatible(fingerprint):
        raise IndexMismatchError(
            f"export {src} was made with another model ({exported.describe_difference(fingerprint)}; "
            "export != index); re-embed its references with this index's model"
        )
    refs, mats, aux, added_at = [], [], [], []
    for n, rec in enumerate(records):
        try:
            refs.append(NewReference(brand=rec["brand"], sha256=rec["sha256"], source=rec["source"],
                                     kind=rec["kind"], product_id=rec["product_id"],
                                     attributes=rec["attributes"]))  # fmt: skip
            off, cnt = int(rec["vector_offset"]), int(rec["n_vectors"])
            aux.append(base64.b64decode(rec["aux_b64"]) if rec.get("aux_b64") else None)
            added_at.append(str(rec["added_at"]))
        except (KeyError, TypeError, ValueError) as e:
            raise IndexCorruptError(f"{src}/records.jsonl line {n + 1} is not a valid record: {e}") from e
        if cnt < 1 or off < 0 or off + cnt > len(vectors):
            raise IndexCorruptError(f"{src}/records.jsonl line {n + 1}: vector rows out of range")
        mats.append(np.asarray(vectors[off : off + cnt]))
    return refs, mats, aux, added_at


def read_export(src: Path) -> tuple[dict[str, Any], list[dict[str, Any]], np.ndarray]:
    """``export.json``, the records and the memory-mapped vectors of an export folder.

    Raises:
        IndexCorruptError: ``src`` is not a readable export.
    """
    try:
        meta = json.loads((src / "export.json").read_text())
        if meta.get("format") != EXPORT_FORMAT:
            raise ValueError(f"format is {meta.get('format')!r}, expected {EXPORT_FORMAT!r}")
        vectors = np.load(src / "vectors.npy", mmap_mode="r", allow_pickle=False)
        with open(src / "records.jsonl", encoding="utf-8") as f:
            records = [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError, KeyError) as e:
        raise IndexCorruptError(f"{src} is not a readable reference export: {e}") from e
    if vectors.dtype != np.float32 or vectors.ndim != 2 or vectors.shape[1] != int(meta["dim"]):
        raise IndexCorruptError(f"{src}/vectors.npy is {vectors.dtype}{vectors.shape}, expected float32 (n, {meta['dim']})")
    return meta, records, vectors
