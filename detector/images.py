"""Load and normalise any image the detector is given; the only place that opens image bytes.

Every entry point (CLI, HTTP service, indexing, evaluation) goes through :func:`load_image`,
so all of them agree on what an image *is*:

* sources: a path, raw bytes, a binary file object or an already opened ``PIL.Image``;
* EXIF orientation is applied (phone photos are stored sideways with a rotation tag);
* every mode becomes 8-bit RGB (or, on request, RGBA when the image has transparency):
  palette, CMYK, 16-bit and float greyscale, ``1``, ``LA``,
  ``RGBA`` and palette/RGB/L images with a transparency key; transparent pixels are
  composited on **white**, because brand logos are often transparent PNGs meant for a
  white page (black would turn a dark logo into a black square);
* animated images (GIF, APNG, WebP) and multi-page TIFFs give their first frame;
* a pixel limit (``max_pixels``) is checked from the header *before* decoding, and PIL's own
  decompression-bomb warning/error becomes our :class:`~detector.errors.ImageLoadError`;
* empty, truncated or non-image data raise :class:`~detector.errors.ImageLoadError` naming
  the item.

Example:
    >>> from detector.images import load_image
    >>> img = load_image("listing.jpg")          # doctest: +SKIP
    >>> img.mode
    'RGB'
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, TypeAlias

import numpy as np
from PIL import Image

from detector.errors import ImageLoadError

ImageSource: TypeAlias = str | os.PathLike | bytes | BinaryIO | Image.Image

#: Largest image accepted by default (width * height), ~50 megapixels. A 50 MP RGB image
#: already needs 150 MB decoded; anything larger is almost surely hostile or a scan.
DEFAULT_MAX_PIXELS: int = 50_000_000

#: Largest file :func:`read_bytes` reads by default (64 MiB).
DEFAULT_MAX_BYTES: int = 64 * 1024 * 1024

#: File name extensions treated as images when walking folders (lower case, with the dot).
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
)

#: Formats load_image accepts; anything else PIL might sniff (PSD, ICO, PCX...) is refused so
#: that the supported surface stays the documented one.
SUPPORTED_FORMATS: frozenset[str] = frozenset({"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF"})

_WHITE = (255, 255, 255)
_HASH_CHUNK = 1 << 20

# EXIF orientation value -> the transpose that undoes it (the table of ImageOps.exif_transpose).
_ORIENTATION_TAG = 0x0112
_ORIENTATION_FIX: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def is_image_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` has one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def load_image(
    source: ImageSource,
    *,
    name: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft_size: int | None = None,
    keep_alpha: bool = False,
) -> Image.Image:
    """Open any supported image and return it as a fully decoded 8-bit RGB ``PIL.Image``.

    Args:
        source: A file path, the encoded bytes, a binary file object (read from its current
            position; not closed) or a ``PIL.Image`` (not closed; returned as is when it is
            already RGB with no EXIF rotation).
        name: How to call the item in errors; defaults to the path, the file object's name,
            ``"<bytes>"`` or ``"<image>"``.
        max_pixels: Largest accepted ``width * height``, checked from the header before
            decoding.
        draft_size: Optional speed hint for JPEG: let libjpeg decode at 1/2, 1/4 or 1/8 scale
            as long as the shorter side stays >= ``draft_size``. The pixels then differ
            slightly from a full decode followed by a resize, so use it for every image of a
            vector set or for none.
        keep_alpha: Return an image with transparency as 8-bit ``RGBA``, not composited on
            white (a logo's alpha channel is its exact mark; see :mod:`detector.silhouettes`).
            Images without transparency still come back RGB.

    Returns:
        A new (or, for an RGB ``PIL.Image`` input, possibly the same) loaded RGB (or, with
        ``keep_alpha``, RGBA) image.

    Raises:
        ImageLoadError: The item is missing, empty, truncated, not a supported image, or
            larger than ``max_pixels``. ``err.item`` names it.

    Example:
        >>> load_image(open("logo.png", "rb").read(), name="logo.png").mode  # doctest: +SKIP
        'RGB'
    """
    if max_pixels <= 0:
        raise ValueError(f"max_pixels must be > 0, got {max_pixels}")
    if isinstance(source, Image.Image):
        item = name or getattr(source, "filename", None) or "<image>"
        return _normalise(source, item, max_pixels, draft_size, keep_alpha)

    item, stream, owned = _open_stream(source, name)
    try:
        with _bomb_errors(item):
            try:
                img = Image.open(stream)
            except Image.UnidentifiedImageError as e:
                raise ImageLoadError(item, "not a recognised image format") from e
            except (OSError, SyntaxError, ValueError) as e:
                raise ImageLoadError(item, f"cannot read image header: {e}") from e
            with img:
                rgb = _normalise(img, item, max_pixels, draft_size, keep_alpha)
                # Detach the result from the file we are about to close (RGB input comes back
                # as the very same object).
                return rgb.copy() if rgb is img else rgb
    finally:
        if owned:
            stream.close()


def read_bytes(
    source: str | os.PathLike | BinaryIO, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> bytes:
    """Read a whole file (or binary stream) but refuse to read more than ``max_bytes``.

    Args:
        source: A path or a binary file object (read from its current position).
        max_bytes: Largest accepted size in bytes.

    Returns:
        The content.

    Raises:
        ImageLoadError: The file is missing/unreadable or larger than ``max_bytes``.

    Example:
        >>> data = read_bytes("upload.jpg", max_bytes=10_000_000)  # doctest: +SKIP
    """
    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be > 0, got {max_bytes}")
    if isinstance(source, (str, os.PathLike)):
        item = os.fspath(source)
        try:
            with open(source, "rb") as f:
                data = f.read(max_bytes + 1)
        except FileNotFoundError as e:
            raise ImageLoadError(item, "file not found") from e
        except IsADirectoryError as e:
            raise ImageLoadError(item, "is a directory, not a file") from e
        except OSError as e:
            raise ImageLoadError(item, f"cannot read file: {e.strerror or e}") from e
    else:
        item = _stream_name(source)
        try:
            data = source.read(max_bytes + 1)
        except OSError as e:
            raise ImageLoadError(item, f"cannot read stream: {e}") from e
    # Reading one byte past the limit tells "exactly max_bytes" from "too large" without stat(),
    # which streams do not have.
    if len(data) > max_bytes:
        raise ImageLoadError(item, f"larger than the limit of {max_bytes} bytes")
    return data


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's content, read in 1 MiB chunks (works for multi-GB checkpoints).

    Raises:
        FileNotFoundError, OSError: The file cannot be read.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


# --- internals -------------------------------------------------------------------------------


def _stream_name(stream: object) -> str:
    name = getattr(stream, "name", None)
    return name if isinstance(name, str) and name else "<stream>"


def _open_stream(source: ImageSource, name: str | None) -> tuple[str, BinaryIO, bool]:
    """Turn a path/bytes/file object into (item name, seekable stream, whether we own it)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        item = name or "<bytes>"
        if len(source) == 0:
            raise ImageLoadError(item, "empty data")
        return item, io.BytesIO(bytes(source)), True
    if isinstance(source, (str, os.PathLike)):
        item = name or os.fspath(source)
        path = Path(source)
        try:
            if path.is_dir():
                raise ImageLoadError(item, "is a directory, not a file")
            if path.stat().st_size == 0:
                raise ImageLoadError(item, "empty file")
            return item, open(path, "rb"), True
        except FileNotFoundError as e:
            raise ImageLoadError(item, "file not found") from e
        except ImageLoadError:
            raise
        except OSError as e:
            raise ImageLoadError(item, f"cannot read file: {e.strerror or e}") from e
    if hasattr(source, "read"):
        item = name or _stream_name(source)
        stream: BinaryIO = source  # type: ignore[assignment]
        # PIL needs seek(); sockets and pipes cannot, so buffer those in memory.
        seekable = getattr(stream, "seekable", None)
        if not (callable(seekable) and seekable()):
            data = stream.read()
            if not data:
                raise ImageLoadError(item, "empty data")
            return item, io.BytesIO(data), True
        pos = stream.tell()
        if stream.read(1) == b"":
            raise ImageLoadError(item, "empty data")
        stream.seek(pos)
        return item, stream, False
    raise TypeError(
        "image source must be a path, bytes, a binary file object or a PIL.Image, "
        f"got {type(source).__name__}"
    )


@contextlib.contextmanager
def _bomb_errors(item: str) -> Iterator[None]:
    """Turn PIL's decompression-bomb warning (and error) into ImageLoadError for one call.

    ``warnings.catch_warnings`` edits process-global filter state (before Python 3.14); every
    caller installs the same "error" filter for this one category, so concurrent threads can
    at worst keep that filter a little longer. Our own header check (``max_pixels``) normally
    fires first anyway: PIL's limit only matters when ``max_pixels`` is set above it.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
            raise ImageLoadError(item, f"refused as a decompression bomb: {e}") from e


def _normalise(
    img: Image.Image, item: str, max_pixels: int, draft_size: int | None, keep_alpha: bool = False
) -> Image.Image:
    """Check size, decode the first frame, convert to RGB (or RGBA) and apply EXIF orientation."""
    if img.format is not None and img.format not in SUPPORTED_FORMATS:
        raise ImageLoadError(
            item, f"unsupported format {img.format}; supported: {sorted(SUPPORTED_FORMATS)}"
        )
    width, height = img.size
    if width <= 0 or height <= 0:
        raise ImageLoadError(item, f"invalid image size {width}x{height}")
    if width * height > max_pixels:
        raise ImageLoadError(
            item, f"{width}x{height} = {width * height} pixels exceeds max_pixels={max_pixels}"
        )
    if draft_size and img.format in ("JPEG", "MPO"):
        scale = draft_size / min(width, height)
        img.draft("RGB", (max(1, round(width * scale)), max(1, round(height * scale))))
    try:
        # Image.open leaves animated and multi-page images on their first frame; load() decodes
        # only that one (asking for n_frames would scan the whole file).
        img.load()
        rgb = to_rgb(img, keep_alpha=keep_alpha)
        # Read after load(): a PNG may keep its eXIf chunk after the image data.
        orientation = _orientation(img)
    except ImageLoadError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise  # handled by _bomb_errors with a clearer message
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as e:
        reason = str(e) or type(e).__name__
        if "truncated" in reason.lower() or isinstance(e, EOFError):
            reason = f"truncated or corrupt image data ({reason})"
        raise ImageLoadError(item, f"cannot decode image: {reason}") from e
    fix = _ORIENTATION_FIX.get(orientation)
    if fix is not None:
        rgb = rgb.transpose(fix)
        # The pixels are upright now; drop the tag so nobody downstream rotates them again.
        rgb.info.pop("exif", None)
    return rgb


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(_ORIENTATION_TAG, 1))
    except Exception:  # noqa: BLE001 - a broken EXIF block must not reject an otherwise fine image
        return 1


def to_rgb(img: Image.Image, *, keep_alpha: bool = False) -> Image.Image:
    """Convert an already decoded image of any PIL mode to 8-bit RGB.

    Transparency (alpha channels and palette/RGB/L transparency keys) is composited on white,
    or with ``keep_alpha`` kept as 8-bit RGBA; 16-bit and float greyscale are scaled, not
    clipped. RGB input is returned as is.
    """
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img
    if mode.startswith("I;16") or mode in ("I", "F"):
        img = _high_depth_to_l(img)
        mode = "L"
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        if keep_alpha:
            return rgba
        background = Image.new("RGBA", rgba.size, _WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _high_depth_to_l(img: Image.Image) -> Image.Image:
    """16-bit / 32-bit int / float greyscale -> 8-bit L by scaling, not clipping.

    PIL's own ``convert`` clips values above 255, which turns a 16-bit scan white.
    Integer images are read as 16-bit (0..65535, the PNG/TIFF case); float images as 0..1
    when their maximum is <= 1, else 0..255.
    """
    arr = np.asarray(img)
    if img.mode == "F":
        arr = arr.astype(np.float64)
        arr = np.nan_to_num(arr, nan=0.0, posinf=255.0, neginf=0.0)
        if arr.size and arr.max() <= 1.0:
            arr = arr * 255.0
    else:
        arr = np.clip(arr.astype(np.float64), 0, 65535) / 257.0
    out = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))  # 2-D uint8 -> "L"
    out.info = {k: v for k, v in img.info.items() if k != "transparency"}
    return out
