"""Embedder: images -> float32 L2-normalised vectors, plus the fingerprint that names them.

This module is the factory: one call, :func:`create_embedder`, builds an :class:`Embedder`
from a preset name (``configs/models/*.json``) and a few overrides, resolving the device, the
precision, torch's threads and the weights. The class itself (preprocessing, the model call,
the decode pipeline) lives in :mod:`detector.embedder_core`; import both from here.

Example:
    >>> from detector.embedder import create_embedder
    >>> from detector.images import load_image
    >>> emb = create_embedder("tiny-clip-test")
    >>> vecs = emb.embed([load_image("photo.jpg")])     # doctest: +SKIP
    >>> vecs.shape, vecs.dtype
    ((1, 64), dtype('float32'))
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from detector.embedder_core import Embedder
from detector.errors import ConfigError
from detector.models.registry import DEFAULT_PRESET, PRECISIONS, ModelPreset, get_preset
from detector.models.weights import resolve_weights

if TYPE_CHECKING:
    import torch

__all__ = [
    "Embedder",
    "auto_num_threads",
    "cpu_has_native_bf16",
    "create_embedder",
    "resolve_device",
    "resolve_precision",
]

log = logging.getLogger(__name__)


def resolve_device(device: str) -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` into a usable device.

    ``"auto"`` picks CUDA when available, else CPU.

    Raises:
        ConfigError: Unknown device string, or a device this machine does not have.
    """
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(
            f"unknown device {device!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"
        ) from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} requested but CUDA is not available here")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {device!r} requested but only {torch.cuda.device_count()} CUDA "
                "device(s) exist"
            )
    elif dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ConfigError("device 'mps' requested but MPS is not available here")
    elif dev.type != "cpu":
        raise ConfigError(
            f"unsupported device {device!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"
        )
    return dev


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), so bf16 is the fast choice.

    Without it oneDNN emulates bf16 and is slower than fp32. Only Linux's ``/proc/cpuinfo`` is
    read; elsewhere the answer is False (fp32, always correct).
    """
    global _native_bf16
    if _native_bf16 is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                flags = {word for line in f if line.startswith("flags") for word in line.split()}
        except OSError:
            flags = set()
        _native_bf16 = bool(flags & {"avx512_bf16", "amx_bf16"})
    return _native_bf16


_native_bf16: bool | None = None


def resolve_precision(precision: str, device: torch.device) -> str:
    """Pick the run precision; ``"auto"`` is the fast choice that keeps the vectors.

    ``"auto"`` -> fp16 on CUDA, bf16 on a CPU with native bf16 (:func:`cpu_has_native_bf16`;
    cosine to fp32 > 0.999 for the built-in presets), fp32 elsewhere.

    Raises:
        ConfigError: Unknown precision, fp16 off GPU, or bf16 on a GPU without bf16.
    """
    import torch

    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        if device.type == "cuda":
            return "fp16"
        return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"
    if precision == "fp16" and device.type == "cpu":
        raise ConfigError("precision 'fp16' needs a GPU; on CPU use 'fp32' or 'bf16'")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("this GPU does not support bf16; use 'fp16' or 'fp32'")
    return precision


def create_embedder(
    preset: str | ModelPreset = DEFAULT_PRESET,
    *,
    device: str = "auto",
    batch_size: int | None = None,
    precision: str | None = None,
    checkpoint: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    random_weights: bool = False,
    allow_download: bool | None = None,
    decode_workers: int | None = None,
    draft: bool | None = None,
    channels_last: bool | None = None,
    gpu_decode: bool | None = None,
    num_threads: int | str | None = None,
) -> Embedder:
    """Build an embedder from a preset name plus overrides.

    Args:
        preset: Preset name (see ``list_presets()``), a preset JSON path, or a ModelPreset.
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``.
        batch_size: Images per model call; default from the preset.
        precision: ``"auto"`` (fp16 on CUDA, bf16 on a CPU with native bf16, else fp32),
            ``"fp32"``, ``"fp16"`` (GPU) or ``"bf16"``; default from the preset.
        checkpoint: Local weights file replacing the preset's weights (torch state dict,
            ``{"state_dict": ...}`` or ``.safetensors``); fingerprint weights ``sha256:<hex>``.
        cache_dir: Download cache (default ``$COUNTERFEIT_CACHE_DIR`` or
            ``~/.cache/counterfeit-detector``).
        random_weights: Use the preset's architecture with seeded random weights (benchmarks,
            tests); fingerprint weights ``random:<seed>``.
        allow_download: Force downloads on/off; None follows ``HF_HUB_OFFLINE`` /
            ``COUNTERFEIT_OFFLINE``.
        decode_workers: Decode/resize threads overlapping the model (0: inline).
        draft: Decode large JPEGs at reduced size (>= 2x the input) in ``embed_sources``.
        channels_last: Channels-last memory format (helps CNNs on CPU).
        gpu_decode: Decode JPEGs with nvJPEG and resize on the GPU (ignored off CUDA).
        num_threads: Set torch's intra-op threads (process-wide!) to this number, or to
            ``"auto"``: the CPUs left after the decode workers (at least 1). OpenMP threads
            that get preempted (by decode threads or other processes) stall every parallel
            op: on the shared 2-core machine ViT-B-32 ran 4x faster with 1 model thread
            than with 2. None (the default unless the preset says otherwise) leaves
            torch's setting alone.

        The last five default to the preset's ``defaults`` (the measured fast choice); none of
        them changes what the vectors mean, so they are not part of the fingerprint.

    Returns:
        A ready Embedder (model in eval mode on ``device``).

    Raises:
        ConfigError: Unknown preset, device, precision or batch size; checkpoint not fitting.
        WeightsUnavailableError: Weights are not on disk and cannot be fetched; the message
            says what to download and where to put it.

    Example:
        >>> emb = create_embedder("tiny-clip-test", device="cpu")
        >>> emb.fingerprint.weights
        'random:0'
    """
    p = preset if isinstance(preset, ModelPreset) else get_preset(preset)
    dev = resolve_device(device)
    prec = resolve_precision(precision if precision is not None else p.precision, dev)
    bs = p.batch_size if batch_size is None else batch_size
    if not isinstance(bs, int) or isinstance(bs, bool) or bs <= 0:
        raise ConfigError(f"batch_size must be a positive integer, got {bs!r}")
    workers = p.decode_workers if decode_workers is None else decode_workers
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
        raise ConfigError(f"decode_workers must be an integer >= 0, got {workers!r}")
    threads = p.num_threads if num_threads is None else num_threads
    if threads == "auto":
        threads = auto_num_threads(workers)
    if threads is not None and (
        not isinstance(threads, int) or isinstance(threads, bool) or threads <= 0
    ):
        raise ConfigError(
            f"num_threads must be a positive integer, 'auto' or None, got {threads!r}"
        )

    weights = resolve_weights(
        p,
        checkpoint=checkpoint,
        cache_dir=cache_dir,
        random_weights=random_weights,
        allow_download=allow_download,
    )
    if p.backend == "open_clip":
        from detector.models.openclip_backend import load_image_tower

        model = load_image_tower(p, weights)
    else:
        from detector.models.timm_backend import load_feature_model

        model = load_feature_model(p, weights)
    model = model.to(dev).eval()
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    emb = Embedder(
        p,
        model,
        weights,
        device=dev,
        batch_size=bs,
        precision=prec,
        decode_workers=workers,
        draft=p.draft if draft is None else bool(draft),
        channels_last=p.channels_last if channels_last is None else bool(channels_last),
        gpu_decode=p.gpu_decode if gpu_decode is None else bool(gpu_decode),
    )
    log.info("embedder %s: %s", emb, p.arch_id)
    return emb


def auto_num_threads(decode_workers: int) -> int:
    """Model threads that leave one CPU per decode worker (at least 1)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus - decode_workers)

