"""The preset's preprocessing on torch tensors, for JPEG decoding and resizing on a GPU.

On CUDA, ``torchvision.io.decode_jpeg(device="cuda")`` (nvJPEG) decodes whole batches and
the antialiased bicubic resize runs on the GPU, so the CPU only reads bytes. The same code
runs on CPU tensors, which is how the tests check it on machines without a GPU: it agrees
with the PIL path (:func:`detector.models.preprocess.build_pil_transform`) to within a
few grey levels (torch's antialiased bicubic follows PIL's kernel), well inside the cosine
0.998 bar.

Example:
    >>> prep = build_tensor_transform(get_preset("tiny-clip-test"))   # doctest: +SKIP
    >>> prep(decode_jpegs([data], "cpu")[0]).shape                     # doctest: +SKIP
    torch.Size([64, 64, 3])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from detector.models.preprocess import PAD_FILL
from detector.models.registry import ModelPreset

if TYPE_CHECKING:
    import torch


def decode_jpegs(datas: Sequence[bytes], device: str | torch.device) -> list[torch.Tensor | None]:
    """Decode JPEG files to (3, H, W) uint8 RGB tensors on ``device``, EXIF orientation applied.

    A batch is decoded in one call; when that fails, each item is retried alone so that one bad
    file costs only its own slot.

    Args:
        datas: Encoded JPEG files.
        device: ``"cpu"`` or a CUDA device (nvJPEG).

    Returns:
        One tensor per input, or None where that item could not be decoded here (the caller
        falls back to the PIL path, which reports a proper error).
    """
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    if not datas:
        return []
    encoded = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]

    def run(items: list[torch.Tensor]) -> list[torch.Tensor]:
        out = decode_jpeg(items, mode=ImageReadMode.RGB, device=device, apply_exif_orientation=True)
        return list(out) if isinstance(out, (list, tuple)) else [out]

    try:
        return list(run(encoded))
    except (RuntimeError, ValueError):
        pass
    results: list[torch.Tensor | None] = []
    for item in encoded:
        try:
            results.append(run([item])[0])
        except (RuntimeError, ValueError):
            results.append(None)
    return results


def build_tensor_transform(preset: ModelPreset) -> Callable[[torch.Tensor], torch.Tensor]:
    """The preset's resize/crop/pad for a (3, H, W) uint8 tensor, on the tensor's device.

    Args:
        preset: Model preset (image_size, interpolation, resize_mode).

    Returns:
        A callable returning an (S, S, 3) uint8 tensor: the same layout the PIL path produces,
        so both feed :func:`detector.models.preprocess.normalise_uint8_batch`.
    """
    import torch
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    size = preset.image_size
    mode = InterpolationMode(preset.interpolation)

    def resize(img: torch.Tensor, hw: tuple[int, int] | int) -> torch.Tensor:
        return F.resize(
            img, hw if isinstance(hw, int) else list(hw), interpolation=mode, antialias=True
        )

    def shortest(img: torch.Tensor) -> torch.Tensor:
        return F.center_crop(resize(img, size), [size, size])

    def squash(img: torch.Tensor) -> torch.Tensor:
        return resize(img, (size, size))

    def longest(img: torch.Tensor) -> torch.Tensor:
        # Same geometry as PIL's ImageOps.pad(centering=(0.5, 0.5)) used by the PIL path.
        h, w = int(img.shape[-2]), int(img.shape[-1])
        if w >= h:
            new_w, new_h = size, max(1, round(h / w * size))
        else:
            new_w, new_h = max(1, round(w / h * size)), size
        small = resize(img, (new_h, new_w)) if (new_h, new_w) != (h, w) else img
        out = torch.empty((3, size, size), dtype=torch.uint8, device=img.device)
        out[:] = torch.tensor(PAD_FILL, dtype=torch.uint8, device=img.device).view(3, 1, 1)
        top, left = round((size - new_h) * 0.5), round((size - new_w) * 0.5)
        out[:, top : top + new_h, left : left + new_w] = small
        return out

    geometry = {"shortest": shortest, "squash": squash, "longest": longest}[preset.resize_mode]

    def transform(img: torch.Tensor) -> torch.Tensor:
        if img.dtype != torch.uint8 or img.ndim != 3 or img.shape[0] != 3:
            raise ValueError(
                f"expected a (3, H, W) uint8 tensor, got {tuple(img.shape)} {img.dtype}"
            )
        return geometry(img).permute(1, 2, 0)

    return transform
