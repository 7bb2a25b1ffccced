"""Recall against exact search on more listing photos of a scale library's planted brands.

The scale benchmark's own set has 40 listings with planted logos; of the scorer's searches on
them, only those whose exact top 10 hold the planted brand count for the planted recall: 8 at
1M references, too few to tell 0.875 from 0.95. This renders more listings of the same planted
brands with another seed (the benchmark's own generator: the seed's logos composited on photos,
large and small), has the scorer score them on a library while every search it makes is
recorded (:mod:`detector.bench.scale_probe`, a subprocess), and compares those searches, run
again under each set of search parameters given, with an exact search over the stored vectors.

Example (the seventh round's held-out set; docs/scale.md)::

    python -m detector.bench.scale_recall OUT/seeds/seed-effnet-lite0-200-*/set \\
        OUT/libraries/effnet-lite0-OPQ256_1280_IVF8192_HNSW32_PQ256x8-1000000/index OUT/recall-11 \\
        --listing-seed 11 --params '{"nprobe": 256, "quantizer_efSearch": 512}' \\
        --params '{"nprobe": 1024, "quantizer_efSearch": 2048}'
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from detector.bench.scale import TOP_K, agreement_with_exact, exact_nearest
from detector.bench.scale_probe import searches_file
from index.store import ReferenceIndex

GROUPS = ("logo_large", "logo_small")


def render_planted_listings(seed_set: Path, out: Path, *, per_group: int, listing_seed: int) -> list[dict[str, Any]]:
    """``per_group`` listings per group of the seed set's planted brands, drawn with
    ``listing_seed`` under ``out`` (reused when built with the same arguments): ``{path, brand,
    group}`` rows, as the scale benchmark's listings."""
    from detector.bench.build_context import BuildParams
    from detector.bench.generation import build
    from detector.bench.labels import read_labels

    params = json.loads((seed_set / "dataset.json").read_text())["params"]
    planted = sorted({lab.brand for lab in read_labels(seed_set / "labels.jsonl") if lab.brand})
    build(out, BuildParams(
        kind=params["kind"], seed=listing_seed, brands=tuple(planted), unindexed=tuple(params["unindexed"]),
        groups=GROUPS, per_class=per_group, product_fraction=0.0, brands_per_scene=params["brands_per_scene"],
        image_size=tuple(params["image_size"]), reference_size=params["reference_size"], query_dir="queries",
        logo_boxes=False,
    ), workers=1)
    return [{"path": str(out / lab.image), "brand": lab.brand, "group": lab.group}
            for lab in read_labels(out / "labels.jsonl")]


def recorded_searches(index_dir: Path, listings: list[dict[str, Any]], out: Path) -> tuple[np.ndarray, list[str], int]:
    """The scorer's searches on ``listings`` over the library at ``index_dir`` (default
    scoring): their query vectors, each one's planted brand, and the references a search
    fetched (the preset's ``search_k``)."""
    listings_file, result = out / "listings.json", out / "probe.json"
    listings_file.write_text(json.dumps(listings))
    subprocess.run([sys.executable, "-m", "detector.bench.scale_probe", str(index_dir), str(listings_file),
                    str(result), "--config", "{}"], check=True)
    with np.load(searches_file(result)) as saved:
        return saved["queries"], saved["brands"].tolist(), int(saved["ids"].shape[1])


def recall_under(index_dir: Path, queries: np.ndarray, brands: list[str], variants: Sequence[dict[str, Any]],
                 exact: np.ndarray, k: int) -> list[dict[str, Any]]:
    """Each variant's searches (``search_vectors`` with those parameters, ``k`` references)
    against the ``exact`` top ``TOP_K``, with the time a query took in one batch."""
    rows = []
    with ReferenceIndex.open(index_dir) as index:
        for params in variants:
            started = time.perf_counter()
            _, found = index.search_vectors(queries, k=k, params=dict(params) or None)
            per_query = (time.perf_counter() - started) / len(queries)
            ids = {*exact.ravel().tolist(), *found.ravel().tolist()} - {-1}
            brand_of = {r.id: r.brand for r in index.get_references(ids).values()}
            rows.append({"params": dict(params) or index.search_defaults, "ms_per_query": round(per_query * 1e3, 1),
                         **agreement_with_exact(found, exact, brands, brand_of)})
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("seed_set", type=Path, help="the scale benchmark's seed set (OUT/seeds/seed-*/set)")
    ap.add_argument("index", type=Path, help="a scale library's index folder")
    ap.add_argument("out", type=Path, help="working folder: listings, recorded searches, results")
    ap.add_argument("--listing-seed", type=int, default=11)
    ap.add_argument("--per-group", type=int, default=100, help="listings per group (large and small logos)")
    ap.add_argument("--params", type=json.loads, action="append", default=[],
                    help="search parameters as JSON (repeatable); none: the index's defaults")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    listings = render_planted_listings(args.seed_set, args.out / f"set-{args.listing_seed}",
                                       per_group=args.per_group, listing_seed=args.listing_seed)
    queries, brands, k = recorded_searches(args.index, listings, args.out)
    started = time.perf_counter()
    with ReferenceIndex.open(args.index) as index:
        exact = exact_nearest(index, queries, TOP_K)
    result = {"index": str(args.index), "listings": len(listings), "searches": len(queries),
              "exact_seconds": round(time.perf_counter() - started, 1),
              "variants": recall_under(args.index, queries, brands, args.params or [{}], exact, k)}
    (args.out / "recall.json").write_text(json.dumps(result, indent=1))
    for row in result["variants"]:
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
