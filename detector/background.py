"""Score normalisation against a background set (:class:`NormaliseConfig`), after the
similarity normalisation of SSCD (Pizzi et al., "A self-supervised descriptor for image copy
detection", CVPR 2022), DISC21's best descriptors::

    cos'(listing, reference) = cos(listing, reference) - beta * bg_k(listing)

``bg_k(listing)`` is the listing's k-th highest cosine to a *background* set of images that
show no registered brand, embedded with the same model; 0 when the background holds fewer
than ``k`` images (so with an empty background ``cos' == cos``). A listing that resembles
everything (a plain mark, a busy photo a model finds close to many logos) has a high
``bg_k`` and its cosines are discounted by it; a listing whose cosine to a reference stands
out from its cosines to unrelated images keeps its score. Each embedded view of a listing
(the frame, regions, silhouettes) is normalised by its own ``bg_k``.

The background is generated, not shipped (:func:`background_images`): deterministic images of
random geometric marks (polygons, stars, rings, bars, dots; one to three colours, text-free)
and plain product-like images (a lit object shape on a gradient or a textured backdrop), none
a brand's. Their vectors live with the index, keyed by the model's fingerprint::

    <index>/background/<fingerprint hash>-n<N>-s<seed>-v<generator version>.npy

written by :func:`build_background` (e.g. after indexing) or lazily by the detector on first
use (kept in memory only when the index folder is read-only).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from detector.errors import ConfigError, DetectorError
from index.records import Fingerprint

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1
BACKGROUND_DIR = "background"
IMAGE_SIDE = 256
EMBED_BATCH = 64

Embed = Callable[[list[Image.Image]], np.ndarray]


@dataclass(frozen=True)
class NormaliseConfig:
    """Background normalisation of the embedding cosine (module docstring). Off by default:
    the shipped thresholds are tuned on raw cosines.

    Attributes:
        enabled: Normalise every embedding cosine by the listing's ``bg_k``.
        k: Which neighbour in the background: the k-th most similar background image.
        beta: How much of ``bg_k`` is taken off (SSCD: 1).
        background: Background images generated (0: none, the identity); at least ``k``.
        seed: Generator seed.
    """

    enabled: bool = False
    k: int = 10
    beta: float = 1.0
    background: int = 500
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.k >= 1, f"normalise.k must be >= 1, got {self.k}"),
            (0.0 <= self.beta <= 2.0, f"normalise.beta must be in [0, 2], got {self.beta}"),
            (0 <= self.background <= 100_000, f"normalise.background must be in [0, 100000], got {self.background}"),
            (self.background == 0 or self.background >= self.k,
             f"normalise.background must be 0 or at least k={self.k}, got {self.background}"),
            (self.seed >= 0, f"normalise.seed must be >= 0, got {self.seed}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


def background_similarity(vectors: np.ndarray, background: np.ndarray, k: int) -> np.ndarray:
    """``bg_k`` of each row of ``vectors`` (L2-normalised, (r, d)): its k-th highest cosine
    to the ``background`` rows ((m, d)); 0 where the background has fewer than ``k`` rows.

    Example:
        >>> v = np.eye(3, dtype=np.float32)
        >>> background_similarity(v, np.zeros((0, 3), np.float32), 1).tolist()  # empty: 0
        [0.0, 0.0, 0.0]
        >>> background_similarity(v[:1], v, 2).tolist()  # cosines 1, 0, 0: the 2nd is 0
        [0.0]
    """
    vectors = np.asarray(vectors, np.float32)
    if len(background) < k or len(vectors) == 0:
        return np.zeros(len(vectors), np.float32)
    similarity = vectors @ np.asarray(background, np.float32).T
    return -np.partition(-similarity, k - 1, axis=1)[:, k - 1]


def normalised(cosines: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """``cosines`` (r, c) of r listing views minus each view's offset ``beta * bg_k`` (r,)."""
    return (np.asarray(cosines, np.float32) - np.asarray(offsets, np.float32)[:, None]).astype(np.float32)


# --- the generated background ----------------------------------------------------------------


