"""Scale benchmark: what scoring and indexing cost as the library grows to millions of references.

For each size N it builds a library of N references (:mod:`detector.bench.scale_library`: a
real seed set rendered and indexed for real, the rest synthetic copies of real logos' vectors
and side data, added through the index's own ``add``), then scores the seed's listing photos
(planted logos on photos, and logo-free photos) in a subprocess
(:mod:`detector.bench.scale_probe`) under a memory limit and a time limit, and reports per
size: scoring latency p50/p99 and throughput, the first listing's time (it builds the
per-generation structures), the scorer's peak RSS, build time, bytes per reference on disk
and in RAM, the embedding search's agreement with an exact search and the planted logos'
R@1. A size that cannot fit (disk, from the seed's measured bytes per reference; RAM, the
limit) or runs out of time is reported as such; the other sizes still run.

Example:
    >>> result = run_scale_benchmark("scale-out", ScaleConfig(sizes=(10_000,)))  # doctest: +SKIP
    >>> print(markdown_table(result))                                            # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detector.bench.labels import read_labels
from detector.bench.scale_library import Seed, build_library, build_seed
from detector.bench.scale_probe import TOP_K, searches_file
from detector.descriptor_store import store_bytes
from detector.features import LocalFeatures
from detector.silhouettes import CANONICAL_SIDE
from index.factory_choice import FactoryChoice, choose_factory, estimate_bytes
from index.store import ReferenceIndex

GIB = 2**30
DISK_RESERVE_BYTES = 10 * GIB  # left free for the machine's other work
RESULT_FORMAT = "scale-bench/1"


@dataclass(frozen=True)
class ScaleConfig:
    """What to run."""

    sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    preset: str = "effnet-lite0"
    random_weights: bool = False
    seed_brands: int = 200  # real logos rendered and indexed (templates + planted)
    queries_per_class: int = 20  # listing photos per group (logo_large, logo_small, neg_nologo)
    factory: str = "Flat"  # or "auto": chosen per size by index.factory_choice within memory_budget_bytes
    memory_budget_bytes: int = 4 * GIB  # the embedding index's (factory "auto") and the descriptor store's
    memory_limit_bytes: int = 16 * GIB  # per scorer subprocess (RLIMIT_DATA)
    probe_timeout_seconds: float = 1800.0
    chunk: int = 10_000  # references per commit while building a library
    scoring: dict[str, Any] = field(default_factory=dict)  # scoring options (default profile)
    clean: bool = False  # delete each library once measured
    store_from: int | None = None  # references from which the descriptor store is kept (None: its default)
    store: bool = True  # keep the descriptor store (False: as before it existed)
    tag: str = ""  # names this run's result files (libraries and seed are shared across tags)
    # How the scorer votes, each variant in its own subprocess on the same library: "store" (the
    # on-disk store when the library has one) and/or "memory" (all descriptors in RAM, as before).
    vote_variants: tuple[str, ...] = ("store",)


def run_scale_benchmark(out_dir: str | os.PathLike[str], config: ScaleConfig | None = None,
                        say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every size; write ``scale-<preset>.json`` and ``.md`` in ``out_dir`` and return the figures."""
    cfg = config or ScaleConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seed = build_seed(out / "seeds", preset=cfg.preset, n_brands=cfg.seed_brands,
                      queries_per_class=cfg.queries_per_class, random_weights=cfg.random_weights, say=say)
    listings = _listings(seed)
    listings_file = out / "listings.json"
    listings_file.write_text(json.dumps(listings))
    seed_disk = _folder_bytes(seed.index_dir)
    layout = _seed_layout(seed)
    data: dict[str, Any] = {
        "format": RESULT_FORMAT, "config": asdict(cfg), "command": " ".join(sys.argv),
        "seed": {"references": seed.references, "planted_brands": len(seed.planted_brands),
                 "listings": len(listings), "indexing_seconds": round(seed.indexing_seconds, 2),
                 "indexing_references_per_second": round(seed.references / max(seed.indexing_seconds, 1e-9), 2),
                 "disk_bytes_per_reference": round(seed_disk / max(seed.references, 1))},
        "sizes": [],
    }
    baseline_rss: dict[str, tuple[int, int]] = {}  # vote variant -> (references, peak RSS) of its smallest size
    for size in sorted(cfg.sizes):
        for row in _run_size(out, seed, size, cfg, listings_file, layout, say):
            variant = row.get("vote", "")
            if row.get("peak_rss_bytes"):
                base = baseline_rss.setdefault(variant, (row["references"], row["peak_rss_bytes"]))
                if row["references"] > base[0]:
                    row["ram_bytes_per_reference"] = round(
                        (row["peak_rss_bytes"] - base[1]) / (row["references"] - base[0]))
            data["sizes"].append(row)
            _write(out, cfg, data)
            say(f"size {size:,} {variant}: {row['status']}")
    return data


