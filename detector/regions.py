"""Query-side regions of a listing photo: the whole frame, sliding windows and logo proposals.

A counterfeit listing shows a bag, shoe or shirt with the logo somewhere, often small
(8-20 % of the frame width), tilted and recoloured. A whole-frame embedding drowns such a
logo in background, so the scorer also embeds crops: square-ish sliding windows at a few
scales, and cheap proposals that concentrate on logo-like areas (clusters of edges and
spectrally salient blobs). Everything is ranked by one cheap objectness score (edge
density inside a box minus that of the ring around it: a logo is a dense cluster of
marks on a plainer surface), deduplicated by IoU and capped, so the cap keeps the best.

Cost (measured, 2-core CPU): ~8 ms for a 640x480 photo; the analysis runs on a <=320 px
CIELAB copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image

from detector.errors import ConfigError, ImageLoadError

RegionSource = Literal["full", "trimmed", "window", "proposal", "silhouette", "text"]

# Sources that show the whole listing (a product photo is matched only by these).
FRAME_SOURCES: frozenset[str] = frozenset({"full", "trimmed"})
# Sources of the regions a signal offers the others (Signal.offer_regions): they come from
# evidence that something is there (a line of text read), so they are always embedded and
# segmented, outside the proposals' caps.
OFFERED_SOURCES: frozenset[str] = frozenset({"text"})


@dataclass(frozen=True)
class Region:
    """One crop of a query image.

    Attributes:
        box: (x0, y0, x1, y1) in pixels of the original image, 0 <= x0 < x1 <= width.
        source: ``"full"`` (the whole frame, always first), ``"trimmed"`` (the frame without
            its uniform border, second when there is one), ``"window"``, ``"proposal"``,
            ``"silhouette"`` (the black-on-white mark found in another region's box) or
            ``"text"`` (around a line of text the text signal read, :mod:`detector.text_regions`).
        scale: Longer box side divided by the image's shorter side (1.0 for a full square frame).
        score: Objectness used for ranking (higher = more logo-like); 1.0 for the full frame.
    """

    box: tuple[int, int, int, int]
    source: RegionSource
    scale: float
    score: float = 0.0

    @property
    def width(self) -> int:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> int:
        return self.box[3] - self.box[1]


@dataclass(frozen=True)
class RegionConfig:
    """Which regions to propose.

    Attributes:
        enabled: False gives the whole frame only (the plain whole-image behaviour).
        scales: Sliding-window sides as fractions of the image's shorter side.
        overlap: Overlap of neighbouring windows (0.5 = stride of half a window).
        proposals: Add edge/saliency proposals.
        max_proposals: Proposals kept before windows fill the remaining budget.
        max_regions: Hard cap on regions returned, the full frame included.
        min_size_px: Smallest region side, in original pixels.
        pad: Context added around a proposal on each side, as a fraction of its size.
        max_aspect: Proposals are grown (never cut) until long/short side <= this.
        nms_iou: Regions overlapping a better-ranked one by more than this are dropped.
        work_side: Longer side of the greyscale copy the analysis runs on.
        trim_frame: Also give the frame without its uniform border (plus a 5 % margin) when
            the photo has one, even with ``enabled`` False. Re-posts are often padded onto a
            canvas, and a pooled CNN feature moves a lot with that padding (measured,
            effnet-lite0: a product photo padded 15 % scored cosine 0.71 to its reference).
        embed_crops: Embed every region's crop. False: only the whole frame is embedded and
            the other regions serve the silhouette channel (it finds their marks), which
            measured nearly the same R@1 at ~60 % of the model time.
    """

    enabled: bool = True
    scales: tuple[float, ...] = (0.5, 0.3)
    overlap: float = 0.5
    proposals: bool = True
    max_proposals: int = 16
    max_regions: int = 32
    min_size_px: int = 32
    pad: float = 0.15
    max_aspect: float = 1.25
    nms_iou: float = 0.5
    work_side: int = 320
    trim_frame: bool = True
    embed_crops: bool = True

    def __post_init__(self) -> None:
        for s in self.scales:
            if not 0.05 <= s <= 1.0:
                raise ConfigError(f"window scales must be in [0.05, 1.0], got {s}")
        checks = [
            (0.0 <= self.overlap < 1.0, f"overlap must be in [0, 1), got {self.overlap}"),
            (self.max_regions >= 1, f"max_regions must be >= 1, got {self.max_regions}"),
            (self.max_proposals >= 0, f"max_proposals must be >= 0, got {self.max_proposals}"),
            (self.min_size_px >= 1, f"min_size_px must be >= 1, got {self.min_size_px}"),
            (0.0 <= self.pad <= 2.0, f"pad must be in [0, 2], got {self.pad}"),
            (self.max_aspect >= 1.0, f"max_aspect must be >= 1, got {self.max_aspect}"),
            (0.0 < self.nms_iou <= 1.0, f"nms_iou must be in (0, 1], got {self.nms_iou}"),
            (self.work_side >= 64, f"work_side must be >= 64, got {self.work_side}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


def propose_regions(image: Image.Image, config: RegionConfig | None = None) -> list[Region]:
    """Regions to embed for one query image, the whole frame first, at most ``max_regions``.

    Args:
        image: The listing photo (any mode).
        config: Options; defaults to ``RegionConfig()``.

    Returns:
        The full frame, then proposals and windows in decreasing objectness. Every box lies
        inside the image and no two overlap by more than ``config.nms_iou``.

    Raises:
        ImageLoadError: Not a PIL image, or empty.

    Example:
        >>> regions = propose_regions(Image.new("RGB", (640, 480)))
        >>> regions[0].box, regions[0].source
        ((0, 0, 640, 480), 'full')
    """
    config = config or RegionConfig()
    if not isinstance(image, Image.Image):
        raise ImageLoadError("<image>", f"expected a PIL image, got {type(image).__name__}")
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageLoadError("<image>", f"empty image of size {image.size}")
    frames = [Region((0, 0, width, height), "full", max(width, height) / min(width, height), 1.0)]
    trimmed = _trimmed_box(image, config) if config.trim_frame else None
    if trimmed is not None:
        frames.append(_region(np.asarray(trimmed), 1.0, "trimmed", width, height))
    if not config.enabled:
        return frames
    if config.max_regions <= len(frames) or min(width, height) < config.min_size_px:
        return frames[: config.max_regions]

    import cv2  # deferred: opencv is needed only when regions are enabled

    lab, factor = _work_lab(image, config.work_side, cv2)
    edges = _edges(lab, cv2)
    integral = cv2.integral(edges, sdepth=cv2.CV_32S).astype(np.float64)

    kept = np.array([r.box for r in frames], dtype=np.float64)
    regions = list(frames)
    budget = config.max_regions - len(frames)

    if config.proposals and config.max_proposals > 0:
        boxes = _proposal_boxes(lab, edges, factor, (width, height), config, cv2)
        chosen = _rank_and_select(boxes, integral, factor, kept, config, min(config.max_proposals, budget))
        regions += [_region(b, s, "proposal", width, height) for b, s in chosen]
        if chosen:
            kept = np.vstack([kept, [b for b, _ in chosen]])
        budget -= len(chosen)

    if budget > 0:
        boxes = _window_boxes(width, height, config)
        chosen = _rank_and_select(boxes, integral, factor, kept, config, budget)
        regions += [_region(b, s, "window", width, height) for b, s in chosen]

    regions[len(frames) :] = sorted(regions[len(frames) :], key=lambda r: -r.score)
    return regions


def crop_regions(image: Image.Image, regions: list[Region]) -> list[Image.Image]:
    """Crop each region's box out of ``image`` (same order).

    Example:
        >>> im = Image.new("RGB", (64, 48))
        >>> [c.size for c in crop_regions(im, propose_regions(im))][0]
        (64, 48)
    """
    return [image.crop(r.box) for r in regions]


def box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    return float(_iou_many(np.asarray(a, dtype=np.float64), np.asarray([b], dtype=np.float64))[0])


# --- internals -----------------------------------------------------------------------------

# Border trimming runs on a copy this small; a pixel is border within this much (0-255) of
# the border colour (JPEG noise on a flat canvas stays well under it), and a row or column
# is border when this share of its pixels is (under 1 so a price tag on the canvas does not
# stop the trim).
_TRIM_SIDE = 256
_TRIM_TOLERANCE = 24
_TRIM_ROW_SHARE = 0.9


def _trimmed_box(image: Image.Image, config: RegionConfig) -> tuple[int, int, int, int] | None:
    """The frame without its uniform border, plus a 5 % margin; None when the border is thin.

    The border colour is the median of the outermost pixels; rows and columns are peeled
    from each side while nearly all of their pixels are that colour.
    """
    width, height = image.size
    small, factor = _small_rgb(image, _TRIM_SIDE)
    rgb = small.astype(np.int16)
    edges = [rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]]
    colour = np.median(np.concatenate(edges), axis=0)
    if all((np.abs(edge - colour).max(axis=1) <= _TRIM_TOLERANCE).mean() < _TRIM_ROW_SHARE for edge in edges):
        return None  # no side can be peeled: the box would be the whole frame (most photos)
    border = np.abs(rgb - colour).max(axis=2) <= _TRIM_TOLERANCE
    rows = np.flatnonzero(border.mean(axis=1) < _TRIM_ROW_SHARE)
    cols = np.flatnonzero(border.mean(axis=0) < _TRIM_ROW_SHARE)
    if rows.size == 0 or cols.size == 0:
        return None  # nothing but border
    x0, x1 = cols[0] / factor, (cols[-1] + 1) / factor
    y0, y1 = rows[0] / factor, (rows[-1] + 1) / factor
    margin = 0.05 * max(x1 - x0, y1 - y0)
    box = (
        max(0, int(x0 - margin)), max(0, int(y0 - margin)),
        min(width, int(np.ceil(x1 + margin))), min(height, int(np.ceil(y1 + margin))),
    )
    small_enough = (box[2] - box[0]) * (box[3] - box[1]) < 0.9 * width * height
    big_enough = min(box[2] - box[0], box[3] - box[1]) >= config.min_size_px
    return box if small_enough and big_enough else None


def _work_lab(image: Image.Image, work_side: int, cv2: Any) -> tuple[np.ndarray, float]:
    """CIELAB copy (uint8, HxWx3) with longer side <= work_side, and the factor work/original.

    Colour matters: a recoloured logo (red on brown leather) can have the same luminance as
    its background and be invisible in greyscale.
    """
    rgb, factor = _small_rgb(image, work_side)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB), factor


def _small_rgb(image: Image.Image, side: int) -> tuple[np.ndarray, float]:
    """RGB copy (uint8, HxWx3, transparency on white) with longer side <= ``side``, and the
    factor small/original."""
    from detector.reference_prep import composite_on_white

    width, height = image.size
    factor = min(1.0, side / max(width, height))
    small = image
    if factor < 1.0:
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        # reduce() first keeps large uploads cheap; BILINEAR after it is enough for edges.
        if factor < 0.5:
            small = image.reduce(max(1, int(1 / factor) // 2))
        small = small.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(composite_on_white(small)), factor


def _edges(lab: np.ndarray, cv2: Any) -> np.ndarray:
    """Binary (0/1) colour Canny edges, thresholds from the image's own gradient distribution.

    Per pixel the Lab channel with the strongest gradient drives Canny, so luminance edges
    and pure colour edges both count. Fixed thresholds miss low-contrast (tone-on-tone)
    logos; percentiles adapt to each photo.
    """
    blurred = cv2.GaussianBlur(lab, (3, 3), 0)
    dx = cv2.Sobel(blurred, cv2.CV_16S, 1, 0)
    dy = cv2.Sobel(blurred, cv2.CV_16S, 0, 1)
    magnitude = np.abs(dx.astype(np.int32)) + np.abs(dy.astype(np.int32))
    # a/b spread over a narrower range than L in OpenCV's 8-bit Lab; weight them up.
    magnitude[..., 1:] *= 2
    channel = magnitude.argmax(axis=2)[..., None]
    gx = np.take_along_axis(dx, channel, axis=2)[..., 0] * np.where(channel[..., 0] > 0, 2, 1)
    gy = np.take_along_axis(dy, channel, axis=2)[..., 0] * np.where(channel[..., 0] > 0, 2, 1)
    best = np.take_along_axis(magnitude, channel, axis=2)
    high = float(max(60.0, np.percentile(best, 90)))
    edges = cv2.Canny(
        np.ascontiguousarray(gx, dtype=np.int16), np.ascontiguousarray(gy, dtype=np.int16),
        0.4 * high, high,
    )
    return (edges > 0).astype(np.uint8)


def _proposal_boxes(
    lab: np.ndarray,
    edges: np.ndarray,
    factor: float,
    size: tuple[int, int],
    config: RegionConfig,
    cv2: Any,
) -> np.ndarray:
    """Padded, square-ish candidate boxes in original pixels (unranked, may overlap)."""
    raw: list[np.ndarray] = []
    # Two closing sizes: the small one keeps a compact mark on its own, the large one
    # joins the letters of a wordmark (and mark + wordmark) into one component.
    for k in (3, 9):
        kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (k, k))
        closed = cv2.morphologyEx(edges, cv2.MORPH_CLOSE, kernel)
        raw.append(_component_boxes(closed, cv2))
    raw.append(_component_boxes(_salient_mask(lab, cv2), cv2))
    boxes = np.vstack(raw) / factor
    return _shape_boxes(boxes, size, config)


def _component_boxes(mask: np.ndarray, cv2: Any) -> np.ndarray:
    """(x0, y0, x1, y1) of the 8-connected components of a binary mask, work pixels."""
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    stats = stats[1:]  # label 0 is the background
    x, y, w, h = stats[:, 0], stats[:, 1], stats[:, 2], stats[:, 3]
    return np.stack([x, y, x + w, y + h], axis=1).astype(np.float64).reshape(-1, 4)


def _salient_mask(lab: np.ndarray, cv2: Any) -> np.ndarray:
    """Spectral-residual saliency (Hou & Zhang 2007) of each Lab channel, summed, thresholded.

    It fires on small, distinct blobs whatever their texture, which complements edge
    clusters for smooth, flat-coloured logos.
    """
    small = cv2.resize(lab, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float32)
    spectrum = np.fft.fft2(small, axes=(0, 1))
    log_amplitude = np.log(np.abs(spectrum) + 1e-6).astype(np.float32)
    residual = log_amplitude - cv2.blur(log_amplitude, (3, 3))
    maps = np.abs(np.fft.ifft2(np.exp(residual + 1j * np.angle(spectrum)), axes=(0, 1))) ** 2
    saliency = (maps / np.maximum(maps.mean(axis=(0, 1)), 1e-12)).sum(axis=2).astype(np.float32)
    saliency = cv2.GaussianBlur(saliency, (5, 5), 2.0)
    saliency = cv2.resize(saliency, lab.shape[1::-1], interpolation=cv2.INTER_LINEAR)
    return (saliency > 3.0 * float(saliency.mean())).astype(np.uint8)


def _shape_boxes(boxes: np.ndarray, size: tuple[int, int], config: RegionConfig) -> np.ndarray:
    """Filter by size, pad, grow to square-ish, and shift/clip inside the image."""
    width, height = size
    if boxes.size == 0:
        return boxes.reshape(0, 4)
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    # Components spanning most of the frame are the product itself: the full frame covers it.
    keep = (np.maximum(w, h) * (1 + 2 * config.pad) >= config.min_size_px) & (
        (w < 0.9 * width) | (h < 0.9 * height)
    )
    boxes, w, h = boxes[keep], w[keep], h[keep]
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    w = np.maximum(w * (1 + 2 * config.pad), config.min_size_px)
    h = np.maximum(h * (1 + 2 * config.pad), config.min_size_px)
    w = np.maximum(w, h / config.max_aspect)
    h = np.maximum(h, w / config.max_aspect)
    w = np.minimum(w, width)
    h = np.minimum(h, height)
    # Shift (rather than clip) boxes that cross the border, so a crop keeps its shape.
    x0 = np.clip(cx - w / 2, 0, width - w)
    y0 = np.clip(cy - h / 2, 0, height - h)
    out = np.stack([x0, y0, x0 + w, y0 + h], axis=1)
    return _round_boxes(out, width, height)


def _window_boxes(width: int, height: int, config: RegionConfig) -> np.ndarray:
    """Square sliding windows at each scale; the last row/column is aligned to the border."""
    short = min(width, height)
    boxes = []
    for scale in config.scales:
        side = round(scale * short)
        if side < config.min_size_px or side >= short:
            continue
        stride = max(1, round(side * (1.0 - config.overlap)))
        xs = sorted(set(range(0, width - side, stride)) | {width - side})
        ys = sorted(set(range(0, height - side, stride)) | {height - side})
        boxes += [(x, y, x + side, y + side) for y in ys for x in xs]
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


def _round_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    out = np.round(boxes)
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, width)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, height)
    valid = (out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])
    return np.unique(out[valid], axis=0)


def _objectness(boxes: np.ndarray, integral: np.ndarray, factor: float) -> np.ndarray:
    """Edge density inside each box minus the density of the ring around it, plus a little
    of the inside density so that, between equally isolated boxes, the busier one wins."""
    hw, ww = integral.shape[0] - 1, integral.shape[1] - 1
    inner = boxes * factor
    ring_w = np.maximum(inner[:, 2] - inner[:, 0], inner[:, 3] - inner[:, 1]) * 0.25
    outer = inner + np.stack([-ring_w, -ring_w, ring_w, ring_w], axis=1)
    d_in, a_in = _box_sums(inner, integral, ww, hw)
    d_out, a_out = _box_sums(outer, integral, ww, hw)
    density_in = d_in / np.maximum(a_in, 1.0)
    density_ring = (d_out - d_in) / np.maximum(a_out - a_in, 1.0)
    return density_in - density_ring + 0.25 * density_in


def _box_sums(
    boxes: np.ndarray, integral: np.ndarray, ww: int, hw: int
) -> tuple[np.ndarray, np.ndarray]:
    x0 = np.clip(np.floor(boxes[:, 0]), 0, ww).astype(int)
    y0 = np.clip(np.floor(boxes[:, 1]), 0, hw).astype(int)
    x1 = np.clip(np.ceil(boxes[:, 2]), 0, ww).astype(int)
    y1 = np.clip(np.ceil(boxes[:, 3]), 0, hw).astype(int)
    sums = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    return sums, ((x1 - x0) * (y1 - y0)).astype(np.float64)


def _rank_and_select(
    boxes: np.ndarray,
    integral: np.ndarray,
    factor: float,
    kept: np.ndarray,
    config: RegionConfig,
    limit: int,
) -> list[tuple[np.ndarray, float]]:
    """Greedy NMS in decreasing objectness against already kept boxes; at most ``limit``."""
    if boxes.size == 0 or limit <= 0:
        return []
    scores = _objectness(boxes, integral, factor)
    chosen: list[tuple[np.ndarray, float]] = []
    current = kept
    for i in np.argsort(-scores, kind="stable"):
        if _iou_many(boxes[i], current).max() > config.nms_iou:
            continue
        chosen.append((boxes[i], float(scores[i])))
        current = np.vstack([current, boxes[i]])
        if len(chosen) >= limit:
            break
    return chosen


def _iou_many(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    ix = np.clip(np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]), 0, None)
    inter = ix * iy
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def _region(box: np.ndarray, score: float, source: RegionSource, width: int, height: int) -> Region:
    x0, y0, x1, y1 = (int(v) for v in box)
    return Region((x0, y0, x1, y1), source, max(x1 - x0, y1 - y0) / min(width, height), score)
