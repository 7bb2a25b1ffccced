"""The faiss side of the reference index: build, train, remove, search parameters, file I/O.

Every index is ``index_factory(dim, factory, METRIC_INNER_PRODUCT)``, wrapped in an
``IndexIDMap`` unless it stores ids itself (IVF). The ids stored in faiss are *reference* ids, so
a reference with several vectors has several entries with the same id, and removal by reference
works with any factory that can remove. (IVF must not be wrapped: ``IndexIDMap.remove_ids``
compacts its id table, which only matches indexes that compact their storage the same way.)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from index.errors import IndexCorruptError, IndexTrainingError

METRIC = "inner_product"
BUILD_PARAM_KEYS = ("efConstruction",)


def set_threads(n: int) -> None:
    """Number of OpenMP threads faiss uses for search, add and training (process-wide)."""
    faiss.omp_set_num_threads(max(1, int(n)))


def build_index(factory: str, dim: int, build_params: Mapping[str, Any] | None = None) -> Any:
    """An empty id-mapped inner-product index for ``factory``.

    Raises:
        ValueError: Invalid factory string, a factory that brings its own id map, or unknown
            build parameters.
    """
    if not isinstance(factory, str) or not factory.strip():
        raise ValueError("factory must be a non-empty faiss factory string such as 'Flat' or 'HNSW32'")
    if factory.startswith("IDMap"):
        raise ValueError(f"factory {factory!r}: leave out 'IDMap', the index adds its own id map")
    try:
        inner = faiss.index_factory(int(dim), factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        raise ValueError(f"invalid faiss factory string {factory!r} for dim {dim}: {_last_line(e)}") from e
    for key, value in (build_params or {}).items():
        if key not in BUILD_PARAM_KEYS:
            raise ValueError(f"unknown build parameter {key!r}; supported: {BUILD_PARAM_KEYS}")
        hnsw = _find_hnsw(faiss.downcast_index(inner))
        if hnsw is None:
            raise ValueError(f"build parameter {key!r} needs an HNSW factory, not {factory!r}")
        hnsw.hnsw.efConstruction = int(value)
    if _stores_ids(faiss.downcast_index(inner)):
        return inner
    # faiss's Python layer keeps ``inner`` alive as long as the id map (referenced_objects).
    return faiss.IndexIDMap(inner)


def _without_transforms(idx: Any) -> Any:
    """The index behind any IndexPreTransform layers (PCA, OPQ...), downcast to its class."""
    while isinstance(idx, faiss.IndexPreTransform):
        idx = faiss.downcast_index(idx.index)
    return idx


def _stores_ids(idx: Any) -> bool:
    """True for indexes that keep arbitrary ids themselves (IVF, possibly behind a transform)."""
    return isinstance(_without_transforms(idx), faiss.IndexIVF)


def _find_hnsw(idx: Any) -> Any:
    core = _without_transforms(idx)
    return core if isinstance(core, faiss.IndexHNSW) else None


def inner_index(index: Any) -> Any:
    """The factory-built index (inside our id map if there is one), downcast to its class."""
    if isinstance(index, faiss.IndexIDMap):
        return faiss.downcast_index(index.index)
    return faiss.downcast_index(index)


def train_if_needed(index: Any, vectors: np.ndarray, factory: str) -> None:
    """Train an untrained, empty index on ``vectors`` (the first vectors added).

    Raises:
        IndexTrainingError: Training failed, typically too few vectors for the factory.
    """
    if index.is_trained:
        return
    try:
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        if not _train_in_two_levels(index, x):
            index.train(x)
    except (RuntimeError, ValueError) as e:
        raise IndexTrainingError(
            f"factory {factory!r} must be trained on the vectors of the first add(), and "
            f"{len(vectors)} vectors could not train it ({_last_line(e)}). Add more references in "
            "the first call (IVFn needs at least n vectors, PQ at least 256; ~40x that for good "
            "quality), or use a factory without training such as 'Flat' or 'HNSW32'."
        ) from e
    if not index.is_trained:
        raise IndexTrainingError(f"factory {factory!r} is still untrained after training")


TWO_LEVEL_FROM_LISTS = 4_096  # IVF lists from which the coarse k-means runs in two levels
OPQ_ITERATIONS = 10  # faiss's default 50 ran 25+ minutes for OPQ256 on 1,280-d here
PQ_ITERATIONS = 10  # faiss's default 25: the codes' errors are re-scored away (index.search.refine)


def _train_in_two_levels(index: Any, x: np.ndarray) -> bool:
    """Train an IVF of :data:`TWO_LEVEL_FROM_LISTS`+ lists (behind an OPQ or other transform)
    with a two-level coarse k-means (:mod:`index.kmeans`) and fewer OPQ/PQ iterations; False
    (nothing done) for any other index. For the 1M-reference auto choice (OPQ256, 8,192 lists,
    320,000 1,280-d vectors) faiss's own training was still in its OPQ after 35 CPU-minutes
    here, its k-means still to come (docs/scale.md)."""
    from index.kmeans import two_level_centroids

    top = faiss.downcast_index(index)
    core = _without_transforms(top)
    if not isinstance(core, faiss.IndexIVF) or core.nlist < TWO_LEVEL_FROM_LISTS or core.quantizer.ntotal:
        return False
    if isinstance(top, faiss.IndexPreTransform):
        if not isinstance(faiss.downcast_index(top.index), faiss.IndexIVF):
            return False  # nested transforms: faiss's own training
        for i in range(top.chain.size()):
            transform = faiss.downcast_VectorTransform(top.chain.at(i))
            if isinstance(transform, faiss.OPQMatrix):
                transform.niter = OPQ_ITERATIONS
            if not transform.is_trained:
                transform.train(x)
            x = transform.apply(x)
    spherical = core.metric_type == faiss.METRIC_INNER_PRODUCT  # faiss's IVF k-means does the same
    core.quantizer.add(two_level_centroids(x, core.nlist, spherical=spherical))
    if isinstance(core, faiss.IndexIVFPQ):
        core.pq.cp.niter = PQ_ITERATIONS
    core.train(x)  # the quantizer holds nlist centroids: this trains the codes alone
    top.is_trained = core.is_trained
    return True


def try_remove(index: Any, ref_ids: np.ndarray) -> int | None:
    """Remove every vector of ``ref_ids``; ``None`` if this index type cannot remove."""
    try:
        return int(index.remove_ids(faiss.IDSelectorBatch(np.asarray(ref_ids, dtype=np.int64))))
    except RuntimeError:
        return None


def supports_tombstones(index: Any) -> bool:
    """True if search can exclude removed ids with a selector (HNSW directly in the id map)."""
    return isinstance(index, faiss.IndexIDMap) and isinstance(inner_index(index), faiss.IndexHNSW)


class SearchSetup:
    """faiss ``SearchParameters`` for one call, holding Python refs to every nested object.

    SWIG does not keep nested parameter objects (selectors, quantizer params) alive, so this
    object must outlive the search call that uses ``params``.
    """

    def __init__(self, index: Any, params: Mapping[str, Any], selector: Any = None) -> None:
        self._keep: list[Any] = [selector]
        remaining = dict(params)
        self.params = None if not params and selector is None else self._build(inner_index(index), remaining, selector)
        if remaining:
            raise ValueError(
                f"unsupported search parameter(s) {sorted(remaining)} for "
                f"{type(inner_index(index)).__name__}; supported: {supported_search_params(index)}"
            )

    def _build(self, idx: Any, params: dict[str, Any], selector: Any) -> Any:
        if isinstance(idx, faiss.IndexHNSW):
            p = faiss.SearchParametersHNSW()
            # Unset values fall back to the index's own (SearchParameters' defaults would override).
            p.efSearch = int(params.pop("efSearch", idx.hnsw.efSearch))
        elif isinstance(idx, faiss.IndexIVF):
            p = faiss.SearchParametersIVF()
            p.nprobe = int(params.pop("nprobe", idx.nprobe))
            p.max_codes = int(params.pop("max_codes", idx.max_codes))
            sub = {k[len("quantizer_") :]: params.pop(k) for k in list(params) if k.startswith("quantizer_")}
            if sub:
                qp = self._build(faiss.downcast_index(idx.quantizer), sub, None)
                if sub:
                    raise ValueError(f"unsupported quantizer search parameter(s) {sorted(sub)}")
                p.quantizer_params = qp
        elif isinstance(idx, faiss.IndexPreTransform):
            p = faiss.SearchParametersPreTransform()
            # The id map translates only the outer selector; tombstones are never used here.
            p.index_params = self._build(faiss.downcast_index(idx.index), params, None)
        else:
            p = faiss.SearchParameters()
        if selector is not None:
            p.sel = selector
        self._keep.append(p)
        return p


def supported_search_params(index: Any) -> list[str]:
    """Names accepted by :class:`SearchSetup` for this index."""

    def names(idx: Any) -> list[str]:
        if isinstance(idx, faiss.IndexHNSW):
            return ["efSearch"]
        if isinstance(idx, faiss.IndexIVF):
            q = names(faiss.downcast_index(idx.quantizer))
            return ["nprobe", "max_codes", *[f"quantizer_{n}" for n in q]]
        if isinstance(idx, faiss.IndexPreTransform):
            return names(faiss.downcast_index(idx.index))
        return []

    return names(inner_index(index))


def write_index(index: Any, path: Path) -> None:
    faiss.write_index(index, str(path))


def scan_lists_in_parallel(index: Any) -> None:
    """Have an IVF index spread one query's inverted lists over the threads (faiss's
    ``parallel_mode`` 1; not saved in the file). Its default splits the queries among them, so
    a listing's one or two searches ran on one core: at 1M references (nprobe 1,024, PQ256) a
    single query took 150 ms that way and 81 ms this way on 2 cores, a batch 88 and 76 ms a
    query, with the same results (docs/scale.md)."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.parallel_mode = 1


def read_index(path: Path, *, mmap: bool) -> Any:
    """Read a faiss file, memory-mapping the vector storage when asked and supported.

    The caller has already verified the file's sha256, so faiss never parses a truncated file.

    Raises:
        IndexCorruptError: faiss cannot parse the file.
    """
    if mmap:
        try:
            return faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC)
        except RuntimeError:
            pass  # this index type cannot be mapped; read it into memory below
    try:
        return faiss.read_index(str(path))  # already downcast by the wrapper
    except RuntimeError as e:
        raise IndexCorruptError(f"faiss cannot read {path}: {_last_line(e)}") from e


def _last_line(e: BaseException) -> str:
    lines = [line for line in str(e).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(e).__name__
