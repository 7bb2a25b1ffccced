"""Decode and preprocess images in worker threads while the model runs on the previous batch.

Stages (each a small callable; :class:`detector.embedder.Embedder` wires them together):

    source ──► prepare (worker thread: read, decode, resize/crop ──► (S, S, 3) uint8)
           ──► chunk of ``batch_size`` in input order ──► model (calling thread)

PIL releases the GIL while it decodes and resizes, so threads give real parallelism without
pickling images between processes. Workers stay ``ahead`` batches in front of the model;
one item's failure becomes an :class:`ItemError` for that item only, never a hang or a
lost batch.

Example:
    >>> chunks = prepared_chunks(["a.jpg", "b.jpg"], ["a.jpg", "b.jpg"], load, chunk_size=32,
    ...                          pool=None)          # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
from PIL import Image

from detector.errors import DetectorError, ImageLoadError
from detector.images import ImageSource, load_image, read_bytes

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Batches decoded ahead of the model: one overlaps the model, one absorbs jitter.
DEFAULT_AHEAD = 2


@dataclass(frozen=True)
class ItemError:
    """One input that could not be embedded.

    Attributes:
        index: Its position in the input sequence.
        name: Its name (path, given name, or ``"<bytes>"``...).
        reason: Why, for people (e.g. ``"a.jpg: truncated or corrupt image data (...)"``).
    """

    index: int
    name: str
    reason: str


@dataclass(frozen=True, eq=False)
class EmbedBatchResult:
    """Vectors of the inputs that worked, and an error for each one that did not.

    Attributes:
        vectors: (k, dim) float32 unit rows, in input order.
        indices: Input position of each row of ``vectors``.
        errors: One entry per failed input, in input order.
        count: Number of inputs.
    """

    vectors: np.ndarray
    indices: tuple[int, ...]
    errors: tuple[ItemError, ...]
    count: int

    @property
    def all_ok(self) -> bool:
        return not self.errors

    def vector(self, index: int) -> np.ndarray | None:
        """The vector of input ``index``, or None when that input failed."""
        if not 0 <= index < self.count:
            raise IndexError(f"input index {index} out of range 0..{self.count - 1}")
        pos = int(np.searchsorted(np.asarray(self.indices, dtype=np.int64), index))
        if pos < len(self.indices) and self.indices[pos] == index:
            return self.vectors[pos]
        return None


@dataclass(frozen=True)
class PreparedChunk(Generic[T]):
    """Up to ``chunk_size`` consecutive inputs after the prepare stage.

    Attributes:
        indices: Input positions of the prepared items.
        items: What ``prepare`` returned for them, same order.
        errors: Inputs of this chunk whose ``prepare`` raised.
    """

    indices: list[int]
    items: list[T]
    errors: list[ItemError]


def source_name(source: ImageSource) -> str:
    """How to call a source in reports when the caller gave no name."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<bytes>"
    if isinstance(source, Image.Image):
        name = getattr(source, "filename", None)
        return name if isinstance(name, str) and name else "<image>"
    name = getattr(source, "name", None)
    return name if isinstance(name, str) and name else "<stream>"


def prepared_chunks(
    inputs: Sequence[Any],
    names: Sequence[str],
    prepare: Callable[[Any, str], T],
    *,
    chunk_size: int,
    pool: ThreadPoolExecutor | None,
    ahead: int = DEFAULT_AHEAD,
    catch: bool = True,
) -> Iterator[PreparedChunk[T]]:
    """Run ``prepare(input, name)`` over the inputs, in workers, yielding chunks in input order.

    While the caller works on one chunk (runs the model), the pool prepares up to ``ahead``
    more. With ``pool=None`` (or a single input) everything runs in the calling thread;
    the output is the same either way.

    Args:
        inputs: Anything ``prepare`` accepts.
        names: One name per input, for errors.
        prepare: The stage; an exception it raises becomes that item's :class:`ItemError`
            (with ``catch=False`` it propagates to the caller instead, unchanged).
        chunk_size: Items per yielded chunk (the model batch size).
        pool: Worker threads, or None for inline.
        ahead: Chunks prepared in front of the one being consumed.
        catch: Report failures per item (batch APIs) or raise them (all-or-nothing APIs).

    Yields:
        PreparedChunk objects covering every input exactly once, in order.
    """
    if len(names) != len(inputs):
        raise ValueError(f"names has {len(names)} entries for {len(inputs)} inputs")
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be > 0, got {chunk_size}")
    n = len(inputs)

    def run(i: int) -> tuple[int, Any, ItemError | None]:
        if not catch:
            return i, prepare(inputs[i], names[i]), None
        try:
            return i, prepare(inputs[i], names[i]), None
        except Exception as e:
            if not isinstance(e, DetectorError):
                log.warning("preparing %s failed unexpectedly", names[i], exc_info=True)
            reason = str(e) if isinstance(e, ImageLoadError) else f"{names[i]}: {_describe(e)}"
            return i, None, ItemError(i, names[i], reason)

    if pool is None or n <= 1:
        for start in range(0, n, chunk_size):
            yield _chunk([run(i) for i in range(start, min(n, start + chunk_size))])
        return

    pending: deque[Future] = deque()
    next_i = 0
    limit = chunk_size * (ahead + 1)
    try:
        while next_i < n or pending:
            while next_i < n and len(pending) < limit:
                pending.append(pool.submit(run, next_i))
                next_i += 1
            take = min(chunk_size, len(pending))
            yield _chunk([pending.popleft().result() for _ in range(take)])
    finally:
        # The consumer stopped early (an exception in the model, a closed generator): do not
        # leave queued work behind.
        for fut in pending:
            fut.cancel()