def background_images(count: int, seed: int = 0, side: int = IMAGE_SIDE) -> list[Image.Image]:
    """``count`` deterministic RGB images showing no brand: even positions random geometric
    marks, odd ones product-like photos (same ``seed`` and position: the same pixels)."""
    return [_background_image(np.random.default_rng([seed, i, GENERATOR_VERSION]), i % 2 == 1, side)
            for i in range(count)]


def _colour(rng: np.random.Generator, light: bool | None = None) -> tuple[int, int, int]:
    low, high = {None: (0, 256), True: (170, 256), False: (0, 140)}[light]
    return tuple(int(v) for v in rng.integers(low, high, 3))


def _star(rng: np.random.Generator, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    points, inner, turn = int(rng.integers(3, 9)), float(rng.uniform(0.35, 0.7)), float(rng.uniform(0, math.pi))
    return [(cx + r * (1 if j % 2 == 0 else inner) * math.cos(turn + j * math.pi / points),
             cy + r * (1 if j % 2 == 0 else inner) * math.sin(turn + j * math.pi / points)) for j in range(2 * points)]


def _mark(draw: ImageDraw.ImageDraw, rng: np.random.Generator, side: int, colour: tuple[int, int, int]) -> None:
    """One text-free geometric element: polygon, star, ellipse, ring, bar or dots."""
    cx, cy = rng.uniform(0.25, 0.75, 2) * side
    r = float(rng.uniform(0.12, 0.4)) * side
    kind = int(rng.integers(0, 6))
    if kind == 0:
        n = int(rng.integers(3, 8))
        angles = np.sort(rng.uniform(0, 2 * math.pi, n))
        radii = rng.uniform(0.5, 1.0, n) * r
        draw.polygon([(cx + a * math.cos(t), cy + a * math.sin(t)) for a, t in zip(radii, angles)], fill=colour)
    elif kind == 1:
        draw.polygon(_star(rng, cx, cy, r), fill=colour)
    elif kind == 2:
        draw.ellipse([cx - r, cy - r * rng.uniform(0.4, 1.0), cx + r, cy + r * rng.uniform(0.4, 1.0)], fill=colour)
    elif kind == 3:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=colour, width=max(2, int(r * rng.uniform(0.1, 0.4))))
    elif kind == 4:
        t = float(rng.uniform(0, math.pi))
        dx, dy = r * math.cos(t), r * math.sin(t)
        draw.line([(cx - dx, cy - dy), (cx + dx, cy + dy)], fill=colour, width=max(3, int(r * rng.uniform(0.15, 0.5))))
    else:
        for _ in range(int(rng.integers(3, 9))):
            x, y = rng.uniform(0.1, 0.9, 2) * side
            d = float(rng.uniform(0.03, 0.1)) * side
            draw.ellipse([x - d, y - d, x + d, y + d], fill=colour)


def _background_image(rng: np.random.Generator, product: bool, side: int) -> Image.Image:
    if not product:  # a mark: 1-4 elements in 1-3 colours on a plain light or dark ground
        ground = _colour(rng, light=bool(rng.random() < 0.8))
        image = Image.new("RGB", (side, side), ground)
        draw = ImageDraw.Draw(image)
        palette = [_colour(rng) for _ in range(int(rng.integers(1, 4)))]
        for _ in range(int(rng.integers(1, 5))):
            _mark(draw, rng, side, palette[int(rng.integers(0, len(palette)))])
        return image
    # product-like: a gradient or textured backdrop, a lit object (bottle, box, garment-ish blob)
    top, bottom = np.array(_colour(rng), np.float32), np.array(_colour(rng), np.float32)
    ramp = np.linspace(0.0, 1.0, side, dtype=np.float32)[:, None, None]
    pixels = top * (1 - ramp) + bottom * ramp + rng.normal(0, rng.uniform(2, 25), (side, side, 3))
    image = Image.fromarray(np.clip(np.broadcast_to(pixels, (side, side, 3)), 0, 255).astype(np.uint8))
    shape = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(shape)
    cx, cy = rng.uniform(0.35, 0.65, 2) * side
    w, h = rng.uniform(0.15, 0.35) * side, rng.uniform(0.2, 0.42) * side
    body = int(rng.integers(0, 3))
    if body == 0:
        draw.rounded_rectangle([cx - w, cy - h, cx + w, cy + h], radius=int(w * rng.uniform(0.1, 0.9)), fill=255)
    elif body == 1:
        draw.ellipse([cx - w, cy - h, cx + w, cy + h], fill=255)
        draw.rectangle([cx - w * 0.3, cy - h * 1.3, cx + w * 0.3, cy - h * 0.6], fill=255)  # a neck
    else:
        draw.polygon([(cx - w, cy - h), (cx - w * 0.4, cy - h * 1.1), (cx + w * 0.4, cy - h * 1.1), (cx + w, cy - h),
                      (cx + w * 0.8, cy + h), (cx - w * 0.8, cy + h)], fill=255)
    base = np.array(_colour(rng), np.float32)
    light = np.linspace(1.25, 0.7, side, dtype=np.float32)[None, :, None]  # lit from the left
    body_pixels = np.clip(base * light + rng.normal(0, 4, (side, side, 3)), 0, 255).astype(np.uint8)
    mask = shape.filter(ImageFilter.GaussianBlur(1.5))
    image.paste(Image.fromarray(body_pixels), (0, 0), mask)
    return image


