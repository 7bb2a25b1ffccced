"""What a bench result records besides the figures (machine, model, peak memory), and writing
it as JSON and markdown tables.
"""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

RESULT_FORMAT = 1


@dataclass(frozen=True)
class BenchResult:
    """Outcome of :func:`detector.bench.runner.run_benchmark`.

    Attributes:
        data: Every figure (what the JSON file holds).
        json_path: The JSON file written.
        markdown_path: The markdown tables written.
        markdown: The markdown text.
    """

    data: dict[str, Any]
    json_path: Path
    markdown_path: Path
    markdown: str


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (``getrusage``; KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def machine_info(device: str) -> dict[str, Any]:
    """CPU, cores, load, library versions and device: what a figure depends on."""
    import faiss
    import torch

    info: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average_start": loadavg(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "faiss": getattr(faiss, "__version__", "unknown"),
        "numpy": np.__version__,
        "device_requested": device,
        "cuda_available": torch.cuda.is_available(),
    }
    for module in ("open_clip", "timm", "PIL", "cv2"):
        info[module] = _version(module)
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def model_info(det: Any) -> dict[str, Any]:
    """Preset, weights, device, precision and threads the figures were measured with."""
    import torch

    emb = det.embedder
    return {
        "preset": emb.preset.name,
        "fingerprint": det.fingerprint.to_dict(),
        "weights": emb.fingerprint.weights,
        "random_weights": emb.fingerprint.weights.startswith("random:"),
        "device": str(emb.device),
        "precision": emb.precision,
        "batch_size": emb.batch_size,
        "torch_threads": torch.get_num_threads(),
        "embedder": repr(emb),
    }


def loadavg() -> list[float] | None:
    """1, 5 and 15-minute load averages, or None where the platform has none."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(module: str) -> str | None:
    import importlib

    try:
        mod = importlib.import_module(module)
    except ImportError:
        return None
    return str(getattr(mod, "__version__", "unknown"))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, Path):
        return str(value)
    return value


def write_result(
    data: dict[str, Any], json_path: Path, md_path: Path
) -> tuple[dict[str, Any], str]:
    """Write the figures to ``json_path`` and their markdown tables to ``md_path``.

    Returns:
        The figures as written (JSON types only) and the markdown text.
    """
    from detector.bench.tables import render_markdown
    from index.atomic import atomic_write_bytes

    data = _jsonable(data)
    markdown = render_markdown(data)
    # Not atomic_write_json: its sorted keys would lose the run order of variants and rows.
    atomic_write_bytes(json_path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))
    atomic_write_bytes(md_path, markdown.encode("utf-8"))
    return data, markdown
