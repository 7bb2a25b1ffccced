"""The two sides of the embedding comparison and the listing files both embed.

See :mod:`detector.bench.speed` for what each side is and how they are compared.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from detector.models.registry import ModelPreset

OneFn = Callable[[Path], np.ndarray]


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