def _chunk(results: list[tuple[int, Any, ItemError | None]]) -> PreparedChunk:
    chunk: PreparedChunk = PreparedChunk([], [], [])
    for i, item, err in results:
        if err is None:
            chunk.indices.append(i)
            chunk.items.append(item)
        else:
            chunk.errors.append(err)
    return chunk


def _describe(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


# --- prepare stages --------------------------------------------------------------------------


def make_cpu_prepare(
    pil_transform: Callable[[Image.Image], Image.Image],
    *,
    max_pixels: int,
    draft_size: int | None,
) -> Callable[[ImageSource, str], np.ndarray]:
    """The CPU stage: any source -> ``load_image`` -> preset geometry -> (S, S, 3) uint8.

    Args:
        pil_transform: :func:`detector.models.preprocess.build_pil_transform` of the preset.
        max_pixels: Passed to :func:`detector.images.load_image`.
        draft_size: JPEG reduced-size decoding hint (None: full decode).
    """

    def prepare(source: ImageSource, name: str) -> np.ndarray:
        image = load_image(source, name=name, max_pixels=max_pixels, draft_size=draft_size)
        return np.array(pil_transform(image), dtype=np.uint8)

    return prepare


@dataclass(frozen=True)
class RawJpeg:
    """A JPEG file left encoded for the GPU decoder (header already checked)."""

    data: bytes


def make_gpu_prepare(
    cpu_prepare: Callable[[ImageSource, str], np.ndarray], *, max_pixels: int
) -> Callable[[ImageSource, str], np.ndarray | RawJpeg]:
    """The CPU half of GPU decoding: read bytes and check the header, leave JPEGs encoded.

    Baseline RGB/greyscale JPEGs come back as :class:`RawJpeg` for nvJPEG; everything else
    (PNG, CMYK JPEG, already decoded images) goes through ``cpu_prepare``.
    """

    def prepare(source: ImageSource, name: str) -> np.ndarray | RawJpeg:
        if isinstance(source, Image.Image):
            return cpu_prepare(source, name)
        if isinstance(source, (bytes, bytearray, memoryview)):
            data = bytes(source)
        else:
            data = read_bytes(source)  # type: ignore[arg-type]
        if _is_plain_jpeg(data, max_pixels):
            return RawJpeg(data)
        return cpu_prepare(data, name)

    return prepare


def _is_plain_jpeg(data: bytes, max_pixels: int) -> bool:
    """Whether nvJPEG can take this file: a JPEG, RGB/greyscale, within the pixel limit."""
    if not data.startswith(b"\xff\xd8"):
        return False
    import io

    try:
        with Image.open(io.BytesIO(data)) as img:  # header only: no pixel decoding here
            w, h = img.size
            return img.format == "JPEG" and img.mode in ("RGB", "L") and 0 < w * h <= max_pixels
    except Exception:  # noqa: BLE001 - the PIL path will report whatever is wrong with it
        return False


class WorkerPool:
    """A lazily started, shared thread pool (threads appear on first use)."""

    def __init__(self, workers: int, name: str) -> None:
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self.workers = workers
        self._name = name
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def get(self) -> ThreadPoolExecutor | None:
        """The executor, or None when ``workers == 0`` (run inline)."""
        if self.workers == 0:
            return None
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix=self._name)
            return self._pool

    def shutdown(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None
