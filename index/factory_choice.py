"""Choose a FAISS factory string for a number of vectors and a memory budget (no torch).

The rules follow autofaiss's ``get_optimal_index_keys_v2`` / ``get_optimal_quantization`` /
``get_optimal_nb_clusters`` (criteo/autofaiss, ``autofaiss/external/optimize.py``) and the faiss
wiki's "Guidelines to choose an index", adapted to this project (inner product, an id map
around non-IVF indexes, search parameters recorded with the index). Candidates, most accurate
first; the first whose estimated bytes fit the budget wins:

1. ``Flat`` (exact) while ``n <= FLAT_MAX_VECTORS``: a brute-force scan of 250k 1,280-d
   vectors is still tens of milliseconds, and small libraries keep exact results.
2. ``IVF{nlist},Flat``, then ``IVF{nlist},SQ8`` (exact, then 1-byte scalar-quantised vectors in
   inverted lists, from 10,000 vectors; ``nlist`` and ``nprobe`` as below, the coarse quantizer
   exact). Not HNSW, which autofaiss picks whenever it fits: this project's queries are
   listing photos, not references, and a graph search finds their nearest references badly.
   On a 100,000-reference library (700,000 effnet-lite0 vectors) the scorer's own searches on
   listings with planted logos found the exact nearest reference among the 30 it fetched 48 %
   of the time with ``HNSW32`` at efSearch 128 (98 % at efSearch 8192, 17.6 ms a query), and
   100 % with ``IVF4096,SQ8`` at nprobe 128 (2.1 ms a query) (docs/scale.md).
3. ``OPQ{m}_{y},IVF{nlist}[_HNSW32],PQ{m}x8`` for ``m`` in 256, 128, ... 8 (autofaiss's PQ
   sizes), only from 10,000 vectors (autofaiss's quantization threshold). ``nlist`` is the power
   of two nearest ``4*sqrt(n)`` (autofaiss's lower end of 4..16 sqrt(n)), at most ``n // 39``
   (faiss wants ~39 training points a list) and 65,536. ``y`` (OPQ's output dim) is autofaiss's
   ``(min(d // m, 6) + 1) * m`` capped at the largest multiple of ``m`` <= d, so ``m`` divides
   it and each sub-quantizer sees at most 7 dims; OPQ is always used (autofaiss does), since it
   rotates the variance evenly across sub-quantizers and cuts the PQ's training dims. Coarse
   quantizers from 1,000 lists are HNSW32 (autofaiss's rule). An HNSW quantizer searches with
   efSearch ``2 * nprobe`` (autofaiss's rule).

nprobe is ``nlist // 8``, clamped to 8..1024. A listing photo's region is far from every
reference (its true match at cosine ~0.5-0.65), so its nearest references lie in lists whose
centres are not the nearest to it, and an IVF needs a larger share of its lists than queries
drawn from the references would. On the scale benchmark's listings, ``nlist // 32`` (the rule
before) found the exact nearest reference among the 30 fetched for 0.94 of searches at 100,000
and 1M references, ``nlist // 8`` for 0.98 (docs/scale.md). Capped at 1,024 so that a
search's scan grows as ``sqrt(n)`` beyond 1M references, not as ``n``.

Memory is estimated per candidate (:func:`estimate_bytes`): float32 vectors ``4d`` (SQ8: ``d``),
8 bytes an id (our id map, or the inverted lists' ids), HNSW links ``8M`` (2M neighbours on
level 0, int32; for a factory given by hand) plus ~16 bytes of level bookkeeping, and fixed
tables (centroids, OPQ matrix, PQ codebooks). It
is an estimate of the faiss index alone, not of ``records.sqlite`` or the process.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

FLAT_MAX_VECTORS = 250_000
QUANTIZATION_MIN_VECTORS = 10_000
PQ_SIZES = (256, 128, 64, 48, 32, 24, 16, 8)
MAX_LISTS = 65_536
TRAINING_POINTS_PER_LIST = 39
HNSW_QUANTIZER_FROM_LISTS = 1_000
MAX_NPROBE = 1_024
ID_BYTES = 8

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 2**10, "kib": 2**10, "kb": 10**3,
    "m": 2**20, "mib": 2**20, "mb": 10**6,
    "g": 2**30, "gib": 2**30, "gb": 10**9,
    "t": 2**40, "tib": 2**40, "tb": 10**12,
}  # fmt: skip


@dataclass(frozen=True)
class FactoryChoice:
    """A factory string with its parameters and the memory it is expected to take.

    Attributes:
        factory: The faiss factory string (what the index records).
        build_params: For ``ReferenceIndex.create(build_params=...)``.
        search_params: Default query-time parameters (``create(search_params=...)``).
        estimated_bytes: Estimated size of the faiss index holding ``n_vectors``.
        training_vectors: Vectors the first add should hold to train it well (0: no training).
        reason: One line saying why this candidate was chosen.
    """

    factory: str
    build_params: dict[str, Any] = field(default_factory=dict)
    search_params: dict[str, Any] = field(default_factory=dict)
    estimated_bytes: int = 0
    training_vectors: int = 0
    reason: str = ""


def parse_memory_size(text: str | int) -> int:
    """Bytes in ``"8GiB"``, ``"500MB"``, ``"1.5G"`` or ``4096``; bare K/M/G/T are binary (GiB).

    Raises:
        ValueError: Not a positive size.
    """
    if isinstance(text, int):
        value = text
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
        unit = match.group(2).lower() if match else None
        if not match or unit not in _SIZE_UNITS:
            raise ValueError(f"memory size {text!r}: expected a number with an optional unit such as 8GiB, 500MB")
        value = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if value <= 0:
        raise ValueError(f"memory size must be positive, got {text!r}")
    return value


def n_lists(n_vectors: int) -> int:
    """Inverted lists for ``n_vectors``: the power of two nearest 4*sqrt(n), within training limits."""
    target = 2 ** round(math.log2(max(1.0, 4 * math.sqrt(n_vectors))))
    return max(1, min(target, MAX_LISTS, n_vectors // TRAINING_POINTS_PER_LIST))


def opq_dim(dim: int, m: int) -> int:
    """OPQ's output dim for ``m`` sub-quantizers: autofaiss's (min(d//m, 6)+1)*m, at most d."""
    return min((min(dim // m, 6) + 1) * m, (dim // m) * m)


def ivfpq_factory(n_vectors: int, dim: int, m: int) -> str:
    """The OPQ + IVF + PQ factory string for ``m`` bytes a code."""
    lists = n_lists(n_vectors)
    coarse = f"IVF{lists}_HNSW32" if lists >= HNSW_QUANTIZER_FROM_LISTS else f"IVF{lists}"
    return f"OPQ{m}_{opq_dim(dim, m)},{coarse},PQ{m}x8"


def estimate_bytes(factory: str, n_vectors: int, dim: int) -> int:
    """Estimated bytes of a faiss index of ``n_vectors`` for the factories this module chooses.

    Raises:
        ValueError: A factory string this estimator does not know.
    """
    n, d = int(n_vectors), int(dim)
    if factory == "Flat":
        return n * (4 * d + ID_BYTES)
    hnsw = re.fullmatch(r"HNSW(\d+)(_SQ8)?", factory)
    if hnsw:
        m = int(hnsw.group(1))
        code = d if hnsw.group(2) else 4 * d
        tables = 2 * 4 * d if hnsw.group(2) else 0  # SQ8's per-dim min and range
        return n * (code + 8 * m + 16 + ID_BYTES) + tables
    ivf = re.fullmatch(r"IVF(\d+)(_HNSW32)?,(Flat|SQ8)", factory)
    if ivf:
        lists = int(ivf.group(1))
        quantizer = lists * 4 * d + (lists * (8 * 32 + 16) if ivf.group(2) else 0)
        code = 4 * d if ivf.group(3) == "Flat" else d
        tables = 2 * 4 * d if ivf.group(3) == "SQ8" else 0  # SQ8's per-dim min and range
        return n * (code + ID_BYTES) + quantizer + tables
    ivfpq = re.fullmatch(r"OPQ(\d+)_(\d+),IVF(\d+)(_HNSW32)?,PQ(\d+)x8", factory)
    if ivfpq:
        y, lists, pq = int(ivfpq.group(2)), int(ivfpq.group(3)), int(ivfpq.group(5))
        quantizer = lists * 4 * y + (lists * (8 * 32 + 16) if ivfpq.group(4) else 0)
        tables = 4 * d * y + 256 * 4 * y + quantizer  # OPQ matrix, PQ codebooks, centroids
        return n * (pq + ID_BYTES) + tables
    raise ValueError(f"no memory estimate for factory {factory!r}")


def _nprobe(lists: int) -> int:
    return min(max(8, min(MAX_NPROBE, lists // 8)), lists)


def _ivf_choice(n: int, dim: int, codes: str) -> FactoryChoice:
    """``IVF{lists},Flat`` or ``IVF{lists},SQ8``."""
    lists = n_lists(n)
    factory = f"IVF{lists},{codes}"  # an exact coarse quantizer: as measured (a graph one was not)
    size = estimate_bytes(factory, n, dim)
    what = "float32" if codes == "Flat" else "1-byte scalar-quantised"
    return FactoryChoice(factory, {}, {"nprobe": _nprobe(lists)}, size,
                         max(256, TRAINING_POINTS_PER_LIST * lists),
                         f"{n:,} vectors: {lists} inverted lists of {what} vectors, ~{_gib(size)}")


def _ivfpq_choice(n: int, dim: int, m: int, budget: int) -> FactoryChoice:
    factory = ivfpq_factory(n, dim, m)
    lists = n_lists(n)
    search: dict[str, Any] = {"nprobe": _nprobe(lists)}
    if lists >= HNSW_QUANTIZER_FROM_LISTS:
        search["quantizer_efSearch"] = 2 * search["nprobe"]
    size = estimate_bytes(factory, n, dim)
    return FactoryChoice(
        factory, {}, search, size, max(256, TRAINING_POINTS_PER_LIST * lists),
        f"{n:,} vectors need compression under {_gib(budget)}: {m}-byte PQ codes, {lists} lists, ~{_gib(size)}",
    )


def choose_factory(n_vectors: int, dim: int, memory_budget_bytes: int) -> FactoryChoice:
    """The most accurate factory whose estimated size for ``n_vectors`` fits the budget.

    Args:
        n_vectors: Vectors the index will hold (references x views).
        dim: Vector dimension.
        memory_budget_bytes: RAM the faiss index may take.

    Raises:
        ValueError: Non-positive arguments, or no candidate fits (the message gives the smallest).
    """
    n, d, budget = int(n_vectors), int(dim), int(memory_budget_bytes)
    if n < 0 or d < 1 or budget < 1:
        raise ValueError(f"need n_vectors >= 0, dim >= 1, budget >= 1; got {n}, {d}, {budget}")
    flat = estimate_bytes("Flat", n, d)
    if n <= FLAT_MAX_VECTORS and flat <= budget:
        return FactoryChoice("Flat", estimated_bytes=flat, reason=f"{n:,} vectors fit exact search in ~{_gib(flat)}")
    if n >= QUANTIZATION_MIN_VECTORS:
        for codes in ("Flat", "SQ8"):
            choice = _ivf_choice(n, d, codes)
            if choice.estimated_bytes <= budget:
                return choice
    smallest = None
    if n >= QUANTIZATION_MIN_VECTORS:
        for m in (m for m in PQ_SIZES if m <= d):
            choice = _ivfpq_choice(n, d, m, budget)
            if choice.estimated_bytes <= budget:
                return choice
            smallest = choice
    if smallest is None:
        raise ValueError(f"{n:,} vectors of dim {d} need ~{_gib(flat)} exact (too few to compress); budget {_gib(budget)}")
    raise ValueError(
        f"no factory fits {_gib(budget)} for {n:,} vectors of dim {d}; the smallest, "
        f"{smallest.factory}, needs ~{_gib(smallest.estimated_bytes)}"
    )


def _gib(n_bytes: int) -> str:
    if n_bytes >= 2**30:
        return f"{n_bytes / 2**30:.2f} GiB"
    return f"{n_bytes / 2**20:.1f} MiB"
