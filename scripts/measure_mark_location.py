"""How well indexing locates the brand's logo on product photos (issue #22).

Indexes a benchmark set (``counterfeit bench`` / ``python -m detector.bench.dataset OUT --kind
bench``) from a copy of its ``references.csv`` without the ``logo_box`` attribute, so every
product photo's mark is located (:mod:`detector.signals.mark_locator`), then compares each
product's stored box with the true box of the pasted logo (``references.csv``'s ``logo_box``,
scaled to the first view's pixels like a given box): share with IoU >= 0.5, median IoU (a
product with no mark found counts as IoU 0).

    PYTHONPATH=. python scripts/measure_mark_location.py BENCH_DIR [--out DIR] [--model tiny-clip-test]
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import statistics
import sys
import time
from pathlib import Path


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def main(argv: list[str] | None = None) -> int:
    from PIL import Image

    from detector.indexing import run_indexing
    from detector.verify import LocalFeatures
    from index.store import ReferenceIndex

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bench", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="default: BENCH/mark-location")
    parser.add_argument("--model", default="tiny-clip-test", help="the embedding does not locate; any preset")
    args = parser.parse_args(argv)
    out = args.out or args.bench / "mark-location"
    out.mkdir(parents=True, exist_ok=True)
    truth: dict[str, list[float]] = {}
    with open(args.bench / "references.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    manifest = out / "references-no-box.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "brand", "kind", "product_id"])
        for row in rows:
            path = str((args.bench / row["path"]).resolve())
            attributes = json.loads(row.get("attributes") or "{}")
            if row["kind"] == "product" and "logo_box" in attributes:
                truth[path] = attributes["logo_box"]
            writer.writerow([path, row["brand"], row["kind"], row.get("product_id", "")])
    index_dir = out / f"index-{args.model}"
    shutil.rmtree(index_dir, ignore_errors=True)  # indexing skips what is indexed: start afresh
    started = time.perf_counter()
    report = run_indexing(manifest, index_dir, preset=args.model, embedder_options={"device": "cpu"})
    seconds = time.perf_counter() - started
    ious, states = [], {"located": 0, "no mark found": 0, "not located": 0}
    with ReferenceIndex.open(index_dir) as index:
        products = [r for r in index.references() if r.kind == "product" and r.source in truth]
        aux = index.get_aux([r.id for r in products])
    for ref in products:
        record = LocalFeatures.from_bytes(aux[ref.id])
        width, height = Image.open(ref.source).size
        sx, sy = record.image_size[0] / width, record.image_size[1] / height
        x0, y0, x1, y1 = truth[ref.source]
        true_box = (x0 * sx, y0 * sy, x1 * sx, y1 * sy)
        if record.logo_box is not None:
            states["located"] += 1
            ious.append(iou(record.logo_box, true_box))
        else:
            states["no mark found" if record.logo_box_origin == "located" else "not located"] += 1
            ious.append(0.0)
    summary = {
        "products": len(products),
        **states,
        "iou>=0.5": round(sum(v >= 0.5 for v in ious) / max(len(ious), 1), 3),
        "median_iou": round(statistics.median(ious), 3) if ious else None,
        "median_iou_located": round(statistics.median([v for v in ious if v > 0] or [0]), 3),
        "located_elsewhere(iou<0.5)": states["located"] - sum(v >= 0.5 for v in ious),
        "index_seconds": round(seconds, 1),
        "indexed": report.added,
        "failed": len(report.failed),
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
