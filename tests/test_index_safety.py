"""Crash safety, writer lock and corruption handling of ReferenceIndex.

Crashes are real: a child process is killed with ``os._exit`` (no cleanup, no finally blocks)
at each step of the commit protocol, then the parent checks the index is readable and
consistent and that a new writer can continue.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from index.atomic import list_generation_files
from index.errors import IndexCorruptError, IndexLockedError
from index.records import Fingerprint, NewReference
from index.store import ReferenceIndex

DIM = 16
FP = Fingerprint(preset="tiny", arch="test:mlp", weights="random:0", preprocess="{}", dim=DIM)
REPO = Path(__file__).resolve().parents[1]


def unit(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def refs(n: int, start: int = 0) -> list[NewReference]:
    return [NewReference(brand="b", sha256=f"{i:064x}", source=f"{i}") for i in range(start, start + n)]


def make_index(path: Path, factory: str = "Flat", n: int = 40) -> np.ndarray:
    vecs = unit(n, seed=1)
    with ReferenceIndex.create(path, fingerprint=FP, factory=factory) as idx:
        idx.add(refs(n), vecs)
    return vecs


def run_child(code: str, *, check: bool = False) -> subprocess.CompletedProcess[str]:
    prelude = (
        "import os, sys, time, numpy as np\n"
        "from index.records import Fingerprint, NewReference\n"
        "from index.store import ReferenceIndex\n"
        f"fp = Fingerprint(**{FP.to_dict()!r})\n"
        f"def unit(n, seed):\n"
        f"    x = np.random.default_rng(seed).standard_normal((n, {DIM})).astype(np.float32)\n"
        "    return x / np.linalg.norm(x, axis=1, keepdims=True)\n"
        "refs = lambda n, s: [NewReference(brand='b', sha256=f'{i:064x}', source=str(i)) for i in range(s, s + n)]\n"
    )
    return subprocess.run([sys.executable, "-c", prelude + code], cwd=REPO, capture_output=True,
                          text=True, check=check, timeout=60)  # fmt: skip


# Each step of the commit; "True" when the crash comes after the SQLite commit (the commit point).
CRASH_POINTS = {
    "mid_faiss_write": False,  # the temp faiss file is half written
    "_write_faiss": False,  # generation G+1 file complete, SQLite not committed
    "_commit_catalog": True,  # SQLite committed, manifest not rewritten
    "_write_manifest": True,  # everything but pruning old generations
}


@pytest.mark.parametrize("point", list(CRASH_POINTS))
@pytest.mark.parametrize("factory", ["Flat", "HNSW32"])
def test_crash_mid_save_leaves_a_consistent_index(tmp_path: Path, point: str, factory: str) -> None:
    path = tmp_path / "idx"
    vecs = make_index(path, factory)
    if point == "mid_faiss_write":
        patch = (
            "import index.faiss_ops as fo\n"
            "def half_write(index, p):\n"
            "    open(p, 'wb').write(b'\\x00' * 100)\n"
            "    os._exit(3)\n"
            "fo.write_index = half_write\n"
        )
    else:
        patch = (
            f"orig = ReferenceIndex.{point}\n"
            "def crash(self, *a, **kw):\n"
            "    orig(self, *a, **kw)\n"
            "    os._exit(3)\n"
            f"ReferenceIndex.{point} = crash\n"
        )
    code = patch + (
        f"idx = ReferenceIndex.open({str(path)!r}, writable=True)\n"
        "idx.add(refs(10, 1000), unit(10, 2))\n"
        "print('not reached')\n"
    )
    result = run_child(code)
    assert result.returncode == 3, result.stderr
    expected = 50 if CRASH_POINTS[point] else 40

    with ReferenceIndex.open(path) as reader:  # readable, sha-verified, counts agree
        assert len(reader) == expected
        assert reader.info().vectors == expected
        _, ids = reader.search_vectors(vecs, k=1)
        assert (ids[:, 0] >= 0).all() and len(set(ids[:, 0].tolist())) == 40
        new_ids = reader.search_vectors(unit(10, 2), k=1)[1][:, 0]
        assert (new_ids > 40).all() == CRASH_POINTS[point]

    # A new writer cleans up after the dead one (the crash also released its lock) and goes on.
    with ReferenceIndex.open(path, writable=True) as writer:
        gens = sorted(list_generation_files(path))
        assert gens[-1] == writer.generation and len(gens) <= 2
        assert not list(path.glob(".*.tmp"))
        assert len(writer.add(refs(5, 2000), unit(5, 3)).added) == 5
        assert len(writer) == expected + 5


def test_exception_mid_commit_rolls_back_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "idx"
    vecs = make_index(path)
    with ReferenceIndex.open(path, writable=True) as idx:
        gen = idx.generation
        before = idx.search_vectors(vecs, k=3)

        def fail(self: ReferenceIndex) -> None:
            raise OSError("disk full (injected)")

        monkeypatch.setattr(ReferenceIndex, "_commit_catalog", fail)
        with pytest.raises(OSError, match="injected"):
            idx.add(refs(10, 1000), unit(10, 2))
        with pytest.raises(OSError, match="injected"):
            idx.remove(ref_ids=[1, 2, 3])
        monkeypatch.undo()
        # The in-memory faiss index was reloaded from the last commit: nothing of the failed writes.
        assert len(idx) == 40 and idx.generation == gen
        after = idx.search_vectors(vecs, k=3)
        np.testing.assert_array_equal(after[1], before[1])
        assert len(idx.add(refs(10, 1000), unit(10, 2)).added) == 10
        assert idx.generation == gen + 1 and len(idx) == 50


def test_second_writer_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "idx"
    make_index(path)
    with ReferenceIndex.open(path, writable=True):
        t0 = time.monotonic()
        with pytest.raises(IndexLockedError, match="pid="):
            ReferenceIndex.open(path, writable=True, lock_timeout=0.3)
        assert time.monotonic() - t0 >= 0.3
        with ReferenceIndex.open(path) as reader:  # readers are never blocked
            assert len(reader) == 40


def test_concurrent_writer_processes(tmp_path: Path) -> None:
    path = tmp_path / "idx"
    make_index(path)
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nfrom index.store import ReferenceIndex\n"
         f"idx = ReferenceIndex.open({str(path)!r}, writable=True)\n"
         "print('locked', flush=True)\ntime.sleep(1.0)\nidx.close()\ntime.sleep(30)\n"],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "locked"
        with pytest.raises(IndexLockedError):
            ReferenceIndex.open(path, writable=True)
        with ReferenceIndex.open(path, writable=True, lock_timeout=20) as idx:  # waits for close()
            assert idx.add(refs(1, 500), unit(1, 4)).added
        assert child.poll() is None  # the lock was released by close(), not by the process exit
    finally:
        child.kill()
        child.wait()


def test_killed_writer_releases_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "idx"
    make_index(path)
    result = run_child(f"idx = ReferenceIndex.open({str(path)!r}, writable=True)\nos._exit(9)\n")
    assert result.returncode == 9
    ReferenceIndex.open(path, writable=True).close()


@pytest.mark.parametrize("damage", ["truncate", "bitflip", "delete"])
def test_damaged_faiss_file_gives_a_clear_error_and_repairs(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "idx"
    vecs = make_index(path, "HNSW32")
    with ReferenceIndex.open(path) as idx:
        expected = idx.search_vectors(vecs, k=3)[1]
        current = path / f"vectors.{idx.generation:08d}.faiss"
    data = current.read_bytes()
    if damage == "truncate":
        current.write_bytes(data[: len(data) // 2])
    elif damage == "bitflip":
        current.write_bytes(data[:-10] + bytes([data[-10] ^ 0xFF]) + data[-9:])
    else:
        current.unlink()
    for writable in (False, True):
        with pytest.raises(IndexCorruptError, match="ReferenceIndex.repair"):
            ReferenceIndex.open(path, writable=writable)
    with ReferenceIndex.repair(path) as idx:
        np.testing.assert_array_equal(idx.search_vectors(vecs, k=3, params={"efSearch": 64})[1][:, 0],
                                      expected[:, 0])  # fmt: skip
    with ReferenceIndex.open(path) as idx:
        assert len(idx) == 40


def test_reader_survives_pruning_of_its_generation(tmp_path: Path) -> None:
    path = tmp_path / "idx"
    vecs = make_index(path)
    with ReferenceIndex.open(path) as reader:  # memory-mapped generation 1
        old = reader.search_vectors(vecs, k=2)[1]
        with ReferenceIndex.open(path, writable=True) as writer:
            for i in range(3):
                writer.add(refs(1, 100 + i), unit(1, 10 + i))
        assert 1 not in list_generation_files(path)  # its file is gone from the directory
        np.testing.assert_array_equal(reader.search_vectors(vecs, k=2)[1], old)
        assert reader.reload() and len(reader) == 43 and reader.generation == 4
