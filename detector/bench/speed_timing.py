"""Timing and agreement measurements of the embedding comparison, and the machine they ran on.

Sides are timed in rotating order within each round (throughput) or call (latency), so a
slow spell of a shared machine hits all of them alike.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

BatchFn = Callable[[Sequence[Path]], np.ndarray]


def with_threads(fn: Callable[..., Any], threads: int) -> Callable[..., Any]:
    """``fn`` run with torch's intra-op threads set to ``threads`` (each side keeps its own)."""
    import torch

    def run(*args: Any) -> Any:
        torch.set_num_threads(threads)
        return fn(*args)

    return run


def measure_throughput(
    sides: dict[str, BatchFn], paths: Sequence[Path], *, rounds: int, reference: str = "baseline"
) -> dict[str, Any]:
    """End-to-end images/s (files -> vectors) of several sides, in rotating order per round.

    Args:
        sides: Name -> function embedding a list of files (returns (n, dim) vectors).
        paths: The files.
        rounds: Timing rounds; each side runs once per round, the order rotates.
        reference: The side every other side's ratio is taken against.

    Returns:
        Per side: median images/s and median of per-round ratios to ``reference``; the last
        vectors of each side (key ``_vectors``) and the 1-minute load average per round.
    """
    names = list(sides)
    for fn in sides.values():
        fn(paths[:2])  # warm-up: first-call allocations and kernel selection
    ips: dict[str, list[float]] = {n: [] for n in names}
    vectors: dict[str, np.ndarray] = {}
    load = [os.getloadavg()[0]]
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            vectors[name] = sides[name](paths)
            ips[name].append(len(paths) / (time.perf_counter() - start))
        load.append(os.getloadavg()[0])
    out: dict[str, Any] = {"n_images": len(paths), "rounds": rounds}
    for name in names:
        out[f"{name}_ips"] = statistics.median(ips[name])
        if name != reference:
            out[f"{name}_ratio"] = statistics.median(
                [a / b for a, b in zip(ips[name], ips[reference])]
            )
    out["load_avg_1m"] = [round(v, 2) for v in load]
    out["_vectors"] = vectors
    return out


def measure_latency(
    sides: dict[str, Callable[[Path], Any]], paths: Sequence[Path], *, repeats: int
) -> dict[str, Any]:
    """Warm single-image latency (file -> vector) of each side, calls alternating."""
    names = list(sides)
    for fn in sides.values():
        fn(paths[0])
    ms: dict[str, list[float]] = {n: [] for n in names}
    for k in range(repeats):
        path = paths[k % len(paths)]
        for name in names[k % len(names) :] + names[: k % len(names)]:
            start = time.perf_counter()
            sides[name](path)
            ms[name].append(1000 * (time.perf_counter() - start))
    out: dict[str, Any] = {"repeats": repeats}
    for name in names:
        out[f"{name}_p50_ms"] = float(np.percentile(ms[name], 50))
        out[f"{name}_p99_ms"] = float(np.percentile(ms[name], 99))
    out["p50_ratio"] = out["project_p50_ms"] / out["baseline_p50_ms"]
    return out


def cosine_agreement(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """Row-wise cosine between two sets of vectors of the same images (min and mean)."""
    a = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    b = other / np.linalg.norm(other, axis=1, keepdims=True)
    cos = np.sum(a * b, axis=1)
    return {"cosine_min": float(cos.min()), "cosine_mean": float(cos.mean()), "n": len(cos)}


def model_gflops(embedder: Any) -> float:
    """FLOPs of one image through the model (torch's FLOP counter; matmuls and convs), in G."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, embedder.image_size, embedder.image_size)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        embedder.embed_tensors(x)
    return counter.get_total_flops() / 1e9


def matmul_peak_gflops(dtype: str = "bf16", size: int = 1024, repeats: int = 5) -> float:
    """Best-of-``repeats`` GFLOP/s of a square matmul (what this CPU gives the model now)."""
    import torch

    dt = torch.bfloat16 if dtype == "bf16" else torch.float32
    a = torch.randn(size, size).to(dt)
    b = torch.randn(size, size).to(dt)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def environment() -> dict[str, Any]:
    """Machine, library versions and the load at the time of the call."""
    import open_clip
    import PIL
    import torch

    from detector.embedder import cpu_has_native_bf16

    return {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "native_bf16": cpu_has_native_bf16(),
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "pillow": PIL.__version__,
        "load_avg": [round(v, 2) for v in os.getloadavg()],
    }
