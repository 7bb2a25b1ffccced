"""The descriptor vote's index on disk: RootSIFT descriptors of every reference, kept beside
the reference index and memory-mapped by the scorer.

In memory (:class:`~detector.local_search.LocalFeatureIndex`) the vote costs ~27 MB of RAM per
1,000 logos and is rebuilt (blobs decoded, k-means trained) for every index generation:
at 100,000 logos that is gigabytes of heap and minutes per new generation. Here the
descriptors are kept as a FAISS ``IVF<lists>,<code>`` index in ``<index>/descriptors/``. The
code is the most accurate of :data:`CODES` whose store fits the indexing run's memory budget
(``--memory-budget``, as for the embedding index's factory), chosen at each (re)build: 128-byte
SQ8 codes (plus 8 for the id) while they fit, then product-quantised ones. A scorer whose
memory cannot hold the store reads it from disk at every search: at 1,000,000 logos in an 8 GiB
container the SQ8 store (12 GB) took 9 s a listing, against 0.3 s with the memory to cache it
(docs/scale.md). The files:

* ``trained.faiss``: the empty trained index (coarse quantizer, code book);
* ``segment-<n>.ivl`` + ``segment-<n>.refs.npy``: the inverted lists of descriptors added by
  one sync, and the ids of the references that file covers (with or without descriptors). A
  sync with more than :data:`SEGMENT_BYTES` makes several, each holding a range of
  lists whole (a search reads a list from one file);
* ``manifest.json``: the segments in use. Every file is written atomically (temp file,
  fsync, rename) and the manifest last, so an interrupted sync leaves the previous manifest
  valid (a stray segment it did not name is deleted by the next sync).

The scorer searches all segments as one index (:func:`open_store`): one coarse quantizer,
each probed list read from the one list-range segment that holds it and from every other
segment's memory-mapped file (faiss's ``VStackInvertedLists`` and ``HStackInvertedLists``), so
more segments do not mean more quantizer searches.

A descriptor's FAISS id is ``ref_id << 16 | row``: the owner for the vote and the identity
for "each reference descriptor counts once". Removed references stay in the segments and are
dropped at vote time (the scorer passes the live ids); a rebuild drops them for good.

:func:`sync_descriptor_store` (the writer, at the end of each indexing run) adds the
references the store does not cover yet as new segments; once more than :data:`MAX_SEGMENTS`
segments are under :data:`FULL_SEGMENT_BYTES`, all of those but the largest are merged.

Lists grow with the library, about :data:`LIST_SIZE` descriptors each (a power of two, from
1,024 to :data:`MAX_LISTS`), so what one search scans (``nprobe`` lists) stays the same size
as the library grows; past :data:`HNSW_QUANTIZER_FROM_LISTS` lists the coarse quantizer is an
HNSW graph (finding the probed lists stays logarithmic) trained by a two-level k-means
(:mod:`index.kmeans`). The count is fixed when the store is trained; the store is rebuilt,
retrained, once the rule asks for twice the lists it has (the library doubled: a list holds
0.7-2.8x :data:`LIST_SIZE`, and the rebuilds of a growing library add up to less than twice
its final size). A library under
:data:`STORE_FROM_REFERENCES` references keeps no store: the in-memory vote is faster to
build and exact there.
"""

from __future__ import annotations

import itertools
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
from detector.index_factory import DEFAULT_MEMORY_BUDGET
from detector.verify import root_sift
from index.atomic import atomic_write, atomic_write_json
from index.kmeans import KMEANS_ITERATIONS, two_level_centroids

log = logging.getLogger(__name__)