def _listings(seed: Seed) -> list[dict[str, Any]]:
    """The seed's listing photos: planted logos first, then the logo-free ones."""
    root = seed.labels_path.parent
    labels = read_labels(seed.labels_path)
    ordered = sorted(labels, key=lambda lab: lab.brand is None)
    return [{"path": str(root / lab.image), "brand": lab.brand, "group": lab.group} for lab in ordered]


# Beside the records, a logo costs the shape search ~1 KB (its packed mask in the library and
# again in the inverted file) and the descriptor store its code and id a descriptor.
SHAPE_BYTES_PER_LOGO = 2 * (CANONICAL_SIDE * CANONICAL_SIDE // 8) + 32


@dataclass(frozen=True)
class SeedLayout:
    """What one seed reference costs and holds, to size a library before building it."""

    record_bytes_per_reference: float  # records.sqlite: record, raw vectors, side data
    descriptors_per_reference: float
    views: int  # vectors a logo reference adds
    dim: int

    def side_bytes_per_reference(self, store: bool, size: int, memory_budget: int) -> float:
        """On disk beside the embedding index of ``size`` references: records, descriptor store
        (its code chosen for ``memory_budget``), shape search."""
        descriptors = round(self.descriptors_per_reference * size)
        stored = store_bytes(descriptors, memory_budget) / max(size, 1) if store else 0.0
        return self.record_bytes_per_reference + stored + SHAPE_BYTES_PER_LOGO


def _seed_layout(seed: Seed) -> SeedLayout:
    records = [p for p in seed.index_dir.glob("records.sqlite*") if p.is_file()]
    with ReferenceIndex.open(seed.index_dir) as index:
        ids = [r.id for r in index.references()]
        views = max((len(v) for v in index.get_vectors(ids).values()), default=1)
        descriptors = sum(len(LocalFeatures.from_bytes(b)) for b in index.get_aux(ids).values())
        dim = index.dim
    n = max(seed.references, 1)
    return SeedLayout(sum(p.stat().st_size for p in records) / n, descriptors / n, views, dim)


def _factory_choice(cfg: ScaleConfig, size: int, layout: SeedLayout) -> FactoryChoice:
    """The library's embedding-index factory: the configured one, or autofaiss's rules for its vectors."""
    if cfg.factory != "auto":
        n = size * layout.views
        try:
            estimated = estimate_bytes(cfg.factory, n, layout.dim)
        except ValueError:  # a factory the estimator does not know: sized as Flat, the largest
            estimated = estimate_bytes("Flat", n, layout.dim)
        return FactoryChoice(cfg.factory, estimated_bytes=estimated)
    return choose_factory(size * layout.views, layout.dim, cfg.memory_budget_bytes)


def _run_size(out: Path, seed: Seed, size: int, cfg: ScaleConfig, listings_file: Path, layout: SeedLayout,
              say: Callable[[str], None]) -> list[dict[str, Any]]:
    """One row per vote variant (the same library scored by each, one after the other)."""
    row: dict[str, Any] = {"size": size, "references": max(size, seed.references)}
    try:
        choice = _factory_choice(cfg, size, layout)
    except ValueError as e:  # no factory fits the memory budget
        row["status"] = f"no embedding index fits: {e}"
        return [row]
    row["factory"] = choice.factory
    path = out / "libraries" / f"{cfg.preset}-{choice.factory.replace(',', '_')}-{size}"
    # Two faiss generations stay on disk (the last one is kept for readers).
    side = layout.side_bytes_per_reference(cfg.store, size, cfg.memory_budget_bytes)
    need = (side * size + 2 * choice.estimated_bytes) * 1.1
    free = shutil.disk_usage(out).free + (_folder_bytes(path) if path.exists() else 0)
    row["estimated_disk_bytes"] = round(need)
    if need > free - DISK_RESERVE_BYTES:
        row["status"] = (f"does not fit on disk: needs ~{need / GIB:.0f} GiB ({choice.factory}, and "
                         f"{side / 1024:.0f} KiB a reference beside it by the seed's measure), {free / GIB:.0f} GiB free")
        return [row]
    try:
        built = build_library(seed, path, size, factory=choice.factory, chunk=cfg.chunk,
                              create_options={"build_params": choice.build_params, "search_params": choice.search_params,
                                              "train_after_vectors": choice.training_vectors},
                              store=cfg.store, store_from=cfg.store_from, memory_budget=cfg.memory_budget_bytes,
                              say=say)
    except Exception as e:  # noqa: BLE001 - one size failing must not stop the others
        row["status"] = f"build failed: {type(e).__name__}: {e}"
        return [row]
    row.update({"references": built.references, "build_seconds": round(built.seconds, 1),
                "build_references_per_second": round(built.synthetic / built.seconds, 1) if built.seconds else None,
                "disk_bytes": built.disk_bytes, "disk_bytes_per_reference": round(built.disk_bytes / built.references),
                "store_sync_seconds": None if built.store_sync_seconds is None else round(built.store_sync_seconds, 1),
                "store_disk_bytes": _folder_bytes(path / "index" / "descriptors") if (path / "index" / "descriptors").exists() else 0})
    rows = []
    for vote in cfg.vote_variants:
        variant = {**row, "vote": vote, "load_average_before": os.getloadavg()[0]}
        probe_file = out / f"probe{'-' + cfg.tag if cfg.tag else ''}-{size}-{vote}.json"
        variant.update(_probe(path / "index", listings_file, probe_file, cfg, vote))
        variant["load_average_after"] = os.getloadavg()[0]
        if variant["status"] == "ok":
            variant.update(_exact_agreement(path / "index", probe_file))
        rows.append(variant)
    if cfg.clean:
        shutil.rmtree(path, ignore_errors=True)
    return rows


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _limit_memory(limit: int) -> Callable[[], None]:
    def apply() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))

    return apply


