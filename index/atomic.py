"""Crash-safe file primitives: atomic writes, generation-named files and the writer lock.

A write goes to a temporary file in the same directory, is fsynced, renamed over the target and
the directory is fsynced, so after a crash the target holds either the old or the new content.
The writer lock is an ``flock`` on a lock file: the kernel drops it when the holder dies, so a
crashed writer never leaves the index locked.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from index.errors import IndexLockedError

TMP_SUFFIX = ".tmp"
_GENERATION_RE = re.compile(r"^vectors\.(\d{8,})\.faiss$")


def fsync_path(path: Path) -> None:
    """Flush a file's data, or a directory's entries (rename, create, unlink), to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: Path) -> None:
    """Flush a directory entry (rename, create, unlink) to disk."""
    fsync_path(directory)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write ``path`` atomically: ``write(tmp)`` fills a temp file that is fsynced and renamed.

    Args:
        path: Final file path.
        write: Callback that writes the complete content to the temporary path it receives.

    Raises:
        Whatever ``write`` raises; the temp file is removed and ``path`` is untouched.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}{TMP_SUFFIX}")
    try:
        write(tmp)
        fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_json(path: Path, value: Any) -> None:
    """Atomically replace ``path`` with ``value`` as indented JSON."""
    atomic_write_bytes(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode())


def sha256_file(path: Path, chunk_size: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in chunks (index files can be several GB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def remove_temp_files(directory: Path) -> list[Path]:
    """Delete temp files left by interrupted atomic writes; returns what was removed."""
    removed = []
    for p in Path(directory).glob(f".*{TMP_SUFFIX}"):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed.append(p)
    return removed


def generation_file_name(generation: int) -> str:
    """File name of the faiss index saved at ``generation`` (one immutable file per generation)."""
    return f"vectors.{generation:08d}.faiss"


def list_generation_files(directory: Path) -> dict[int, Path]:
    """Generation -> path for every faiss generation file in ``directory``."""
    found = {}
    for p in Path(directory).iterdir():
        m = _GENERATION_RE.match(p.name)
        if m:
            found[int(m.group(1))] = p
    return found


class WriterLock:
    """Exclusive, advisory, crash-safe writer lock (``flock``) on ``lock_path``.

    Two ``WriterLock`` objects conflict even inside one process (each opens its own file
    description). Readers never take it.
    """

    def __init__(self, lock_path: Path) -> None:
        self.lock_path = Path(lock_path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, timeout: float = 0.0, poll_interval: float = 0.05) -> None:
        """Take the lock, waiting up to ``timeout`` seconds.

        Raises:
            IndexLockedError: Another writer still holds it after ``timeout``.
        """
        if self._fd is not None:
            return
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = self._read_holder(fd)
                    os.close(fd)
                    raise IndexLockedError(
                        f"index at {self.lock_path.parent} is locked by another writer ({holder}); "
                        f"waited {timeout:.1f}s. Close the other writer, pass a longer lock_timeout, "
                        "or open read-only (readers are never blocked)."
                    ) from None
                time.sleep(poll_interval)
        # Record the holder for the message another writer gets (informational only).
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid={os.getpid()} since={time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Release the lock (idempotent)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @staticmethod
    def _read_holder(fd: int) -> str:
        try:
            text = os.pread(fd, 200, 0).decode(errors="replace").strip()
        except OSError:
            text = ""
        return text or "holder unknown"

    def __enter__(self) -> WriterLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