STORE_DIR = "descriptors"
MANIFEST = "manifest.json"
STORE_FROM_REFERENCES = 4_000  # ~200,000 descriptors at ~50 a logo
MANIFEST_FORMAT = 2  # 1: one whole faiss index a segment, each searched with its own quantizer
MAX_SEGMENTS = 8
# Bytes a sync's segment holds at most: what a writer holds in memory while it makes one. Every
# segment costs each probed list a lookup (~4 ms a listing a segment on 380,000 logos,
# docs/scale.md), so few large ones: 3 SQ8 segments at 1M logos.
SEGMENT_BYTES = 32_000_000 * (128 + 8)
FULL_SEGMENT_BYTES = SEGMENT_BYTES // 2  # a segment at least half full is never merged
ID_BYTES = 8
# (faiss code, bytes a descriptor), most accurate first. On the scale benchmark's 10,000 logos
# (935,000 descriptors, its 60 listings; docs/scale.md) the vote's first reference was an exact
# search's for 92 % of listings with SQ8 (as uncompressed), 90 % with PQ64, 85 % with PQ32 and
# 77 % with PQ16 (left out); the 60 verdicts were the same with SQ8 and PQ32.
CODES: tuple[tuple[str, int], ...] = (("SQ8", 128), ("PQ64", 64), ("PQ32", 32))
LIST_SIZE = 256  # descriptors a list holds on average: a search's scan stays nprobe * 256
MIN_LISTS = 1_024
MAX_LISTS = 262_144
HNSW_QUANTIZER_FROM_LISTS = 8_192  # below, an exact quantizer search is cheaper than a graph's
ROW_BITS = 16  # descriptors per reference kept: at most 65,536
TRAIN_POINTS_PER_LIST = 40
TRAIN_SAMPLE_MAX = 2_000_000  # descriptors (1 GB of float32): past it fewer points a list
DECODE_CHUNK = 2000  # references decoded per step
SEGMENT_SUFFIX = ".ivl"


def descriptor_ids(ref_id: int, count: int) -> np.ndarray:
    """FAISS ids of a reference's ``count`` descriptors: ``ref_id << 16 | row``."""
    return (np.int64(ref_id) << ROW_BITS) | np.arange(count, dtype=np.int64)


def owners_of(ids: np.ndarray) -> np.ndarray:
    """The reference id of each descriptor id (-1 stays -1)."""
    return np.where(ids >= 0, ids >> ROW_BITS, -1)


def lists_for(descriptors: int) -> int:
    """Inverted lists for ``descriptors`` vectors: ~n / :data:`LIST_SIZE`, a power of two,
    :data:`MIN_LISTS` to :data:`MAX_LISTS` (fewer when there are not
    :data:`TRAIN_POINTS_PER_LIST` descriptors a list to train on)."""
    target = max(descriptors, 1) / LIST_SIZE
    lists = int(min(MAX_LISTS, max(MIN_LISTS, 2 ** round(np.log2(target)))))
    while lists > 1 and lists * TRAIN_POINTS_PER_LIST > descriptors:  # too few to train them: fewer
        lists //= 2
    return lists


def training_points(lists: int) -> int:
    """Descriptors the store's training takes for ``lists`` lists."""
    return min(lists * TRAIN_POINTS_PER_LIST, TRAIN_SAMPLE_MAX)


def code_for(descriptors: int, memory_budget: int) -> str:
    """The most accurate of :data:`CODES` whose store of ``descriptors`` fits ``memory_budget``
    bytes (the smallest when none does)."""
    for code, size in CODES:
        if descriptors * (size + ID_BYTES) <= memory_budget:
            return code
    return CODES[-1][0]


def store_bytes(descriptors: int, memory_budget: int) -> int:
    """The size of a store of ``descriptors`` built for ``memory_budget``: codes and ids."""
    return descriptors * (dict(CODES)[code_for(descriptors, memory_budget)] + ID_BYTES)


def factory_for(lists: int, code: str = CODES[0][0]) -> str:
    """The FAISS factory string for ``lists`` inverted lists of ``code``."""
    quantizer = "_HNSW32" if lists >= HNSW_QUANTIZER_FROM_LISTS else ""
    return f"IVF{lists}{quantizer},{code}"


@dataclass(frozen=True)
class StoreManifest:
    """What ``manifest.json`` names."""

    lists: int
    segments: tuple[str, ...]  # file stems: <stem>.faiss, <stem>.refs.npy
    descriptors: int
    trained_on: int  # descriptors in the library when trained (the retraining rule)
    next_segment: int
    # (stem, first list, end list) of the segments that hold a range of lists whole, in the order
    # one sync wrote them (their ranges tile 0..lists); the other segments hold any list.
    list_ranges: tuple[tuple[str, int, int], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"format": MANIFEST_FORMAT, "lists": self.lists, "segments": list(self.segments),
                "descriptors": self.descriptors, "trained_on": self.trained_on, "next_segment": self.next_segment,
                "list_ranges": [list(r) for r in self.list_ranges]}