def _probe(index_dir: Path, listings_file: Path, result_file: Path, cfg: ScaleConfig, vote: str) -> dict[str, Any]:
    """Score the listings in a subprocess (``vote``: "store" or "memory"); its figures, or why it stopped."""
    result_file.unlink(missing_ok=True)
    Path(str(result_file) + ".partial").unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "detector.bench.scale_probe", str(index_dir), str(listings_file), str(result_file),
           "--config", json.dumps(cfg.scoring), "--vote", vote]
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=cfg.probe_timeout_seconds,
                              preexec_fn=_limit_memory(cfg.memory_limit_bytes))
    except subprocess.TimeoutExpired:
        partial = Path(str(result_file) + ".partial")
        done = json.loads(partial.read_text()) if partial.is_file() else {}
        return {"status": f"scoring timed out after {cfg.probe_timeout_seconds:.0f} s", **done}
    wall = time.perf_counter() - started
    if proc.returncode != 0 or not result_file.is_file():
        tail = (proc.stderr or "").strip().splitlines()[-1:] or [""]
        memory = "MemoryError" in proc.stderr or "bad_alloc" in proc.stderr or proc.returncode in (-9, 137)
        why = f"out of memory (limit {cfg.memory_limit_bytes / GIB:.0f} GiB)" if memory else f"scorer failed (rc {proc.returncode})"
        return {"status": f"{why}: {tail[0][:200]}"}
    result = json.loads(result_file.read_text())
    verdicts = result["verdicts"]
    planted = [v for v in verdicts if v["brand"] is not None]
    clean = [v for v in verdicts if v["brand"] is None]
    figures = {k: result[k] for k in ("open_seconds", "first_listing_seconds", "latency_p50_seconds",
                                      "latency_p99_seconds", "listings_per_second", "peak_rss_bytes",
                                      "rss_after_open_bytes", "rss_after_first_bytes", "per_generation_seconds",
                                      "rss_anon_end_bytes", "rss_file_end_bytes")
               if k in result}
    return {"status": "ok", "probe_wall_seconds": round(wall, 1), **figures,
            "planted_r_at_1": _share(v["top_brand"] == v["brand"] for v in planted),
            "planted_flagged": _share(v["flagged"] and v["verdict_brand"] == v["brand"] for v in planted),
            "logo_free_flagged": _share(v["flagged"] for v in clean),
            "errors": sum(v["error"] is not None for v in verdicts)}


