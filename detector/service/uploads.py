"""Request input checks and uploaded images: names safe to echo, form fields, decoding."""

from __future__ import annotations

import re
import unicodedata

from fastapi import UploadFile
from PIL import Image

from detector.errors import ImageLoadError
from detector.images import load_image
from detector.service.errors import ApiError
from detector.service.settings import ServiceSettings

_MAX_NAME_CHARS = 200


def display_name(filename: str | None, position: int) -> str:
    """A client file name safe to echo: base name only, printable, bounded length."""
    if not filename:
        return f"file{position}"
    base = re.split(r"[\\/]", filename)[-1]
    base = "".join(ch for ch in base if unicodedata.category(ch)[0] != "C").strip()
    return base[:_MAX_NAME_CHARS] or f"file{position}"


def check_text(value: str | None, name: str, limit: int) -> str | None:
    """``value`` unchanged; 422 ``invalid_field`` when too long or holding control characters."""
    if value is None:
        return None
    if len(value) > limit:
        raise ApiError(422, "invalid_field", f"{name} is longer than {limit} characters")
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise ApiError(422, "invalid_field", f"{name} must not contain control characters")
    return value


def check_file_count(files: list[UploadFile], settings: ServiceSettings) -> None:
    """422 ``no_files`` without files, 413 ``too_many_files`` above ``settings.max_files``."""
    if not files:
        raise ApiError(422, "no_files", "send at least one image as multipart field 'files'")
    if len(files) > settings.max_files:
        raise ApiError(
            413,
            "too_many_files",
            f"{len(files)} files sent; at most {settings.max_files} per request",
        )


async def read_uploads(files: list[UploadFile]) -> list[tuple[str, bytes]]:
    """``(display name, bytes)`` of every uploaded file, in order."""
    return [(display_name(f.filename, i), await f.read()) for i, f in enumerate(files)]


def decode_images(
    blobs: list[tuple[str, bytes]], max_pixels: int
) -> list[Image.Image | ImageLoadError]:
    """Decode each blob; an unreadable one gives its ImageLoadError in its place (worker thread)."""
    out: list[Image.Image | ImageLoadError] = []
    for name, data in blobs:
        try:
            out.append(load_image(data, name=name, max_pixels=max_pixels))
        except ImageLoadError as e:
            out.append(e)
    return out
