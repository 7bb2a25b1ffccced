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

Example:
    >>> from detector.bench.speed import run_speed_benchmark, markdown_table
    >>> result = run_speed_benchmark(["tiny-clip-test"], quick=True)   # doctest: +SKIP
    >>> print(markdown_table(result))                                   # doctest: +SKIP
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from detector.errors import ConfigError
from detector.models.registry import ModelPreset, get_preset

#: Listing photo sizes measured by default (width, height).
DEFAULT_SIZES: tuple[tuple[int, int], ...] = ((1024, 768), (3000, 2000))

#: One-line names of the option switches measured by ``ablations``.
ABLATIONS: dict[str, dict[str, Any]] = {
    "precision=fp32": {"precision": "fp32"},
    "decode_workers=0": {"decode_workers": 0},
    "draft=False": {"draft": False},
    "channels_last=False": {"channels_last": False},
}

OneFn = Callable[[Path], np.ndarray]


# --- data ------------------------------------------------------------------------------------


def make_listing_jpegs(
    out_dir: str | os.PathLike, size: tuple[int, int], n: int, *, seed: int = 0
) -> list[Path]:
    """Photo-like listing JPEGs: bundled skimage photos cropped, resized up, jittered, noised.

    Sensor-like noise (sigma 4) keeps the files as hard to decode as camera JPEGs (upscaled
    photos alone are unrealistically smooth). Existing files of the same name are reused.

    Args:
        out_dir: Folder to write into (created).
        size: (width, height).
        n: Number of files.
        seed: Seed; the same seed gives the same files.

    Returns:
        The file paths.
    """
    from detector.bench.photos import random_background

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = out / f"listing_{size[0]}x{size[1]}_s{seed}_{i:03d}.jpg"
        if not path.exists():
            rng = np.random.default_rng([seed, size[0], size[1], i])
            img = np.asarray(random_background(rng, size), dtype=np.int16)
            noisy = img + rng.normal(0, 4, img.shape).astype(np.int16)
            tmp = path.with_suffix(".tmp")
            Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(tmp, "JPEG", quality=90)
            os.replace(tmp, path)
        paths.append(path)
    return paths


# --- the two sides ---------------------------------------------------------------------------


def baseline_embed_one(preset: ModelPreset, seed: int = 0) -> OneFn:
    """The plain loop for one preset: file -> its library's preprocess -> fp32 model -> unit row.

    Raises:
        ConfigError: The preset's weights are not random/package weights available offline.
    """
    import torch

    if preset.backend == "open_clip":
        import open_clip

        from detector.models.openclip_backend import register_model_config

        register_model_config(preset)
        # Same seeded init as detector.models.openclip_backend.build_clip_model.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model, _, transform = open_clip.create_model_and_transforms(
                preset.arch, pretrained=None, device="cpu"
            )
        model.eval()

        def one(path: Path) -> np.ndarray:
            with torch.inference_mode():
                x = transform(Image.open(path)).unsqueeze(0)
                return model.encode_image(x, normalize=True)[0].numpy()

        return one

    from detector.models.preprocess import build_transform
    from detector.models.timm_backend import load_feature_model
    from detector.models.weights import resolve_weights

    net = load_feature_model(preset, resolve_weights(preset, allow_download=False)).eval()
    prep = build_transform(preset)

    def one_timm(path: Path) -> np.ndarray:
        with torch.inference_mode():
            x = prep(Image.open(path).convert("RGB")).unsqueeze(0)
            feat = net(x)[0]
            return (feat / feat.norm()).numpy()

    return one_timm


def project_embedder(preset: ModelPreset, **overrides: Any) -> Any:
    """The project's embedder on CPU: random weights for hub presets, the real ones otherwise."""
    from detector.embedder import create_embedder

    random_weights = preset.weights.get("type") in ("open_clip_tag", "hf_hub")
    return create_embedder(preset, device="cpu", random_weights=random_weights, **overrides)


# --- measurements ----------------------------------------------------------------------------


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


# --- the whole run ---------------------------------------------------------------------------



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