def _share(flags: Any) -> float | None:
    values = list(flags)
    return round(sum(values) / len(values), 4) if values else None


def exact_nearest(index: ReferenceIndex, queries: np.ndarray, top: int, chunk: int = 20_000) -> np.ndarray:
    """Each query's ``top`` nearest references by exact search over the stored vectors (a
    reference's best view), streamed ``chunk`` references at a time: ``(q, top)`` ids."""
    best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_ids = np.zeros((len(queries), 0), dtype=np.int64)
    ids = [r.id for r in index.references()]
    for start in range(0, len(ids), chunk):
        part = ids[start : start + chunk]
        stored = index.get_vectors(part)
        part = [rid for rid in part if len(stored.get(rid, ()))]  # reduceat needs >= 1 view each
        if not part:
            continue
        views = [stored[rid] for rid in part]
        starts = np.cumsum([0] + [len(v) for v in views[:-1]])
        # One product over the chunk's views, then each reference's best: a product per
        # reference was ten times slower (small matrices; 24 s against 2 s per 5,000 at 1M).
        per_ref = np.maximum.reduceat(queries @ np.concatenate(views).T, starts, axis=1)
        best_scores = np.concatenate([best_scores, per_ref], axis=1)
        best_ids = np.concatenate([best_ids, np.asarray(part, dtype=np.int64)[None, :].repeat(len(queries), 0)], axis=1)
        keep = np.argsort(-best_scores, axis=1, kind="stable")[:, :top]
        best_scores = np.take_along_axis(best_scores, keep, axis=1)
        best_ids = np.take_along_axis(best_ids, keep, axis=1)
    return best_ids


def _exact_agreement(index_dir: Path, result_file: Path, chunk: int = 20_000) -> dict[str, Any]:
    """The scorer's own searches on the planted listings (every region, recorded by the probe)
    against an exact search over the stored vectors (streamed): how often the exact nearest
    reference is the index's first, is among the k it returned (the scorer's ``search_k``,
    what it goes on to score), the overlap of their first ``TOP_K``, and the planted recall:
    of the searches whose exact first ``TOP_K`` hold the planted brand, the share whose
    approximate k do too."""
    with np.load(searches_file(result_file)) as saved:
        queries, found, brands = saved["queries"], saved["ids"], saved["brands"].tolist()
    if not len(queries):
        return {}
    with ReferenceIndex.open(index_dir) as index:
        best_ids = exact_nearest(index, queries, TOP_K, chunk)
        brand_of = {r.id: r.brand for r in index.get_references({*best_ids.ravel().tolist(), *found.ravel().tolist()}).values()}
    return {"exact_queries": len(queries), "exact_search_k": int(found.shape[1]),
            **agreement_with_exact(found, best_ids, brands, brand_of)}


def agreement_with_exact(found: np.ndarray, best_ids: np.ndarray, brands: list[str | None],
                         brand_of: dict[int, str]) -> dict[str, Any]:
    """How the ids an index ``found`` ``(q, k)`` agree with the exact ``best_ids`` ``(q, TOP_K)``
    for searches on listings whose planted brand is ``brands[i]`` (see :func:`_exact_agreement`)."""
    top1 = float(np.mean(found[:, 0] == best_ids[:, 0]))
    in_k = float(np.mean([e in f for e, f in zip(best_ids[:, 0].tolist(), found.tolist())]))
    overlap = float(np.mean([len(set(f[:TOP_K]) & set(e)) / TOP_K for f, e in zip(found.tolist(), best_ids.tolist())]))
    exact_has = [brand in {brand_of.get(i) for i in e} for brand, e in zip(brands, best_ids.tolist())]
    kept = [brand in {brand_of.get(i) for i in f} for brand, f, has in zip(brands, found.tolist(), exact_has) if has]
    return {"exact_top1_agreement": round(top1, 4), "exact_top1_in_search_k": round(in_k, 4),
            f"exact_top{TOP_K}_overlap": round(overlap, 4),
            "planted_in_exact": int(sum(exact_has)), "planted_recall": _share(kept)}


