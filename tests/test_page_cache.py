"""Reading a memory-mapped index's files into the page cache before its first searches."""

from __future__ import annotations

from detector import page_cache


def _files(tmp_path, sizes):
    paths = []
    for i, size in enumerate(sizes):
        path = tmp_path / f"segment-{i}.ivl"
        path.write_bytes(b"\0" * size)
        paths.append(path)
    return paths


def test_files_are_read_once_per_process(tmp_path, monkeypatch):
    monkeypatch.setattr(page_cache, "_warmed", set())
    monkeypatch.setattr(page_cache, "available_memory", lambda: 10**9)
    paths = _files(tmp_path, [1000, 40_000_000])  # the second takes several blocks
    assert page_cache.read_ahead(paths) == 40_001_000
    assert page_cache.read_ahead(paths) == 0  # read already
    paths[0].write_bytes(b"\1" * 2000)  # a rewritten file is read again
    assert page_cache.read_ahead(paths) == 2000


def test_files_larger_than_the_memory_share_are_left_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(page_cache, "_warmed", set())
    paths = _files(tmp_path, [600, 600])
    monkeypatch.setattr(page_cache, "available_memory", lambda: 1500)  # 1,200 bytes > 0.75 of 1,500
    assert page_cache.read_ahead(paths) == 0
    monkeypatch.setattr(page_cache, "available_memory", lambda: None)  # cannot tell: not read either
    assert page_cache.read_ahead(paths) == 0
    monkeypatch.setattr(page_cache, "available_memory", lambda: 3000)
    assert page_cache.read_ahead([*paths, tmp_path / "gone.ivl"]) == 1200  # a missing file is skipped


def test_available_memory_is_read_from_the_kernel():
    value = page_cache.available_memory()
    assert value is None or value > 0


def _cgroup(folder, files):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)


def test_a_memory_cgroup_limit_bounds_the_available_memory(tmp_path):
    # cgroup v2: 8 GiB limit, 3 GiB charged, of which 1 GiB inactive file pages (reclaimable).
    gib = 1 << 30
    _cgroup(tmp_path / "v2" / "pod" / "scorer", {"memory.max": f"{8 * gib}\n", "memory.current": f"{3 * gib}\n",
                                                "memory.stat": f"anon {2 * gib}\ninactive_file {gib}\n"})
    assert page_cache.cgroup_available("0::/pod/scorer\n", tmp_path / "v2") == 6 * gib
    # cgroup v1's memory controller, beside other controllers; v2's hybrid mount holds no memory files.
    _cgroup(tmp_path / "v1" / "memory" / "probe", {"memory.limit_in_bytes": f"{8 * gib}\n",
                                                 "memory.usage_in_bytes": f"{5 * gib}\n",
                                                 "memory.stat": "cache 10\ntotal_inactive_file 0\n"})
    (tmp_path / "v1" / "unified").mkdir()
    membership = "12:pids:/probe\n4:memory:/probe\n0::/probe\n"
    assert page_cache.cgroup_available(membership, tmp_path / "v1") == 3 * gib
    # No limit (v1's huge number, v2's "max"), or no memory cgroup at all: nothing to bound.
    (tmp_path / "v1" / "memory" / "probe" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert page_cache.cgroup_available(membership, tmp_path / "v1") is None
    (tmp_path / "v2" / "pod" / "scorer" / "memory.max").write_text("max\n")
    assert page_cache.cgroup_available("0::/pod/scorer\n", tmp_path / "v2") is None
    assert page_cache.cgroup_available("", tmp_path) is None


def test_a_container_sees_its_own_cgroup_at_the_mount_root(tmp_path):
    # Inside a cgroup namespace /proc/self/cgroup says "/" and the group is mounted as the root.
    _cgroup(tmp_path, {"memory.max": "1000\n", "memory.current": "400\n"})
    assert page_cache.cgroup_available("0::/\n", tmp_path) == 600
