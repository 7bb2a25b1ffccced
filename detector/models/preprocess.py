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


def build_transform(preset: ModelPreset) -> Callable[[Image.Image], torch.Tensor]:
    """The preset's PIL -> CHW float32 tensor transform.

    Args:
        preset: Model preset (image_size, mean, std, interpolation, resize_mode).

    Returns:
        A callable taking a PIL image of any mode (converted to RGB as
        :func:`detector.images.to_rgb` does) and returning a normalised (3, S, S) tensor.

    Example:
        >>> t = build_transform(get_preset("tiny-clip-test"))
        >>> t(Image.new("RGB", (100, 80))).shape
        torch.Size([3, 64, 64])
    """
    from torchvision import transforms as T  # noqa: N812 - lazy: keep `import detector` light

    size = preset.image_size
    mode = T.InterpolationMode(preset.interpolation)
    steps: list[Callable] = [to_rgb]
    if preset.resize_mode == "shortest":
        steps += [T.Resize(size, interpolation=mode), T.CenterCrop(size)]
    elif preset.resize_mode == "squash":
        steps += [T.Resize((size, size), interpolation=mode)]
    else:
        steps += [_LongestPad(size, _PIL_INTERPOLATION[preset.interpolation])]
    steps += [T.ToTensor(), T.Normalize(mean=preset.mean, std=preset.std)]
    return T.Compose(steps)


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
