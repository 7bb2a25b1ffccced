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