def _write(out: Path, cfg: ScaleConfig, data: dict[str, Any]) -> None:
    from index.atomic import atomic_write_json

    stem = out / f"scale-{cfg.preset}-{cfg.factory.replace(',', '_')}{'-' + cfg.tag if cfg.tag else ''}"
    atomic_write_json(stem.with_suffix(".json"), data)
    tmp = stem.with_suffix(".md.tmp")
    tmp.write_text(markdown_table(data))
    tmp.replace(stem.with_suffix(".md"))


def _fmt(value: Any, scale: float = 1.0, digits: int = 0) -> str:
    return "–" if value is None else f"{value * scale:,.{digits}f}"


def markdown_table(data: dict[str, Any]) -> str:
    """The result as a Markdown table, one row per size."""
    header = ("| references | vote | status | build s (refs/s) | disk KB/ref | first listing s | p50 ms | p99 ms | "
              "listings/s | peak RSS MB | RAM KB/ref | top-1 = exact | exact NN in k | top-10 overlap | planted recall | planted R@1 | "
              "planted flagged | logo-free flagged |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in data["sizes"]:
        lines.append("| " + " | ".join([
            f"{r['references']:,}", r.get("vote", "–"), r["status"] if r["status"] == "ok" else r["status"][:120],
            f"{_fmt(r.get('build_seconds'))} ({_fmt(r.get('build_references_per_second'))})",
            _fmt(r.get("disk_bytes_per_reference"), 1 / 1000, 1), _fmt(r.get("first_listing_seconds"), 1, 1),
            _fmt(r.get("latency_p50_seconds"), 1000), _fmt(r.get("latency_p99_seconds"), 1000),
            _fmt(r.get("listings_per_second"), 1, 2), _fmt(r.get("peak_rss_bytes"), 1 / 2**20),
            _fmt(r.get("ram_bytes_per_reference"), 1 / 1000, 1), _fmt(r.get("exact_top1_agreement"), 1, 3),
            _fmt(r.get("exact_top1_in_search_k"), 1, 3),
            _fmt(r.get("exact_top10_overlap"), 1, 3),
            f"{_fmt(r.get('planted_recall'), 1, 3)} ({r.get('planted_in_exact', '–')})",
            _fmt(r.get("planted_r_at_1"), 1, 3),
            _fmt(r.get("planted_flagged"), 1, 3), _fmt(r.get("logo_free_flagged"), 1, 3),
        ]) + " |")
    lines.append("")
    for r in data["sizes"]:
        notes = [f"embedding index {r['factory']}"] if r.get("factory") else []
        if r.get("exact_queries"):
            notes.append(f"against exact: the scorer's {r['exact_queries']:,} searches on planted listings, "
                         f"k = {r['exact_search_k']}")
        if r.get("per_generation_seconds"):
            notes.append("per-generation builds (first listing): " + ", ".join(
                f"{k} {v:.1f} s" for k, v in sorted(r["per_generation_seconds"].items())))
        if r.get("rss_after_first_bytes") and r.get("rss_after_open_bytes"):
            notes.append(f"RSS after open {r['rss_after_open_bytes'] / 2**20:,.0f} MB, after the first listing "
                         f"{r['rss_after_first_bytes'] / 2**20:,.0f} MB")
        if r.get("rss_anon_end_bytes"):
            notes.append(f"RSS at the end {r['rss_anon_end_bytes'] / 2**20:,.0f} MB private + "
                         f"{r['rss_file_end_bytes'] / 2**20:,.0f} MB mapped files")
        if r.get("store_disk_bytes"):
            synced = "" if r.get("store_sync_seconds") is None else f", synced into the library in {r['store_sync_seconds']:.0f} s"
            notes.append(f"descriptor store {r['store_disk_bytes'] / 2**20:,.0f} MB on disk{synced}")
        if "load_average_before" in r:
            notes.append(f"load average {r['load_average_before']:.1f} / {r.get('load_average_after', 0):.1f}")
        if notes:
            lines.append(f"- {r['references']:,}: " + "; ".join(notes))
    seed = data["seed"]
    lines.append("")
    lines.append(f"Seed: {seed['references']} real logos indexed at {seed['indexing_references_per_second']} refs/s, "
                 f"{seed['planted_brands']} planted brands, {seed['listings']} listing photos.")
    return "\n".join(lines) + "\n"
