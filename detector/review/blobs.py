"""Content-addressed image storage for the review queue: ``<dir>/ab/<sha256>.<ext>``.

Images are bounded in size: one larger than ``max_side`` pixels on a side (or ``max_bytes``)
is downscaled and re-encoded as JPEG before it is stored, so a queue cannot fill a disk with
huge uploads. The same content is stored once. Paths in the database are relative to the
folder, so it can move with the database file.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

DEFAULT_MAX_SIDE = 1024
DEFAULT_MAX_BYTES = 2 * 1024 * 1024
_EXT = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif"}


@dataclass(frozen=True)
class StoredImage:
    path: str  # relative to the blob folder
    width: int  # of the original image
    height: int


class BlobStore:
    """Images by content under ``root`` (created on first write)."""

    def __init__(self, root: str | Path, *, max_side: int = DEFAULT_MAX_SIDE,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.root = Path(root)
        self.max_side = max_side
        self.max_bytes = max_bytes

    def put(self, data: bytes) -> StoredImage:
        """Store ``data`` (an encoded image), downscaled when over the bounds."""
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            fmt = img.format or ""
            if fmt in _EXT and max(width, height) <= self.max_side and len(data) <= self.max_bytes:
                blob, ext = data, _EXT[fmt]
            else:
                blob, ext = self._shrink(img), "jpg"
        name = hashlib.sha256(blob).hexdigest()
        rel = f"{name[:2]}/{name}.{ext}"
        target = self.root / rel
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
            os.replace(tmp, target)
        return StoredImage(rel, width, height)

    def put_file(self, path: str | Path) -> StoredImage:
        return self.put(Path(path).read_bytes())

    def path(self, rel: str) -> Path | None:
        """The file of a stored path, or None when missing or not inside the folder."""
        candidate = (self.root / rel).resolve()
        root = self.root.resolve()
        if root not in candidate.parents or not candidate.is_file():
            return None
        return candidate

    def _shrink(self, img: Image.Image) -> bytes:
        img = img.convert("RGB")
        img.thumbnail((self.max_side, self.max_side))
        out = io.BytesIO()
        img.save(out, format="JPEG", quality=88)
        return out.getvalue()