def read_manifest(folder: Path) -> StoreManifest | None:
    """The store's manifest, or None when there is no usable store."""
    try:
        data = json.loads((folder / MANIFEST).read_text())
        if data.get("format") != MANIFEST_FORMAT:
            log.warning("descriptor store %s: format %s, not %d; the next indexing run rebuilds it",
                        folder, data.get("format"), MANIFEST_FORMAT)
            return None
        ranges = tuple((str(stem), int(low), int(high)) for stem, low, high in data.get("list_ranges", []))
        return StoreManifest(int(data["lists"]), tuple(data["segments"]), int(data["descriptors"]),
                             int(data["trained_on"]), int(data["next_segment"]), ranges)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("descriptor store %s: unreadable manifest, ignored (%s)", folder, e)
        return None


def covered_ids(folder: Path, manifest: StoreManifest) -> np.ndarray:
    """Ids of the references the store's segments cover (sorted)."""
    parts = [np.load(folder / f"{stem}.refs.npy") for stem in manifest.segments]
    return np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)


@dataclass
class OpenStore:
    """The store's segments searchable as one faiss index (``index``); ``parts`` keeps the
    memory-mapped lists alive for as long as the index is used."""

    index: Any
    parts: list[Any]


def open_store(folder: Path, manifest: StoreManifest, nprobe: int) -> OpenStore:
    """The trained index with every segment's lists stacked under it, memory-mapped (page
    cache, not heap)."""
    import faiss

    index = faiss.read_index(str(folder / "trained.faiss"))
    ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    parts: list[Any] = []
    if manifest.segments:
        ivf.replace_invlists(_stacked_lists(folder, manifest, parts), False)
        ivf.ntotal = index.ntotal = manifest.descriptors
    ivf.nprobe = nprobe
    if isinstance(ivf, faiss.IndexIVFPQ):  # a compact store keeps no per-list tables (up to 2 GB of heap)
        ivf.use_precomputed_table = -1
        ivf.precompute_table()
    quantizer = faiss.downcast_index(ivf.quantizer)
    if isinstance(quantizer, faiss.IndexHNSW):
        quantizer.hnsw.efSearch = max(2 * nprobe, 16)  # autofaiss's rule
    return OpenStore(index, parts)


def _stacked_lists(folder: Path, manifest: StoreManifest, keep: list[Any]) -> Any:
    """The segments' lists as one ``InvertedLists``, memory-mapped. A sync's list-range
    segments are chained end to end (``VStackInvertedLists`` of ``SliceInvertedLists``), so a
    probed list is read from the one file that holds it; that chain and every other segment
    are stacked side by side (``HStackInvertedLists``: each probed list looked up in each).
    ``keep`` receives every object the result points into (faiss does not own them)."""
    import faiss

    ranges = {stem: (low, high) for stem, low, high in manifest.list_ranges}
    columns: list[Any] = []
    chain: list[tuple[Any, int, int]] = []

    def close_chain() -> None:
        tiled = [low for _, low, _ in chain] == [0, *(high for _, _, high in chain[:-1])] \
            and chain[-1][2] == manifest.lists
        if tiled:
            slices = [faiss.SliceInvertedLists(lists, low, high) for lists, low, high in chain]
            columns.append(_stack(faiss.VStackInvertedLists, slices, keep))
        else:  # not a whole sync's ranges (never written so): each segment on its own
            columns.extend(lists for lists, _, _ in chain)
        chain.clear()

    for stem in manifest.segments:
        lists = _read_lists(folder / f"{stem}{SEGMENT_SUFFIX}", mmap=True)
        keep.append(lists)
        if stem not in ranges:
            columns.append(lists)
            continue
        low, high = ranges[stem]
        if chain and low == 0:
            close_chain()
        chain.append((lists, low, high))
    if chain:
        close_chain()
    return columns[0] if len(columns) == 1 else _stack(faiss.HStackInvertedLists, columns, keep)


def _stack(kind: Any, parts: list[Any], keep: list[Any]) -> Any:
    import faiss

    pointers = faiss.InvertedListsPtrVector()
    for part in parts:
        pointers.push_back(part)
    stacked = kind(pointers.size(), pointers.data())
    keep.extend([*parts, pointers, stacked])
    return stacked


