"""The descriptor vote's index on disk: RootSIFT descriptors of every reference, kept beside
the reference index and memory-mapped by the scorer.

In memory (:class:`~detector.local_search.LocalFeatureIndex`) the vote costs ~27 MB of RAM per
1,000 logos and is rebuilt (blobs decoded, k-means trained) for every index generation:
at 100,000 logos that is gigabytes of heap and minutes per new generation. Here the
descriptors are kept as a FAISS ``IVF<lists>,SQ8`` index (128 bytes a descriptor, plus 8 for
its id) in ``<index>/descriptors/``:

* ``trained.faiss``: the empty trained index (coarse centroids, SQ8 ranges);
* ``segment-<n>.faiss`` + ``segment-<n>.refs.npy``: descriptors added by one sync, and the
  ids of the references that sync covered (with or without descriptors);
* ``manifest.json``: the segments in use. Every file is written atomically (temp file,
  fsync, rename) and the manifest last, so an interrupted sync leaves the previous manifest
  valid (a stray segment it did not name is deleted by the next sync).

A descriptor's FAISS id is ``ref_id << 16 | row``: the owner for the vote and the identity
for "each reference descriptor counts once". Removed references stay in the segments and are
dropped at vote time (the scorer passes the live ids); a rebuild drops them for good.

:func:`sync_descriptor_store` (the writer, at the end of each indexing run) adds the
references the store does not cover yet, as one new segment; once more than
:data:`MAX_SEGMENTS` exist, all but the largest are merged into one.

The list count follows autofaiss's rule of thumb (about
4 sqrt(n) lists, a power of two, from 1,024) up to :data:`MAX_LISTS` (past it the search
grows linearly again: more lists need an HNSW coarse quantizer and a k-means this machine
cannot afford, see docs/scale.md) and is fixed when the store is trained; the store is
rebuilt, retrained, once the rule asks for 4x the lists it has (the library grew ~16x).
A library under :data:`STORE_FROM_REFERENCES` references keeps no store: the in-memory
vote is faster to build and exact there.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detector.errors import DetectorError
from detector.features import LocalFeatures
from detector.verify import root_sift
from index.atomic import atomic_write, atomic_write_json

log = logging.getLogger(__name__)

STORE_DIR = "descriptors"
MANIFEST = "manifest.json"
STORE_FROM_REFERENCES = 4_000  # ~200,000 descriptors at ~50 a logo
MAX_SEGMENTS = 8
MAX_LISTS = 4096  # k-means for more lists costs > 10 minutes on 2 shared cores (docs/scale.md)
ROW_BITS = 16  # descriptors per reference kept: at most 65,536
TRAIN_POINTS_PER_LIST = 40
DECODE_CHUNK = 2000  # references decoded per step


def descriptor_ids(ref_id: int, count: int) -> np.ndarray:
    """FAISS ids of a reference's ``count`` descriptors: ``ref_id << 16 | row``."""
    return (np.int64(ref_id) << ROW_BITS) | np.arange(count, dtype=np.int64)


def owners_of(ids: np.ndarray) -> np.ndarray:
    """The reference id of each descriptor id (-1 stays -1)."""
    return np.where(ids >= 0, ids >> ROW_BITS, -1)


def lists_for(descriptors: int) -> int:
    """Inverted lists for ``descriptors`` vectors: ~4 sqrt(n), a power of two, 1,024 to
    :data:`MAX_LISTS` (fewer when there are not :data:`TRAIN_POINTS_PER_LIST` descriptors a
    list to train on)."""
    target = 4.0 * np.sqrt(max(descriptors, 1))
    lists = int(min(MAX_LISTS, max(1_024, 2 ** round(np.log2(target)))))
    while lists > 1 and lists * TRAIN_POINTS_PER_LIST > descriptors:  # too few to train them: fewer
        lists //= 2
    return lists


def factory_for(lists: int) -> str:
    """The FAISS factory string for ``lists`` inverted lists."""
    return f"IVF{lists},SQ8"


@dataclass(frozen=True)
class StoreManifest:
    """What ``manifest.json`` names."""

    lists: int
    segments: tuple[str, ...]  # file stems: <stem>.faiss, <stem>.refs.npy
    descriptors: int
    trained_on: int  # descriptors in the library when trained (the retraining rule)
    next_segment: int

    def to_dict(self) -> dict[str, Any]:
        return {"format": 1, "lists": self.lists, "segments": list(self.segments), "descriptors": self.descriptors,
                "trained_on": self.trained_on, "next_segment": self.next_segment}


