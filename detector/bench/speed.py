"""Embedding speed and agreement: the project's fast path against the plain open_clip loop.

Every figure is a *ratio within one run*: the baseline and the project are timed in
alternating rounds on the same files, because the machines this runs on are shared and
noisy. Absolute images/s are reported too, with the load average seen during the run.

* baseline (open_clip presets): ``open_clip.create_model_and_transforms(arch, pretrained=None)``
  with the same seeded weights, its own preprocess transform, ``Image.open`` -> tensor ->
  ``encode_image``, one image at a time, fp32;
* baseline (timm presets): the timm model in fp32 with the preset's preprocessing, one image
  at a time;
* project: :meth:`detector.embedder.Embedder.embed_sources` with the preset's defaults
  (or overrides).

This module runs the comparison and renders its table; the sides live in
:mod:`~detector.bench.speed_sides` and the measurements in :mod:`~detector.bench.speed_timing`
(their names are importable from here too).

Example:
    >>> from detector.bench.speed import run_speed_benchmark, markdown_table
    >>> result = run_speed_benchmark(["tiny-clip-test"], quick=True)   # doctest: +SKIP
    >>> print(markdown_table(result))                                   # doctest: +SKIP
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from detector.bench.speed_sides import (
    OneFn,
    baseline_embed_one,
    make_listing_jpegs,
    project_embedder,
)
from detector.bench.speed_timing import (
    BatchFn,
    cosine_agreement,
    environment,
    matmul_peak_gflops,
    measure_latency,
    measure_throughput,
    model_gflops,
    with_threads,
)
from detector.errors import ConfigError
from detector.models.registry import ModelPreset, get_preset

__all__ = [
    "ABLATIONS",
    "DEFAULT_SIZES",
    "BatchFn",
    "OneFn",
    "baseline_embed_one",
    "cosine_agreement",
    "environment",
    "make_listing_jpegs",
    "markdown_table",
    "matmul_peak_gflops",
    "measure_latency",
    "measure_throughput",
    "model_gflops",
    "project_embedder",
    "run_speed_benchmark",
    "with_threads",
]

#: Listing photo sizes measured by default (width, height).
DEFAULT_SIZES: tuple[tuple[int, int], ...] = ((1024, 768), (3000, 2000))

#: One-line names of the option switches measured by ``ablations``.
ABLATIONS: dict[str, dict[str, Any]] = {
    "precision=fp32": {"precision": "fp32"},
    "decode_workers=0": {"decode_workers": 0},
    "draft=False": {"draft": False},
    "channels_last=False": {"channels_last": False},
}


def _ablation_rows(pair: dict[str, Any], files: dict[Any, Sequence[Path]], rounds: int) -> dict[str, Any]:
    """Default settings vs one switched-off option, per photo size (interleaved rounds)."""
    rows = {}
    for size, paths in files.items():
        tp = measure_throughput(pair, paths, rounds=rounds, reference="variant")
        rows[f"{size[0]}x{size[1]}"] = {
            "default_ips": tp["project_ips"],
            "variant_ips": tp["variant_ips"],
            "default_over_variant": tp["project_ratio"],
        }
    return rows


def run_speed_benchmark(
    presets: Sequence[str] = ("clip-vit-b-32", "effnet-lite0"),
    *,
    sizes: Sequence[tuple[int, int]] = DEFAULT_SIZES,
    n_images: int = 8,
    rounds: int = 3,
    latency_repeats: int = 20,
    data_dir: str | os.PathLike | None = None,
    ablations: bool = False,
    reference_peak_gflops: float = 390.0,
    quick: bool = False,
    overrides: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measure baseline vs project per preset and image size; see the module docstring.

    Args:
        presets: Preset names.
        sizes: Listing photo sizes (width, height).
        n_images: Files per size.
        rounds: Alternating timing rounds per size.
        latency_repeats: Single-image calls per side.
        data_dir: Where the generated JPEGs live (reused between runs); a temp dir if None.
        ablations: Also time the project with each fast-path option switched off.
        reference_peak_gflops: The bf16 matmul rate quoted for this machine (issue #7), for the
            "% of ceiling" column; the run also measures its own.
        quick: Tiny run for tests (3 images, 1 round, 4 latency calls, small sizes).
        overrides: ``create_embedder`` overrides for the project side.
        log: Progress callback (e.g. ``print``).

    Returns:
        A JSON-serialisable dict: ``environment``, ``presets`` (per preset: options, gflops,
        ceiling, per-size throughput/accuracy, latency, ablations).

    Raises:
        ConfigError: Unknown preset.
    """
    say = log or (lambda _msg: None)
    if quick:
        sizes = [(320, 240), (900, 600)]
        n_images, rounds, latency_repeats = 3, 1, 4
    if n_images < 1 or rounds < 1 or latency_repeats < 1:
        raise ConfigError("n_images, rounds and latency_repeats must be >= 1")
    tmp = None
    if data_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench-speed-")
        data_dir = tmp.name
    try:
        files = {size: make_listing_jpegs(data_dir, size, n_images) for size in sizes}
        result: dict[str, Any] = {"environment": environment(), "presets": {}}
        result["environment"]["bf16_matmul_gflops"] = round(matmul_peak_gflops("bf16"), 1)
        result["environment"]["reference_peak_gflops"] = reference_peak_gflops
        for name in presets:
            say(f"== {name}")
            result["presets"][name] = _bench_preset(
                get_preset(name),
                files,
                rounds=rounds,
                latency_repeats=latency_repeats,
                ablations=ablations,
                reference_peak_gflops=reference_peak_gflops,
                overrides=overrides or {},
                say=say,
            )
        result["environment"]["load_avg_end"] = [round(v, 2) for v in os.getloadavg()]
        return result
    finally:
        if tmp is not None:
            tmp.cleanup()


