"""The shape search's inverted file saved beside the index, keyed to the library it was built from.

Building the inverted file over the packed masks costs minutes at a million logos (255 s in
docs/scale.md), and every scorer process paid it when it started. The indexing run now saves
it as :data:`LISTS_FILE` next to the shape library (atomic write: temp file, fsync, rename),
and a scorer loads it instead of building it when the saved key equals the key of the library
it holds (:attr:`~detector.shape_library.ShapeLibrary.key`: a hash of the library's ref ids and
packed masks, saved with the library). A file that is missing, stale (another library's key) or
unreadable (bad magic, checksum, FAISS parse) is never trusted: the caller builds the inverted
file again.

File layout: a fixed :data:`_HEADER_BYTES` header (magic line, then a JSON object: key, the
library size the lists' centres were drawn for, the payload's length and SHA-256), padded
with spaces; then FAISS's own serialisation of the ``IndexBinaryIVF``. The payload is checked
against its SHA-256 before FAISS parses it, so a corrupt file never reaches FAISS's reader
(which trusts the sizes it reads).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LISTS_FILE = "shape_lists.faiss"
_MAGIC = b"counterfeit shape lists 1\n"
_HEADER_BYTES = 4096
_CHUNK = 1 << 22  # bytes per read while checking the payload's hash


@dataclass(frozen=True)
class SavedLists:
    """An inverted file read back from disk, and the library size its centres were drawn for."""

    lists: Any  # faiss.IndexBinaryIVF labelled with ref ids
    drawn_for: int


def save_lists(path: Path, lists: Any, *, key: str, drawn_for: int) -> None:
    """Write ``lists`` (an ``IndexBinaryIVF``) to ``path`` atomically, keyed to ``key``.

    The payload is streamed to the temp file (no second in-memory copy of the codes), then
    the header, which holds its hash, is written in front of it.
    """
    import faiss

    from index.atomic import atomic_write

    def write(tmp: Path) -> None:
        digest, size = hashlib.sha256(), 0
        with open(tmp, "wb") as out:
            out.write(b"\0" * _HEADER_BYTES)

            def sink(chunk: bytes) -> None:
                nonlocal size
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)

            writer = faiss.PyCallbackIOWriter(sink)
            faiss.write_index_binary(lists, writer)
            del writer  # flushes its buffer into ``sink``
            header = _MAGIC + json.dumps({"key": key, "drawn_for": int(drawn_for), "bytes": size,
                                          "sha256": digest.hexdigest()}).encode()  # fmt: skip
            if len(header) > _HEADER_BYTES:
                raise ValueError("shape lists header too long")
            out.seek(0)
            out.write(header.ljust(_HEADER_BYTES, b" "))

    atomic_write(Path(path), write)


def load_lists(path: Path, key: str, *, expected: int) -> SavedLists | None:
    """The inverted file saved at ``path`` if it was built for the library keyed ``key`` and
    holds ``expected`` logos; None when it is missing, stale or unreadable (logged)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        with open(path, "rb") as f:
            header = _header(f.read(_HEADER_BYTES))
            if header["key"] != key:
                log.info("%s was built for another shape library: built again", path)
                return None
            _check_payload(f, header)
            f.seek(_HEADER_BYTES)
            lists = _read_index(f)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:  # truncated, foreign, corrupt
        log.warning("%s unreadable, shape inverted file built again (%s)", path, e)
        return None
    if lists.ntotal != expected:
        log.warning("%s holds %d logos, the library %d: built again", path, lists.ntotal, expected)
        return None
    return SavedLists(lists, int(header["drawn_for"]))


def _header(raw: bytes) -> dict:
    if len(raw) != _HEADER_BYTES or not raw.startswith(_MAGIC):
        raise ValueError("not a shape lists file")
    header = json.loads(raw[len(_MAGIC) :].decode())
    if not isinstance(header, dict) or not {"key", "drawn_for", "bytes", "sha256"} <= header.keys():
        raise ValueError("shape lists header incomplete")
    return header


def _check_payload(f: Any, header: dict) -> None:
    """Raise ValueError unless the bytes after the header are exactly the recorded payload."""
    digest, size = hashlib.sha256(), 0
    while chunk := f.read(_CHUNK):
        digest.update(chunk)
        size += len(chunk)
    if size != header["bytes"] or digest.hexdigest() != header["sha256"]:
        raise ValueError("shape lists payload does not match its checksum")


def _read_index(f: Any) -> Any:
    import faiss

    lists = faiss.read_index_binary(faiss.PyCallbackIOReader(f.read))
    if not isinstance(lists, faiss.IndexBinaryIVF):
        raise ValueError(f"shape lists file holds a {type(lists).__name__}, not an IndexBinaryIVF")
    return lists
