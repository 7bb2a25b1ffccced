"""Image preprocessing built from a preset's fields (torchvision ops on PIL images).

For ``resize_mode="shortest"`` this is numerically the same pipeline as open_clip's inference
``image_transform`` (resize the short side, centre crop, to tensor, normalise), so open_clip
weights see exactly what they were trained to see. ``"longest"`` keeps the whole image:
resize the long side, then pad to a square with **white**, because references (logos,
product shots) are mostly on white; open_clip pads with black. ``"squash"`` resizes to a
square ignoring the aspect ratio.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps

from detector.images import to_rgb
from detector.models.registry import ModelPreset

if TYPE_CHECKING:
    import torch

PAD_FILL = (255, 255, 255)  # "longest" pads with white (see module docstring)

_PIL_INTERPOLATION = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}


def preprocess_identity(preset: ModelPreset) -> dict[str, object]:
    """Everything about preprocessing that changes the vectors (for the fingerprint)."""
    ident: dict[str, object] = dict(preset.preprocess_config())
    if preset.resize_mode == "longest":
        ident["pad"] = list(PAD_FILL)
    return ident


def build_pil_transform(preset: ModelPreset) -> Callable[[Image.Image], Image.Image]:
    """The geometric part of the preset's preprocessing: any PIL image -> RGB ``S x S`` image.

    This is everything before "to tensor and normalise"; the fast path runs it in decode
    worker threads (PIL releases the GIL while resizing) and normalises whole batches later
    with :func:`normalise_uint8_batch`.

    Args:
        preset: Model preset (image_size, interpolation, resize_mode).

    Returns:
        A callable taking a PIL image of any mode (converted as :func:`detector.images.to_rgb`
        does) and returning an RGB image of exactly ``image_size x image_size``.

    Example:
        >>> build_pil_transform(get_preset("tiny-clip-test"))(Image.new("L", (100, 80))).size
        (64, 64)
    """
    from torchvision import transforms as T

    size = preset.image_size
    mode = T.InterpolationMode(preset.interpolation)
    steps: list[Callable] = [to_rgb]
    if preset.resize_mode == "shortest":
        steps += [T.Resize(size, interpolation=mode), T.CenterCrop(size)]
    elif preset.resize_mode == "squash":
        steps += [T.Resize((size, size), interpolation=mode)]
    else:
        steps += [_LongestPad(size, _PIL_INTERPOLATION[preset.interpolation])]
    return T.Compose(steps)


def build_transform(preset: ModelPreset) -> Callable[[Image.Image], torch.Tensor]:
    """The preset's PIL -> CHW float32 tensor transform.

    Args:
        preset: Model preset (image_size, mean, std, interpolation, resize_mode).

    Returns:
        A callable taking a PIL image of any mode (converted to RGB as
        :func:`detector.images.to_rgb` does) and returning a normalised (3, S, S) tensor,
        bit-identical to torchvision's ``ToTensor`` + ``Normalize`` after
        :func:`build_pil_transform`.

    Example:
        >>> t = build_transform(get_preset("tiny-clip-test"))
        >>> t(Image.new("RGB", (100, 80))).shape
        torch.Size([3, 64, 64])
    """
    pil = build_pil_transform(preset)

    def transform(img: Image.Image) -> torch.Tensor:
        return normalise_uint8_batch(image_to_uint8(pil(img))[None], preset)[0]

    return transform


def image_to_uint8(img: Image.Image) -> np.ndarray:
    """An RGB PIL image as a new, writable (H, W, 3) uint8 array."""
    return np.array(img, dtype=np.uint8)


def normalise_uint8_batch(
    batch: np.ndarray | torch.Tensor, preset: ModelPreset, *, device: torch.device | None = None
) -> torch.Tensor:
    """(n, H, W, 3) uint8 pixels -> (n, 3, H, W) float32 normalised like the preset says.

    The arithmetic is exactly torchvision's ``ToTensor`` then ``Normalize`` (divide by 255,
    subtract the mean, divide by the std, each rounded in float32), so vectors do not depend
    on which path prepared the pixels. The result is a channels-last view of the NHWC input
    (``.contiguous()`` gives NCHW; CNNs in channels-last take it as is).

    Args:
        batch: uint8 pixels, NumPy or torch, any device.
        preset: Gives mean and std.
        device: Where to compute; default where ``batch`` is (CPU for NumPy). Moving the uint8
            pixels before normalising sends 4x fewer bytes to a GPU.

    Returns:
        float32 tensor on ``device``.
    """
    import torch

    x = torch.from_numpy(np.ascontiguousarray(batch)) if isinstance(batch, np.ndarray) else batch
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected (n, H, W, 3) uint8 pixels, got {tuple(x.shape)} {x.dtype}")
    if device is not None:
        x = x.to(device, non_blocking=True)
    mean = torch.tensor(preset.mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(preset.std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return x.permute(0, 3, 1, 2).float().div(255).sub(mean).div(std)


class _LongestPad:
    """Resize so the long side is ``size`` (keeping aspect ratio), then centre-pad to a square."""

    def __init__(self, size: int, resample: Image.Resampling) -> None:
        self.size = size
        self.resample = resample

    def __call__(self, img: Image.Image) -> Image.Image:
        return ImageOps.pad(
            img, (self.size, self.size), method=self.resample, color=PAD_FILL, centering=(0.5, 0.5)
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, fill={PAD_FILL})"
