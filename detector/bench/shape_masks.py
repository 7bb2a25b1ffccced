"""Synthetic canonical masks for the shape search's scale measurements and tests: real or
drawn marks, perturbed (turned, stretched, sheared, thickened or thinned) into many distinct
but realistic logos, and listing marks made from them (a slight turn and distortion)."""

from __future__ import annotations

import numpy as np

from detector.silhouettes import CANONICAL_SIDE, canonical_mask

_WORK = 128  # masks are perturbed at twice the canonical side


def drawn_seeds(count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Canonical masks of drawn marks: a glyph or two (OpenCV's Hershey fonts) over a
    random polygon or ring, so that no network or icon package is needed."""
    import cv2

    letters = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789&@#$%"
    seeds: list[np.ndarray] = []
    while len(seeds) < count:
        canvas = np.zeros((_WORK, _WORK), np.uint8)
        kind = rng.integers(3)
        if kind == 0:
            points = rng.uniform(20, 108, size=(int(rng.integers(3, 8)), 2)).astype(np.int32)
            cv2.fillPoly(canvas, [cv2.convexHull(points)], 255)
        elif kind == 1:
            cv2.circle(canvas, (64, 64), int(rng.integers(30, 50)), 255, int(rng.integers(6, 16)))
        text = "".join(rng.choice(list(letters), size=int(rng.integers(1, 3))))
        cv2.putText(canvas, text, (20, 90), int(rng.integers(0, 8)), 2.0, 255 if kind else 0, int(rng.integers(4, 10)))
        mask = canonical_mask(canvas > 0)
        if mask is not None and 0.03 < mask.mean() < 0.5:
            seeds.append(mask)
    return seeds


def icon_seeds(count: int) -> list[np.ndarray]:
    """Canonical masks of the benchmark's real logos (the bench's icon collection), up to ``count``."""
    from detector.bench.logos import list_icons, render_logo
    from detector.errors import ConfigError

    seeds = []
    for info in list_icons():
        if len(seeds) >= count:
            break
        try:
            logo = render_logo(info.slug, _WORK, colour="000000")
        except ConfigError:
            continue
        mask = canonical_mask(np.asarray(logo.getchannel("A")) >= 128)
        if mask is not None:
            seeds.append(mask)
    return seeds


def perturbed(mask: np.ndarray, rng: np.random.Generator, *, strong: bool = True) -> np.ndarray | None:
    """A canonical mask distorted: ``strong``, a new logo of the same family (any turn, aspect
    0.75-1.33, shear, strokes a pixel thicker or thinner); otherwise a listing's view of it
    (turn within 25 degrees, aspect and shear within 10 %)."""
    import cv2

    up = cv2.resize(mask.astype(np.uint8) * 255, (_WORK, _WORK), interpolation=cv2.INTER_LINEAR)
    turn = rng.uniform(-180, 180) if strong else rng.uniform(-25, 25)
    stretch, shear = (0.75, 0.25) if strong else (0.9, 0.08)
    sx, sy = rng.uniform(stretch, 1 / stretch, size=2)
    centre = (_WORK - 1) / 2
    rotation = cv2.getRotationMatrix2D((centre, centre), turn, 0.6)[:, :2]
    linear = np.array([[sx, rng.uniform(-shear, shear)], [0.0, sy]]) @ rotation
    affine = np.hstack([linear, (np.full(2, centre) - linear @ np.full(2, centre))[:, None]])
    warped = cv2.warpAffine(up, affine, (_WORK, _WORK)) >= 128
    if strong and rng.random() < 0.5:
        morph = cv2.dilate if rng.random() < 0.5 else cv2.erode
        warped = morph(warped.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    return canonical_mask(warped, CANONICAL_SIDE)


def synthetic_library(count: int, seeds: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """(count, side * side) int8 0/1 rows: strong perturbations of random seeds."""
    rows = np.empty((count, CANONICAL_SIDE * CANONICAL_SIDE), np.int8)
    filled = 0
    while filled < count:
        mask = perturbed(seeds[int(rng.integers(len(seeds)))], rng)
        if mask is not None:
            rows[filled] = mask.ravel()
            filled += 1
    return rows


def listing_marks(library: np.ndarray, seeds: list[np.ndarray], rng: np.random.Generator, *,
                  logos: int = 2, clutter: int = 4) -> tuple[list[np.ndarray], list[int]]:
    """One listing's canonical marks: ``logos`` slight views of random library rows (their
    positions returned) and ``clutter`` marks of the seeds' families that are not in it."""
    marks, sources = [], []
    while len(sources) < logos:
        pos = int(rng.integers(len(library)))
        mark = perturbed(library[pos].reshape(CANONICAL_SIDE, CANONICAL_SIDE), rng, strong=False)
        if mark is not None:
            marks.append(mark)
            sources.append(pos)
    while len(marks) < logos + clutter:
        mark = perturbed(seeds[int(rng.integers(len(seeds)))], rng)
        if mark is not None:
            marks.append(mark)
    return marks, sources
