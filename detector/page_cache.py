"""Read a memory-mapped index's files into the OS page cache before its first searches.

A search of a memory-mapped index waits on the disk for every page it touches the first time.
The descriptor store of a 1,000,000-logo library is ~13 GB; each listing probes a few thousand
of its lists, scattered over the files, so a scorer started on a cold page cache waits on
random reads for its first minutes (p99 4.4 s a listing there, against 0.5 s once the files
were read first: docs/scale.md). Reading the files once, sequentially, takes ~11 s there, once
per process (segments are never rewritten in place). It is done before the store is searched,
not beside it: listings scored while a background read still ran waited as long as cold ones.
It is only done when the files fit comfortably in the memory available to the process: the
machine's, or its container's where a memory cgroup limits it (page cache is charged to the
cgroup, so a container given 8 GiB on a 24 GiB machine would only evict what it read).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

#: Files are read only while they total at most this share of the available memory.
WARM_SHARE_OF_AVAILABLE = 0.75
CGROUP_ROOT = Path("/sys/fs/cgroup")
_NO_LIMIT = 1 << 60  # cgroup v1 writes "no limit" as a huge number
_READ_BLOCK = 16 * 1024 * 1024
_warmed: set[tuple[str, int, int]] = set()  # (path, size, mtime) read by this process already
_lock = threading.Lock()


def available_memory() -> int | None:
    """Bytes available to this process: the kernel's ``MemAvailable``, or its memory cgroup's
    room when that is less; None where neither can be told."""
    machine = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    machine = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        container = cgroup_available(Path("/proc/self/cgroup").read_text(), CGROUP_ROOT)
    except OSError:
        container = None
    known = [v for v in (machine, container) if v is not None]
    return min(known) if known else None


def cgroup_available(membership: str, root: Path) -> int | None:
    """Room left under the memory limit of the cgroup that ``membership`` (the text of
    ``/proc/self/cgroup``) names, under the cgroup file system at ``root``: the limit less
    what is charged, plus the inactive file pages the kernel would reclaim first. None when
    the cgroup sets no limit or cannot be read. Knows cgroup v2 (``0::/path``, at ``root`` or
    ``root/unified``) and v1's memory controller (``N:memory:/path`` at ``root/memory``)."""
    for line in membership.splitlines():
        number, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        relative = path.strip().lstrip("/")
        if number == "0" and controllers == "":
            bases, files = [root, root / "unified"], ("memory.max", "memory.current", "inactive_file")
        elif "memory" in controllers.split(","):
            bases, files = [root / "memory"], ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
        else:
            continue
        # Inside a container's cgroup namespace the path may be "/" with the group mounted as the root.
        for folder in (b / relative for b in bases):
            room = _room(folder, *files)
            if room is not None:
                return room
    return None


def _room(folder: Path, limit_file: str, usage_file: str, inactive_key: str) -> int | None:
    try:
        limit_text = (folder / limit_file).read_text().strip()
        usage = int((folder / usage_file).read_text())
    except (OSError, ValueError):
        return None
    if limit_text == "max" or not limit_text.isdigit() or int(limit_text) >= _NO_LIMIT:
        return None
    inactive = 0
    try:
        for line in (folder / "memory.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == inactive_key:
                inactive = int(value)
    except (OSError, ValueError):
        pass
    return max(0, int(limit_text) - usage + inactive)


def _key(path: Path) -> tuple[str, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return str(path.resolve()), st.st_size, st.st_mtime_ns


def read_ahead(paths: Iterable[str | os.PathLike[str]]) -> int:
    """Read ``paths`` (those this process has not read yet) into the page cache; returns the
    bytes read: 0 when there is nothing new or the files do not fit in
    :data:`WARM_SHARE_OF_AVAILABLE` of the available memory. A file that cannot be read is skipped."""
    with _lock:
        todo = [(Path(p), k) for p in paths if (k := _key(Path(p))) is not None and k not in _warmed]
    if not todo:
        return 0
    total = sum(k[1] for _, k in todo)
    available = available_memory()
    if available is None or total > WARM_SHARE_OF_AVAILABLE * available:
        log.info("page cache: %d file(s), %.1f GB, not read ahead (available memory: %s)", len(todo), total / 1e9,
                 "unknown" if available is None else f"{available / 1e9:.1f} GB")
        return 0
    started, done, block = time.perf_counter(), 0, bytearray(_READ_BLOCK)
    for path, key in todo:
        try:
            with open(path, "rb", buffering=0) as f:
                while n := f.readinto(block):
                    done += n
        except OSError as e:  # e.g. a segment merged away meanwhile: the search maps what is named
            log.debug("page cache: %s not read (%s)", path, e)
            continue
        with _lock:
            _warmed.add(key)
    log.info("page cache: read %.1f GB ahead in %.1f s", done / 1e9, time.perf_counter() - started)
    return done
