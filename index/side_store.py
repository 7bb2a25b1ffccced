"""A content-addressed folder of side data (aux blobs) for the vector stores that cannot hold them.

Milvus limits a VARCHAR field to 64 KiB and a reference's side data (local features, the
silhouette, the logo box) reaches ~100 KiB, so the collection stores only each blob's sha256
and the bytes live here, one immutable file per distinct content::

    <side_dir>/aux/ab/abcdef....bin     (ab = the first two hex digits of the sha256)

Files are written atomically (temp file, fsync, rename) *before* the rows that name them and
deleted *after* the last row that names them is gone, so a row never points at a missing
blob; a crash in between leaves at worst an unreferenced file (:meth:`SideStore.orphans`).
Content addressing makes a rewrite of the same bytes a no-op and a retried write harmless.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from index.atomic import atomic_write_bytes

log = logging.getLogger(__name__)

AUX_DIR = "aux"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def blob_key(blob: bytes) -> str:
    """The name a blob is stored under: its sha256, hex."""
    return hashlib.sha256(blob).hexdigest()


class SideStore:
    """Blobs by their sha256 under ``root/aux``. Thread- and process-safe (files are immutable)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._aux = self.root / AUX_DIR

    def _path(self, key: str) -> Path:
        if not _HEX64.match(key):
            raise ValueError(f"not a sha256 hex key: {key!r}")
        return self._aux / key[:2] / f"{key}.bin"

    def put(self, blob: bytes) -> str:
        """Store ``blob`` (once: same content, same file) and return its key."""
        key = blob_key(blob)
        path = self._path(key)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, blob)
        return key

    def get(self, key: str) -> bytes | None:
        """The blob stored under ``key``; None (logged) when it is missing or its content no
        longer hashes to ``key`` (a damaged file): the caller treats the reference as having no
        side data, as it does an undecodable blob."""
        path = self._path(key)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            log.warning("side data %s is missing from %s", key, self._aux)
            return None
        if blob_key(blob) != key:
            log.warning("side data file %s is damaged (content does not match its name)", path)
            return None
        return blob

    def delete(self, keys: Iterable[str]) -> int:
        """Remove the blobs of ``keys`` (absent ones ignored); how many files were removed."""
        removed = 0
        for key in set(keys):
            try:
                self._path(key).unlink()
                removed += 1
            except FileNotFoundError:
                pass
        return removed

    def keys(self) -> Iterator[str]:
        """Every stored key (for garbage collection of orphans)."""
        if not self._aux.is_dir():
            return
        for path in sorted(self._aux.glob("??/*.bin")):
            if _HEX64.match(path.stem):
                yield path.stem

    def orphans(self, referenced: set[str]) -> list[str]:
        """Stored keys no row names (left by a crash between a blob write and its row write)."""
        return [key for key in self.keys() if key not in referenced]
