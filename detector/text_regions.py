"""Regions around the lines of text read in a listing: where a wordmark and its emblem are.

A brand's name on goods is usually set next to its emblem (a logo "lockup": the mark left of,
right of or above the word). The text signal's OCR boxes say where such a line is, so the
text signal offers (:meth:`detector.signals.base.Signal.offer_regions`) for each of the
tallest lines:

* the line itself, padded (a wordmark logo is the word);
* two squares where an emblem would sit: left of the line and above its middle (a lockup's
  usual places; right of the line is not tried, to keep the cost down: not measured), each
  ``reach`` line heights wide and overlapping the line by a quarter of its height (a mark
  set close to the word is not cut).

The embedding embeds them like any region and the shape signal segments their marks; the
local features verify on the whole listing anyway, so they benefit through the candidates
these regions find. Every box is moved (not cut) to lie inside the image, so a crop keeps
its shape; a box larger than the image is clipped.
"""

from __future__ import annotations

from collections.abc import Sequence

from detector.regions import Region
from detector.verdict import Box

# A line box is padded by this share of its height on each side (OCR boxes are tight).
LINE_PAD = 0.25
# Emblem squares overlap the line's end by this share of its height.
EMBLEM_OVERLAP = 0.25
# Boxes smaller than this (pixels) are grown to it (the embedding's and segmentation's floor).
MIN_SIDE = 32


def line_regions(boxes: Sequence[Box], size: tuple[int, int], *, lines: int = 2, reach: float = 2.5) -> list[Region]:
    """Regions around the ``lines`` tallest of ``boxes`` (x0, y0, x1, y1 in the image's
    pixels): the padded line, then emblem squares left of it and above it; duplicates dropped.

    Example:
        >>> [r.box for r in line_regions([(200, 200, 300, 220)], (640, 480), lines=1)]
        [(195, 194, 305, 226), (155, 185, 205, 235), (225, 155, 275, 205)]
    """
    width, height = size
    tallest = sorted(boxes, key=lambda b: -(b[3] - b[1]))[: max(0, lines)]
    out: list[Region] = []
    seen: set[Box] = set()
    short = max(1, min(width, height))
    for x0, y0, x1, y1 in tallest:
        h = y1 - y0
        if h <= 0 or x1 <= x0:
            continue
        pad, side, overlap = LINE_PAD * h, max(reach * h, MIN_SIDE), EMBLEM_OVERLAP * h
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        candidates = [
            (x0 - pad, y0 - pad, x1 + pad, y1 + pad),
            (x0 + overlap - side, cy - side / 2, x0 + overlap, cy + side / 2),
            (cx - side / 2, y0 + overlap - side, cx + side / 2, y0 + overlap),
        ]
        for box in candidates:
            inside = _inside(box, width, height)
            if inside is not None and inside not in seen:
                seen.add(inside)
                out.append(Region(inside, "text", max(inside[2] - inside[0], inside[3] - inside[1]) / short))
    return out


def _inside(box: tuple[float, float, float, float], width: int, height: int) -> Box | None:
    """``box`` grown to :data:`MIN_SIDE`, then shifted inside the image (clipped where it is
    larger); None when nothing of it is left."""
    x0, y0, x1, y1 = box
    w, h = min(max(x1 - x0, MIN_SIDE), width), min(max(y1 - y0, MIN_SIDE), height)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = min(max(cx - w / 2, 0), width - w)
    top = min(max(cy - h / 2, 0), height - h)
    out = (round(left), round(top), round(left + w), round(top + h))
    return out if out[2] > out[0] and out[3] > out[1] else None