def read_manifest(folder: Path) -> StoreManifest | None:
    """The store's manifest, or None when there is no usable store."""
    try:
        data = json.loads((folder / MANIFEST).read_text())
        return StoreManifest(int(data["lists"]), tuple(data["segments"]), int(data["descriptors"]),
                             int(data["trained_on"]), int(data["next_segment"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("descriptor store %s: unreadable manifest, ignored (%s)", folder, e)
        return None


def covered_ids(folder: Path, manifest: StoreManifest) -> np.ndarray:
    """Ids of the references the store's segments cover (sorted)."""
    parts = [np.load(folder / f"{stem}.refs.npy") for stem in manifest.segments]
    return np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)


def open_segments(folder: Path, manifest: StoreManifest, nprobe: int) -> list[Any]:
    """The segments as FAISS indexes, inverted lists memory-mapped (page cache, not heap)."""
    import faiss

    segments = []
    for stem in manifest.segments:
        index = faiss.read_index(str(folder / f"{stem}.faiss"), faiss.IO_FLAG_MMAP)
        faiss.extract_index_ivf(index).nprobe = nprobe
        segments.append(index)
    return segments


@dataclass
class SyncReport:
    """What :func:`sync_descriptor_store` did."""

    added_references: int = 0
    added_descriptors: int = 0
    rebuilt: bool = False
    merged: bool = False
    store: bool = False  # a store exists after the sync


def _decode(index: Any, ref_ids: list[int]) -> Iterable[tuple[list[int], np.ndarray, np.ndarray]]:
    """(covered ref ids, RootSIFT descriptors, descriptor ids) per chunk of ``ref_ids``."""
    for start in range(0, len(ref_ids), DECODE_CHUNK):
        part = ref_ids[start : start + DECODE_CHUNK]
        descs, ids = [], []
        for rid, blob in index.get_aux(part).items():
            try:
                f = LocalFeatures.from_bytes(blob)
            except DetectorError:
                continue  # the scorer logs unreadable blobs; nothing to index
            if f.method != "sift" or not len(f):
                continue
            d = f.descriptors[: 1 << ROW_BITS]
            descs.append(root_sift(d))
            ids.append(descriptor_ids(rid, len(d)))
        if descs:
            yield part, np.concatenate(descs), np.concatenate(ids)
        else:
            yield part, np.zeros((0, 128), np.float32), np.zeros(0, np.int64)


def _write_faiss(index: Any, path: Path) -> None:
    import faiss

    atomic_write(path, lambda tmp: faiss.write_index(index, str(tmp)))


def _write_npy(array: np.ndarray, path: Path) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, array)

    atomic_write(path, write)


def sync_descriptor_store(index: Any, *, store_from: int = STORE_FROM_REFERENCES) -> SyncReport:
    """Bring ``<index>/descriptors/`` up to the index's references (the writer calls this
    after an indexing run's commits; it holds the index's writer lock, so there is one syncer at a time).

    Creates the store once the library holds ``store_from`` references, adds uncovered
    references as a new segment, merges segments past :data:`MAX_SEGMENTS`, and rebuilds it
    with more lists once the library outgrew them. An interrupted sync is resumed by the
    next one.
    """
    folder = Path(index.path) / STORE_DIR
    manifest = read_manifest(folder)
    all_ids = [r.id for r in index.references()]
    report = SyncReport()
    if manifest is not None:
        covered = set(covered_ids(folder, manifest).tolist())
        missing = [rid for rid in all_ids if rid not in covered]
        if not missing:
            report.store = True
            return report
        estimate = manifest.descriptors * (1 + len(missing) / max(len(covered), 1))
        if lists_for(int(estimate)) >= 4 * manifest.lists:  # the library outgrew its lists
            _rebuild(index, folder, all_ids, report)
            return report
        _add_segment(index, folder, manifest, missing, report)
        return report
    if len(all_ids) >= store_from:  # counted in references: counting descriptors means decoding all
        _rebuild(index, folder, all_ids, report)
    return report


def _rebuild(index: Any, folder: Path, all_ids: list[int], report: SyncReport) -> None:
    """Train a new store on the whole library in a fresh folder, then swap it in."""
    import faiss

    fresh = folder.with_name(f"{STORE_DIR}.building")
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir(parents=True)
    total, sample = _count_and_sample(index, all_ids)
    lists = lists_for(total)
    wanted = lists * TRAIN_POINTS_PER_LIST
    if len(sample) > wanted:
        sample = sample[np.random.default_rng(0).choice(len(sample), wanted, replace=False)]
    while lists > 1 and 8 * lists > len(sample):  # the first chunk misled the sampling rate
        lists //= 2
    trained = faiss.index_factory(128, factory_for(lists))
    ivf = faiss.extract_index_ivf(trained)
    ivf.cp.niter = 10  # k-means iterations: the vote needs coarse cells, not optimal ones
    trained.train(sample)
    _write_faiss(trained, fresh / "trained.faiss")
    empty = StoreManifest(lists, (), 0, total, 0)
    atomic_write_json(fresh / MANIFEST, empty.to_dict())
    _add_segment(index, fresh, empty, all_ids, report)
    old = folder.with_name(f"{STORE_DIR}.old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(fresh, folder)  # a crash between the renames leaves no store: the next sync rebuilds
    shutil.rmtree(old, ignore_errors=True)
    report.rebuilt = True
    log.info("descriptor store %s: built with %d lists on %d descriptors", folder, lists, total)


def _count_and_sample(index: Any, all_ids: list[int]) -> tuple[int, np.ndarray]:
    """The library's descriptor count and a sample spread over it, in one decoding pass (the
    sampling rate from the first chunk: twice what the lists for its estimate need)."""
    rng = np.random.default_rng(0)
    total, parts, keep = 0, [], 1.0
    for i, (part, descs, _) in enumerate(_decode(index, all_ids)):
        if i == 0:
            estimate = len(descs) / max(len(part), 1) * len(all_ids)
            keep = min(1.0, 2 * lists_for(int(estimate)) * TRAIN_POINTS_PER_LIST / max(estimate, 1.0))
        total += len(descs)
        parts.append(descs[rng.random(len(descs)) < keep])
    sample = np.concatenate(parts) if parts else np.zeros((0, 128), np.float32)
    return total, np.ascontiguousarray(sample, dtype=np.float32)


def _add_segment(index: Any, folder: Path, manifest: StoreManifest, ref_ids: list[int], report: SyncReport) -> None:
    import faiss

    segment = faiss.read_index(str(folder / "trained.faiss"))
    for _, descs, ids in _decode(index, ref_ids):
        if len(ids):
            segment.add_with_ids(descs, ids)
    stem = f"segment-{manifest.next_segment:06d}"
    _write_faiss(segment, folder / f"{stem}.faiss")
    _write_npy(np.asarray(sorted(ref_ids), dtype=np.int64), folder / f"{stem}.refs.npy")
    updated = StoreManifest(manifest.lists, (*manifest.segments, stem), manifest.descriptors + int(segment.ntotal),
                            manifest.trained_on, manifest.next_segment + 1)
    if len(updated.segments) > MAX_SEGMENTS:
        updated = _merge(folder, updated)
        report.merged = True
    atomic_write_json(folder / MANIFEST, updated.to_dict())
    _remove_unnamed(folder, updated)
    report.added_references += len(ref_ids)
    report.added_descriptors += int(segment.ntotal)
    report.store = True


def _merge(folder: Path, manifest: StoreManifest) -> StoreManifest:
    """The segments but the largest merged into one (written before the manifest names it):
    each merge rewrites the recent additions, not the whole store."""
    import faiss

    largest = max(manifest.segments, key=lambda stem: (folder / f"{stem}.faiss").stat().st_size)
    rest = [stem for stem in manifest.segments if stem != largest]
    merged = faiss.read_index(str(folder / "trained.faiss"))
    ivf = faiss.extract_index_ivf(merged)
    refs = []
    for stem in rest:
        part = faiss.read_index(str(folder / f"{stem}.faiss"))
        ivf.merge_from(faiss.extract_index_ivf(part), 0)
        refs.append(np.load(folder / f"{stem}.refs.npy"))
    stem = f"segment-{manifest.next_segment:06d}"
    _write_faiss(merged, folder / f"{stem}.faiss")
    _write_npy(np.unique(np.concatenate(refs)), folder / f"{stem}.refs.npy")
    return StoreManifest(manifest.lists, (largest, stem), manifest.descriptors, manifest.trained_on,
                         manifest.next_segment + 1)


def _remove_unnamed(folder: Path, manifest: StoreManifest) -> None:
    """Segments the manifest no longer names (merged away, or left by an interrupted sync)."""
    named = set(manifest.segments)
    for path in folder.glob("segment-*"):
        if path.name.split(".")[0] not in named:
            path.unlink(missing_ok=True)
