#!/usr/bin/env python
"""Measure embedding throughput (images/s) of model presets on this machine.

Two figures per preset:
  * model:       Embedder.embed_tensors on ready (n, 3, S, S) batches (the model alone);
  * end-to-end:  JPEG bytes -> load_image -> preprocess -> model (what indexing sees).

Real weights are used when they are on disk; with ``--weights auto`` (default) a preset whose
weights are not cached is run with seeded random weights instead, and the report says so
(speed does not depend on the weight values).

Example:
    python scripts/bench_embed.py --presets clip-vit-b-32 effnet-lite0 --batch-size 32 --threads 2
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import time

import numpy as np
from PIL import Image


def synthetic_jpegs(n: int, size: tuple[int, int] = (640, 480), seed: int = 0) -> list[bytes]:
    """Photo-like JPEGs (smooth gradients plus noise) of a typical listing-photo size."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for _ in range(n):
        base = np.stack(
            [np.sin(xx / rng.uniform(20, 90) + rng.uniform(0, 6)) * 100 + 128 for _ in range(3)], -1
        ) + rng.normal(0, 12, (h, w, 3))
        buf = io.BytesIO()
        Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=88)
        out.append(buf.getvalue())
    return out


def bench_preset(name: str, args: argparse.Namespace, jpegs: list[bytes]) -> dict:
    import torch

    from detector.embedder import create_embedder
    from detector.errors import WeightsUnavailableError
    from detector.images import load_image

    random_weights = args.weights == "random"
    options = {"device": args.device, "batch_size": args.batch_size, "precision": args.precision}
    try:
        emb = create_embedder(name, random_weights=random_weights, allow_download=False, **options)
    except WeightsUnavailableError:
        if args.weights != "auto":
            raise
        emb = create_embedder(name, random_weights=True, **options)
    bs = args.batch_size
    batch = emb.preprocess_batch([load_image(j) for j in jpegs[:bs]])

    def sync() -> None:
        if emb.device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        emb.embed_tensors(batch)
    sync()
    start = time.perf_counter()
    for _ in range(args.batches):
        emb.embed_tensors(batch)
    sync()
    model_s = time.perf_counter() - start

    n = bs * args.batches
    start = time.perf_counter()
    for i in range(0, n, bs):
        images = [load_image(jpegs[(i + k) % len(jpegs)]) for k in range(bs)]
        emb.embed(images)
    sync()
    e2e_s = time.perf_counter() - start

    return {
        "preset": name,
        "weights": emb.fingerprint.weights,
        "device": str(emb.device),
        "precision": emb.precision,
        "batch_size": bs,
        "images": n,
        "model_images_per_s": round(n / model_s, 2),
        "end_to_end_images_per_s": round(n / e2e_s, 2),
        "ms_per_batch_model": round(1000 * model_s / args.batches, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", nargs="+", default=["clip-vit-b-32", "effnet-lite0"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=3, help="timed batches per measurement")
    parser.add_argument("--warmup", type=int, default=1, help="untimed batches first")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default=None, help="auto|fp32|fp16|bf16 (default: preset's)")
    parser.add_argument("--weights", choices=("auto", "real", "random"), default="auto")
    parser.add_argument("--json", dest="json_out", default=None, help="also write results here")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    jpegs = synthetic_jpegs(args.batch_size)
    results = []
    print(
        f"# torch {torch.__version__}, {args.threads} thread(s), "
        f"{platform.processor() or platform.machine()}, load average {os.getloadavg()[0]:.2f}"
    )
    print(
        f"{'preset':16} {'weights':>14} {'device':>6} {'prec':>5} {'bs':>4} "
        f"{'model img/s':>12} {'e2e img/s':>10}"
    )
    for name in args.presets:
        r = bench_preset(name, args, jpegs)
        results.append(r)
        w = r["weights"] if len(r["weights"]) <= 14 else r["weights"][:11] + "..."
        print(
            f"{r['preset']:16} {w:>14} {r['device']:>6} {r['precision']:>5} {r['batch_size']:>4} "
            f"{r['model_images_per_s']:>12.1f} {r['end_to_end_images_per_s']:>10.1f}",
            flush=True,
        )
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as f:
            json.dump({"threads": args.threads, "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