# --- stored with the index ----------------------------------------------------------------


def fingerprint_key(fingerprint: Fingerprint) -> str:
    """A short stable hash of the fields that make vectors comparable (preset name excluded)."""
    text = "\x1f".join(str(v) for v in fingerprint.comparable_key())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def background_path(index_dir: str | os.PathLike[str], fingerprint: Fingerprint, config: NormaliseConfig) -> Path:
    """Where the background vectors of this model and config live in an index folder."""
    name = f"{fingerprint_key(fingerprint)}-n{config.background}-s{config.seed}-v{GENERATOR_VERSION}.npy"
    return Path(index_dir) / BACKGROUND_DIR / name


def embed_background(embed: Embed, config: NormaliseConfig, side: int = IMAGE_SIDE) -> np.ndarray:
    """The background images of ``config`` embedded in batches, float32 (n, d)."""
    images = background_images(config.background, config.seed, side)
    parts = [np.asarray(embed(images[i : i + EMBED_BATCH]), np.float32) for i in range(0, len(images), EMBED_BATCH)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def load_background(path: Path, dim: int, count: int) -> np.ndarray | None:
    """Stored background vectors, or None when absent or not what ``config`` asks for."""
    try:
        vectors = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if vectors.dtype != np.float32 or vectors.shape != (count, dim):
        log.warning("background %s has shape %s, expected (%d, %d): rebuilding", path, vectors.shape, count, dim)
        return None
    return vectors


def build_background(
    index_dir: str | os.PathLike[str], fingerprint: Fingerprint, config: NormaliseConfig, embed: Embed | None,
    *, write: bool = True,
) -> np.ndarray:
    """The background vectors for an index: read from its ``background/`` folder, else
    generated, embedded with ``embed`` (the index's model) and, with ``write``, stored there
    atomically (an unwritable folder is logged and the vectors are kept by the caller only).
    An empty background (``config.background`` 0) is a (0, dim) array, never stored."""
    if config.background == 0:
        return np.zeros((0, fingerprint.dim), np.float32)
    path = background_path(index_dir, fingerprint, config)
    found = load_background(path, fingerprint.dim, config.background)
    if found is not None:
        return found
    if embed is None:
        raise DetectorError(f"no background vectors in {path.parent} and no model to embed them with")
    vectors = embed_background(embed, config)
    if write:
        try:
            path.parent.mkdir(exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.stem}", suffix=".tmp", delete=False) as f:
                np.save(f, vectors, allow_pickle=False)
            os.chmod(f.name, 0o644)  # readable like the index's other files (mkstemp makes 0600)
            os.replace(f.name, path)
        except OSError as e:
            log.warning("background vectors not stored in %s (%s); kept in memory", path.parent, e)
    return vectors


def offsets_for(vectors: np.ndarray, background: np.ndarray, config: NormaliseConfig) -> np.ndarray:
    """``beta * bg_k`` per listing view (see :func:`background_similarity`)."""
    return (config.beta * background_similarity(vectors, background, config.k)).astype(np.float32)


__all__: Sequence[str] = (
    "BACKGROUND_DIR", "NormaliseConfig", "background_images", "background_path", "background_similarity",
    "build_background", "embed_background", "fingerprint_key", "normalised", "offsets_for",
)
