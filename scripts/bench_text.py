#!/usr/bin/env python
"""Benchmark of the text signal: brand names on photos, with and without the signal.

    python scripts/bench_text.py --out bench-text [--brands 40] [--per-class 20] [--seed 0]
        [--model effnet-lite0] [--profiles fast,thorough] [--scoring JSON] [--text-only]
        [--text-regions]

Builds the text set (:mod:`detector.bench.text_classes`), indexes its logos (names from the
manifest), scores every listing with each profile, with and without ``text``, at the
shipped thresholds, and prints per class R@1 (top brand right, any score), recall (flagged
with the right brand) and false flags (flagged with a wrong brand, or at all on a negative),
and the scoring time per listing (variants interleaved batch by batch). Writes
``results.json`` and ``table.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector.bench.text_classes import CLASSES, NEGATIVE, build_text_set
from detector.signals import DEFAULT_SIGNALS


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--brands", type=int, default=40)
    p.add_argument("--per-class", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default="effnet-lite0")
    p.add_argument("--profiles", default="fast,thorough")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--scoring", type=json.loads, default={}, metavar="JSON",
                   help='scoring overrides for every variant, e.g. \'{"text": {"ordinary_penalty": 0}}\'')
    p.add_argument("--text-only", action="store_true", help="only the variants with the text signal")
    p.add_argument("--text-regions", action="store_true",
                   help="also score each text variant with the regions around the text (text.regions on)")
    args = p.parse_args(argv)

    from detector.indexing import run_indexing
    from detector.scoring import Detector, merge_options

    text_set = build_text_set(args.out / "set", n_brands=args.brands, per_class=args.per_class, seed=args.seed)
    index_dir = args.out / f"index-{args.model}"
    if not (index_dir / "manifest.json").exists():
        run_indexing(text_set.manifest, index_dir, preset=args.model, embedder_options={"device": "cpu"})
    labels = [json.loads(line) for line in text_set.labels.read_text().splitlines()]
    images = [str(text_set.root / row["image"]) for row in labels]
    variants: dict[str, dict] = {}
    for profile in args.profiles.split(","):
        if not args.text_only:
            variants[profile] = {**args.scoring, "profile": profile, "signals": list(DEFAULT_SIGNALS)}
        with_text = {**args.scoring, "profile": profile, "signals": [*DEFAULT_SIGNALS, "text"]}
        variants[f"{profile} + text"] = with_text
        if args.text_regions:
            variants[f"{profile} + text + text regions"] = merge_options(with_text, {"text": {"regions": True}})
    detectors = {name: Detector.open(index_dir, device="cpu", config=config) for name, config in variants.items()}
    verdicts: dict[str, list] = {name: [] for name in variants}
    seconds = dict.fromkeys(variants, 0.0)
    try:
        for det in detectors.values():
            det.score_many(images[:2])  # warm-up: models, descriptor index
        # Interleaved: every variant scores each batch in turn (rotating which goes first), so
        # the machine's load, shared with other jobs, falls on all of them alike.
        for b, start in enumerate(range(0, len(images), args.batch)):
            names = list(variants)
            for name in names[b % len(names):] + names[: b % len(names)]:
                started = time.perf_counter()
                verdicts[name] += detectors[name].score_many(images[start : start + args.batch])
                seconds[name] += time.perf_counter() - started
    finally:
        for det in detectors.values():
            det.close()
    results = {}
    for name in variants:
        results[name] = {"ms_per_listing": 1000 * seconds[name] / len(images),
                         "classes": _per_class(labels, verdicts[name]),
                         "failures": _failures(labels, verdicts[name])}  # fmt: skip
        print(f"{name}: {results[name]['ms_per_listing']:.0f} ms/listing", file=sys.stderr)
    table = markdown(results)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    (args.out / "table.md").write_text(table)
    print(table)
    return 0


def _per_class(labels, verdicts) -> dict[str, dict[str, float | None]]:
    out = {}
    for cls in CLASSES:
        rows = [(row, v) for row, v in zip(labels, verdicts) if row["group"] == cls]
        n = len(rows)
        top = sum(1 for row, v in rows if row["brand"] and v.brand == row["brand"])
        hit = sum(1 for row, v in rows if row["brand"] and v.flagged and v.brand == row["brand"])
        wrong = sum(1 for row, v in rows if v.flagged and v.brand != row["brand"])
        out[cls] = {"n": n, "r_at_1": top / n if cls not in NEGATIVE else None,
                    "recall": hit / n if cls not in NEGATIVE else None, "false_flags": wrong / n}  # fmt: skip
    return out


def _failures(labels, verdicts) -> list[dict[str, object]]:
    """Listings the variant gets wrong, with what the text signal read (for the docs)."""
    out = []
    for row, v in zip(labels, verdicts):
        right = (v.flagged and v.brand == row["brand"]) if row["brand"] else not v.flagged
        if not right:
            text = next((m.signals["text"] for m in v.matches if "text" in m.signals), None)
            out.append({"image": row["image"], "class": row["group"], "written": row["text"], "truth": row["brand"],
                        "flagged": v.flagged, "brand": v.brand, "score": v.score, "text": text})  # fmt: skip
    return out


def markdown(results) -> str:
    head = "| variant | " + " | ".join(CLASSES) + " | ms/listing |\n|---|" + "---|" * (len(CLASSES) + 1) + "\n"
    lines = []
    for variant, r in results.items():
        cells = []
        for cls in CLASSES:
            c = r["classes"][cls]
            if c["r_at_1"] is None:
                cells.append(f"FF {c['false_flags']:.2f}")
            else:
                cells.append(f"{c['r_at_1']:.2f} / {c['recall']:.2f} / FF {c['false_flags']:.2f}")
        lines.append(f"| {variant} | " + " | ".join(cells) + f" | {r['ms_per_listing']:.0f} |")
    note = ("\nPositive classes: R@1 / recall at the shipped thresholds / false flags (wrong brand); "
            "negative classes: false flags.\n")  # fmt: skip
    return head + "\n".join(lines) + "\n" + note


if __name__ == "__main__":
    raise SystemExit(main())