def _bench_preset(
    preset: ModelPreset,
    files: dict[tuple[int, int], list[Path]],
    *,
    rounds: int,
    latency_repeats: int,
    ablations: bool,
    reference_peak_gflops: float,
    overrides: dict[str, Any],
    say: Callable[[str], None],
) -> dict[str, Any]:
    import torch

    default_threads = torch.get_num_threads()
    one = baseline_embed_one(preset)
    project = project_embedder(preset, **overrides)
    project_threads = torch.get_num_threads()  # what create_embedder chose (num_threads)
    gflops = model_gflops(project)

    def project_batch(paths: Sequence[Path]) -> np.ndarray:
        res = project.embed_sources(paths)
        if res.errors:
            raise RuntimeError(f"project failed: {res.errors[0].reason}")
        return res.vectors

    def baseline_batch(paths: Sequence[Path]) -> np.ndarray:
        return np.stack([one(p) for p in paths])

    # The plain loop runs with torch's default threads; "baseline_same_threads" gives it the
    # project's thread setting, to show how much of the gain is the thread count alone.
    sides: dict[str, BatchFn] = {
        "baseline": with_threads(baseline_batch, default_threads),
        "project": with_threads(project_batch, project_threads),
    }
    if project_threads != default_threads:
        sides["baseline_same_threads"] = with_threads(baseline_batch, project_threads)
    out: dict[str, Any] = {
        "project": repr(project),
        "threads": {"baseline": default_threads, "project": project_threads},
        "model_gflops": round(gflops, 3),
        "ceiling_ips": reference_peak_gflops / gflops,
        "sizes": {},
    }
    all_base, all_proj = [], []
    for size, paths in files.items():
        key = f"{size[0]}x{size[1]}"
        say(f"   throughput {key}")
        tp = measure_throughput(sides, paths, rounds=rounds)
        vectors = tp.pop("_vectors")
        all_base.append(vectors["baseline"])
        all_proj.append(vectors["project"])
        tp["pct_of_ceiling"] = 100 * tp["project_ips"] / out["ceiling_ips"]
        tp["accuracy"] = cosine_agreement(vectors["baseline"], vectors["project"])
        out["sizes"][key] = tp
    out["accuracy"] = cosine_agreement(np.concatenate(all_base), np.concatenate(all_proj))
    first_size = next(iter(files))
    say(f"   latency {first_size[0]}x{first_size[1]}")
    out["latency"] = measure_latency(
        {
            "baseline": with_threads(one, default_threads),
            "project": with_threads(lambda p: project_batch([p]), project_threads),
        },
        files[first_size],
        repeats=latency_repeats,
    )
    out["latency"]["size"] = f"{first_size[0]}x{first_size[1]}"
    if ablations:
        out["ablations"] = {}
        for label, change in ABLATIONS.items():
            key, value = next(iter(change.items()))
            if getattr(project, key, None) == value:
                continue  # already off in this preset: nothing to compare
            say(f"   ablation {label}")
            variant = project_embedder(preset, **{**overrides, **change})
            torch.set_num_threads(project_threads)

            def variant_batch(paths: Sequence[Path], v: Any = variant) -> np.ndarray:
                return v.embed_sources(paths).vectors

            pair = {"project": project_batch, "variant": variant_batch}
            out["ablations"][label] = _ablation_rows(pair, files, rounds)
            variant.close()
        if project_threads != default_threads:
            say("   ablation num_threads")
            pair = {
                "project": with_threads(project_batch, project_threads),
                "variant": with_threads(project_batch, default_threads),
            }
            label = f"num_threads={default_threads} (torch default)"
            out["ablations"][label] = _ablation_rows(pair, files, rounds)
    project.close()
    torch.set_num_threads(default_threads)
    return out