def _read_lists(path: Path, *, mmap: bool) -> Any:
    import faiss

    reader = faiss.FileIOReader(str(path))
    return faiss.read_InvertedLists(reader, faiss.IO_FLAG_MMAP if mmap else 0)


@dataclass
class SyncReport:
    """What :func:`sync_descriptor_store` did."""

    added_references: int = 0
    added_descriptors: int = 0
    rebuilt: bool = False
    merged: bool = False
    store: bool = False  # a store exists after the sync


def _decode(index: Any, ref_ids: list[int], stage: str) -> Iterable[tuple[list[int], np.ndarray, np.ndarray]]:
    """(covered ref ids, RootSIFT descriptors, descriptor ids) per chunk of ``ref_ids``; logs
    ``stage``'s progress every tenth of the way (a pass over 1M logos takes minutes)."""
    step = max(DECODE_CHUNK, len(ref_ids) // 10)
    for start in range(0, len(ref_ids), DECODE_CHUNK):
        if start and start // step != (start - DECODE_CHUNK) // step:
            log.info("descriptor store: %s, %s of %s references", stage, f"{start:,}", f"{len(ref_ids):,}")
        part = ref_ids[start : start + DECODE_CHUNK]
        descs, ids = [], []
        for rid, blob in index.get_aux(part).items():
            try:
                sift = LocalFeatures.sift_descriptors_from_bytes(blob)
            except DetectorError:
                continue  # the scorer logs unreadable blobs; nothing to index
            if sift is None or not len(sift):
                continue
            d = sift[: 1 << ROW_BITS]
            descs.append(root_sift(d))
            ids.append(descriptor_ids(rid, len(d)))
        if descs:
            yield part, np.concatenate(descs), np.concatenate(ids)
        else:
            yield part, np.zeros((0, 128), np.float32), np.zeros(0, np.int64)


def _write_faiss(index: Any, path: Path) -> None:
    import faiss

    atomic_write(path, lambda tmp: faiss.write_index(index, str(tmp)))


def _write_lists(lists: Any, path: Path) -> None:
    import faiss

    def write(tmp: Path) -> None:
        writer = faiss.FileIOWriter(str(tmp))
        faiss.write_InvertedLists(lists, writer)
        del writer  # closes the file before atomic_write syncs and renames it

    atomic_write(path, write)


def _write_npy(array: np.ndarray, path: Path) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, array)

    atomic_write(path, write)


