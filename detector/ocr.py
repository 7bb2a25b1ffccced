"""Offline OCR of listing photos and logo references (the ``text`` extra: ``rapidocr-onnxruntime``).

The PP-OCRv4 detection and recognition models ship inside the rapidocr wheel and run on ONNX
Runtime: nothing is downloaded at run time. :class:`TextReader` loads them once (lazily, on
first use; thread-safe) and reads an image in two steps:

1. the text detector runs on the image scaled to a bounded working size (longest side
   ``working_size``), so its cost does not grow with the photo;
2. only boxes that pass the size checks (tall enough to hold letters, not too many) are
   cropped from the full-resolution image and recognised, and a line is kept when its
   recognition confidence reaches ``min_confidence``.

Each line read is an :class:`OcrLine` (text, confidence, box in the image's pixels); an image
with no text gives an empty tuple.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from detector.errors import ConfigError

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class OcrConfig:
    """How text is read.

    Attributes:
        working_size: Longest side (pixels) of the image the detector sees.
        min_box_height: Smallest text box height, in working-size pixels, worth recognising.
        max_boxes: At most this many boxes are recognised (the largest first).
        min_confidence: Recognition confidence a line needs to be kept.
        threads: ONNX Runtime intra-op threads (0: the runtime's default).
    """

    working_size: int = 960
    min_box_height: int = 8
    max_boxes: int = 12
    min_confidence: float = 0.6
    threads: int = 0


@dataclass(frozen=True)
class OcrLine:
    """One line of text read from an image: its text, confidence and box (x0, y0, x1, y1)."""

    text: str
    confidence: float
    box: Box


def ocr_available() -> bool:
    """Whether the OCR package is installed (the ``text`` extra)."""
    try:
        import rapidocr_onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class TextReader:
    """Reads text lines from images with the models shipped in the rapidocr wheel.

    Thread-safe: the models are loaded once, on first use, and each read holds a lock (ONNX
    Runtime already uses every core it is given).
    """

    def __init__(self, config: OcrConfig | None = None) -> None:
        self.config = config or OcrConfig()
        self._engine: Any = None
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()

    def engine(self) -> Any:
        """The loaded rapidocr engine (loads it on first call).

        Raises:
            ConfigError: rapidocr-onnxruntime is not installed.
        """
        with self._load_lock:
            if self._engine is None:
                try:
                    from rapidocr_onnxruntime import RapidOCR
                except ImportError as e:
                    raise ConfigError(
                        "the text signal needs the OCR package: pip install 'counterfeit-detector[text]' "
                        f"(rapidocr-onnxruntime) ({e})"
                    ) from e
                threads = self.config.threads or min(4, os.cpu_count() or 1)
                self._engine = RapidOCR(
                    det_limit_type="max", det_limit_side_len=self.config.working_size,
                    det_intra_op_num_threads=threads, rec_intra_op_num_threads=threads,
                    cls_intra_op_num_threads=threads,
                )  # fmt: skip
            return self._engine

    def read(self, image: Image.Image) -> tuple[OcrLine, ...]:
        """The text lines read in ``image`` (any mode), best-confidence lines kept."""
        engine = self.engine()
        cfg = self.config
        rgb = np.asarray(image.convert("RGB"))
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        height, width = bgr.shape[:2]
        scale = min(1.0, cfg.working_size / max(height, width))
        small = bgr
        if scale < 1.0:
            small = np.asarray(image.convert("RGB").resize(
                (max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.BILINEAR
            ))[:, :, ::-1].copy()  # fmt: skip
        if min(small.shape[:2]) < 16:
            return ()
        with self._run_lock:
            boxes, _ = engine.text_det(small)
            if boxes is None or len(boxes) == 0:
                return ()
            quads = _keep_boxes(np.asarray(boxes, np.float32), cfg)
            if not quads:
                return ()
            full = [q / scale for q in quads]  # crop from the full-resolution image
            crops = engine.get_crop_img_list(bgr, [q.astype(np.float32) for q in full])
            results, _ = engine.text_rec(crops)
        lines = []
        for quad, (text, confidence) in zip(full, results):
            text = str(text).strip()
            if text and float(confidence) >= cfg.min_confidence:
                x0, y0 = quad.min(axis=0)
                x1, y1 = quad.max(axis=0)
                box = (max(0, int(x0)), max(0, int(y0)), min(width, int(np.ceil(x1))), min(height, int(np.ceil(y1))))
                lines.append(OcrLine(text, round(float(confidence), 4), box))
        return tuple(lines)


def _keep_boxes(boxes: np.ndarray, cfg: OcrConfig) -> list[np.ndarray]:
    """The detector's quads worth recognising: tall enough, at most ``max_boxes``, largest first."""
    kept = []
    for quad in boxes:
        side_h = max(np.linalg.norm(quad[0] - quad[3]), np.linalg.norm(quad[1] - quad[2]))
        side_w = max(np.linalg.norm(quad[0] - quad[1]), np.linalg.norm(quad[2] - quad[3]))
        if min(side_h, side_w) >= cfg.min_box_height:
            kept.append((side_h * side_w, quad))
    kept.sort(key=lambda t: -t[0])
    return [q for _, q in kept[: cfg.max_boxes]]


_SHARED: dict[OcrConfig, TextReader] = {}
_SHARED_LOCK = threading.Lock()


def shared_reader(config: OcrConfig | None = None) -> TextReader:
    """One :class:`TextReader` per configuration per process (the models load once)."""
    config = config or OcrConfig()
    with _SHARED_LOCK:
        if config not in _SHARED:
            _SHARED[config] = TextReader(config)
        return _SHARED[config]