def markdown_table(result: dict[str, Any]) -> str:
    """The headline table of a :func:`run_speed_benchmark` result, as Markdown."""
    env = result["environment"]
    lines = [
        (
            f"CPU threads {env['torch_threads']}, native bf16 {env['native_bf16']}, "
            f"bf16 matmul {env['bf16_matmul_gflops']} GFLOP/s measured "
            f"(ceiling uses {env['reference_peak_gflops']}), "
            f"load avg start {env['load_avg']} end {env.get('load_avg_end')}"
        ),
        "",
        (
            "| preset | size | baseline img/s | project img/s | ratio (median of rounds) "
            "| baseline w/ project threads img/s | % of ceiling | cos min | cos mean | load 1m |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, pr in result["presets"].items():
        for key, tp in pr["sizes"].items():
            acc = tp["accuracy"]
            lines.append(
                f"| {name} | {key} | {tp['baseline_ips']:.1f} | {tp['project_ips']:.1f} "
                f"| {tp['project_ratio']:.2f}x "
                f"| {tp.get('baseline_same_threads_ips', float('nan')):.1f} "
                f"| {tp['pct_of_ceiling']:.0f}% of {pr['ceiling_ips']:.0f} "
                f"| {acc['cosine_min']:.5f} | {acc['cosine_mean']:.5f} "
                f"| {min(tp['load_avg_1m']):.1f}-{max(tp['load_avg_1m']):.1f} |"
            )
    lines += [
        "",
        "| preset | latency size | baseline p50 / p99 ms | project p50 / p99 ms | p50 ratio |",
        "|---|---|---|---|---|",
    ]
    for name, pr in result["presets"].items():
        lat = pr["latency"]
        lines.append(
            f"| {name} | {lat['size']} | {lat['baseline_p50_ms']:.1f} / "
            f"{lat['baseline_p99_ms']:.1f} | {lat['project_p50_ms']:.1f} / "
            f"{lat['project_p99_ms']:.1f} | {lat['p50_ratio']:.2f} |"
        )
    lines.append("")
    lines.append(
        "threads: "
        + ", ".join(
            f"{n} baseline {pr['threads']['baseline']} / project {pr['threads']['project']}"
            for n, pr in result["presets"].items()
        )
    )
    if any("ablations" in pr for pr in result["presets"].values()):
        lines += [
            "",
            "| preset | switched off | size | default img/s | variant img/s | default/variant |",
            "|---|---|---|---|---|---|",
        ]
        for name, pr in result["presets"].items():
            for label, per_size in pr.get("ablations", {}).items():
                for key, ab in per_size.items():
                    lines.append(
                        f"| {name} | {label} | {key} | {ab['default_ips']:.1f} "
                        f"| {ab['variant_ips']:.1f} | {ab['default_over_variant']:.2f}x |"
                    )
    return "\n".join(lines)