def sync_descriptor_store(index: Any, *, store_from: int = STORE_FROM_REFERENCES,
                          memory_budget: int = DEFAULT_MEMORY_BUDGET) -> SyncReport:
    """Bring ``<index>/descriptors/`` up to the index's references (the writer calls this
    after an indexing run's commits; it holds the index's writer lock, so there is one syncer at a time).

    Creates the store once the library holds ``store_from`` references, adds uncovered
    references as a new segment, merges segments past :data:`MAX_SEGMENTS`, and rebuilds it
    with more lists once the library outgrew them, its code chosen for ``memory_budget``
    bytes (:func:`code_for`). An interrupted sync is resumed by the next one.
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
        if lists_for(int(estimate)) > 1.5 * manifest.lists:  # the rule asks for the next power of two
            _rebuild(index, folder, all_ids, report, memory_budget)
            return report
        _add_segment(index, folder, manifest, missing, report)
        return report
    if len(all_ids) >= store_from:  # counted in references: counting descriptors means decoding all
        _rebuild(index, folder, all_ids, report, memory_budget)
    return report


def _rebuild(index: Any, folder: Path, all_ids: list[int], report: SyncReport, memory_budget: int) -> None:
    """Train a new store on the whole library in a fresh folder, then swap it in."""
    log.info("descriptor store: building it over %s references (two passes over their descriptors)",
             f"{len(all_ids):,}")
    fresh = folder.with_name(f"{STORE_DIR}.building")
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir(parents=True)
    total, sample = _count_and_sample(index, all_ids)
    lists = lists_for(total)
    wanted = training_points(lists)
    if len(sample) > wanted:
        sample = sample[np.random.default_rng(0).choice(len(sample), wanted, replace=False)]
    while lists > 1 and 8 * lists > len(sample):  # the first chunk misled the sampling rate
        lists //= 2
    code = code_for(total, memory_budget)
    log.info("descriptor store: training %s lists of %s codes on %s descriptors (%s in all: %.1f GB)", f"{lists:,}",
             code, f"{len(sample):,}", f"{total:,}", store_bytes(total, memory_budget) / 1e9)
    trained = _train(sample, lists, code)
    _write_faiss(trained, fresh / "trained.faiss")
    empty = StoreManifest(int(trained.nlist), (), 0, total, 0)
    atomic_write_json(fresh / MANIFEST, empty.to_dict())
    _add_segment(index, fresh, empty, all_ids, report)
    old = folder.with_name(f"{STORE_DIR}.old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(fresh, folder)  # a crash between the renames leaves no store: the next sync rebuilds
    shutil.rmtree(old, ignore_errors=True)
    report.rebuilt = True
    log.info("descriptor store %s: built with %d lists on %d descriptors", folder, trained.nlist, total)


def _train(sample: np.ndarray, lists: int, code: str) -> Any:
    """An empty ``IVF,<code>`` index trained on ``sample``: k-means for its lists (two-level
    past :data:`HNSW_QUANTIZER_FROM_LISTS`, into an HNSW quantizer), then the code book."""
    import faiss

    trained = faiss.index_factory(128, factory_for(lists, code))
    ivf = faiss.extract_index_ivf(trained)
    if lists < HNSW_QUANTIZER_FROM_LISTS:
        ivf.cp.niter = KMEANS_ITERATIONS
    else:
        # No full k-means iterations after the two levels: one would cost ~45 minutes at 262,144
        # lists and 2M descriptors here (estimated, docs/scale.md). The quantizer holds its
        # centroids, so train() below fits the code book alone.
        ivf.quantizer.add(two_level_centroids(sample, lists, refine=0))
    trained.train(sample)
    return trained


def _count_and_sample(index: Any, all_ids: list[int]) -> tuple[int, np.ndarray]:
    """The library's descriptor count and a sample spread over it, in one decoding pass (the
    sampling rate from the first chunk: twice what the lists for its estimate need)."""
    rng = np.random.default_rng(0)
    total, parts, keep = 0, [], 1.0
    for i, (part, descs, _) in enumerate(_decode(index, all_ids, "counting and sampling")):
        if i == 0:
            estimate = len(descs) / max(len(part), 1) * len(all_ids)
            keep = min(1.0, 2 * training_points(lists_for(int(estimate))) / max(estimate, 1.0))
        total += len(descs)
        parts.append(descs[rng.random(len(descs)) < keep])
    sample = np.concatenate(parts) if parts else np.zeros((0, 128), np.float32)
    return total, np.ascontiguousarray(sample, dtype=np.float32)


def _add_segment(index: Any, folder: Path, manifest: StoreManifest, ref_ids: list[int], report: SyncReport) -> None:
    """Add ``ref_ids``' descriptors as new segments (a new one every :data:`SEGMENT_BYTES`),
    then name them all in the manifest at once."""
    import faiss

    stems: list[str] = []
    added = 0
    segment, covered = None, []
    next_segment = manifest.next_segment

    def write() -> None:
        nonlocal segment, covered, next_segment
        stems.append(_write_segment(folder, next_segment, faiss.extract_index_ivf(segment).invlists, covered))
        next_segment += 1
        segment, covered = None, []

    for part, descs, ids in _decode(index, ref_ids, "adding"):
        if segment is None:
            segment = faiss.read_index(str(folder / "trained.faiss"))
        if len(ids):
            segment.add_with_ids(descs, ids)
            added += len(ids)
        covered += part
        if segment.ntotal * (faiss.extract_index_ivf(segment).code_size + ID_BYTES) >= SEGMENT_BYTES:
            write()
    if segment is not None:
        write()
    ranges: list[tuple[str, int, int]] = []
    if len(stems) > 1:
        ranges, next_segment = _by_list_ranges(folder, stems, next_segment)
        stems = [stem for stem, _, _ in ranges]
    updated = StoreManifest(manifest.lists, (*manifest.segments, *stems), manifest.descriptors + added,
                            manifest.trained_on, next_segment, (*manifest.list_ranges, *ranges))
    if _mergeable(folder, updated):
        updated = _merge(folder, updated)
        report.merged = True
    atomic_write_json(folder / MANIFEST, updated.to_dict())
    _remove_unnamed(folder, updated)
    report.added_references += len(ref_ids)
    report.added_descriptors += added
    report.store = True


def _by_list_ranges(folder: Path, stems: list[str], next_segment: int) -> tuple[list[tuple[str, int, int]], int]:
    """One sync's segments (each a slice of its references, with entries in every list)
    rewritten as as many segments that each hold a range of lists whole, so a search reads a
    probed list from one file, not from each: on 380,000 logos a search over five
    reference-sliced segments took 93-100 ms a listing, over five list-range ones 76-83 ms,
    over one 61-67 ms (docs/scale.md). Memory: one output segment at a time (the inputs are
    memory-mapped)."""
    import faiss

    parts = [_read_lists(folder / f"{stem}{SEGMENT_SUFFIX}", mmap=True) for stem in stems]
    refs = np.concatenate([np.load(folder / f"{stem}.refs.npy") for stem in stems])
    nlist, code_size = int(parts[0].nlist), int(parts[0].code_size)
    sizes = np.zeros(nlist, np.int64)
    for part in parts:
        sizes += np.fromiter((part.list_size(i) for i in range(nlist)), np.int64, nlist)
    cuts = np.searchsorted(np.cumsum(sizes), np.arange(1, len(stems)) * sizes.sum() / len(stems))
    edges = [0, *np.maximum.accumulate(cuts).tolist(), nlist]
    out = []
    for low, high in itertools.pairwise(edges):
        whole = faiss.ArrayInvertedLists(nlist, code_size)
        for part in parts:
            for i in range(low, high):
                n = part.list_size(i)
                if n:
                    whole.add_entries(i, n, part.get_ids(i), part.get_codes(i))
        out.append((_write_segment(folder, next_segment, whole, refs), low, high))
        next_segment += 1
    return out, next_segment  # the reference-sliced files go once the manifest no longer names them


def _write_segment(folder: Path, number: int, lists: Any, refs: Any) -> str:
    """Write segment ``number``: its inverted ``lists`` and the ids of the references it
    covers (sorted, once each); returns its stem."""
    stem = f"segment-{number:06d}"
    _write_lists(lists, folder / f"{stem}{SEGMENT_SUFFIX}")
    _write_npy(np.unique(np.asarray(refs, dtype=np.int64)), folder / f"{stem}.refs.npy")
    return stem


def _segment_bytes(folder: Path, stem: str) -> int:
    return (folder / f"{stem}{SEGMENT_SUFFIX}").stat().st_size


def _mergeable(folder: Path, manifest: StoreManifest) -> list[str]:
    """The segments a merge would combine: those under :data:`FULL_SEGMENT_BYTES` but the
    largest of them, once more than :data:`MAX_SEGMENTS` are under it (none otherwise)."""
    small = [stem for stem in manifest.segments if _segment_bytes(folder, stem) < FULL_SEGMENT_BYTES]
    if len(small) <= MAX_SEGMENTS:
        return []
    largest = max(small, key=lambda stem: _segment_bytes(folder, stem))
    return [stem for stem in small if stem != largest]


def _merge(folder: Path, manifest: StoreManifest) -> StoreManifest:
    """The mergeable segments combined into one (written before the manifest names it): each
    merge rewrites the recent additions, not the whole store."""
    import faiss

    rest = _mergeable(folder, manifest)
    merged, refs = None, []
    for stem in rest:
        part = _read_lists(folder / f"{stem}{SEGMENT_SUFFIX}", mmap=False)
        if merged is None:
            merged = faiss.ArrayInvertedLists(part.nlist, part.code_size)
        merged.merge_from(part, 0)
        refs.append(np.load(folder / f"{stem}.refs.npy"))
    stem = _write_segment(folder, manifest.next_segment, merged, np.concatenate(refs))
    kept = tuple(s for s in manifest.segments if s not in rest)
    ranges = tuple(r for r in manifest.list_ranges if r[0] not in rest)
    return StoreManifest(manifest.lists, (*kept, stem), manifest.descriptors, manifest.trained_on,
                         manifest.next_segment + 1, ranges)


def _remove_unnamed(folder: Path, manifest: StoreManifest) -> None:
    """Segments the manifest no longer names (merged away, or left by an interrupted sync)."""
    named = set(manifest.segments)
    for path in folder.glob("segment-*"):
        if path.name.split(".")[0] not in named:
            path.unlink(missing_ok=True)
