"""Shared fixtures: a small real-logo sample set and a tiny-model index built once per session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

TINY = "tiny-clip-test"


@pytest.fixture(scope="session")
def sample_set(tmp_path_factory: pytest.TempPathFactory):
    """Quickstart-style sample set with 6 real brand logos and a few listings per class."""
    from detector.bench.dataset import build_sample_set

    root = tmp_path_factory.mktemp("sample") / "set"
    return build_sample_set(root, n_brands=6, seed=1, listings_per_class=1, n_unindexed=2)


@pytest.fixture(scope="session")
def tiny_index_dir(sample_set, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An index of the sample references with the tiny random model (read-only use!)."""
    from detector.indexing import run_indexing

    index_dir = tmp_path_factory.mktemp("index") / "tiny"
    report = run_indexing(sample_set.references_dir, index_dir, preset=TINY, embedder_options={"device": "cpu"})
    assert report.added == sample_set.n_references and not report.failed
    return index_dir


@pytest.fixture()
def tiny_index_copy(tiny_index_dir: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the session index."""
    target = tmp_path / "index"
    shutil.copytree(tiny_index_dir, target)
    return target


@pytest.fixture(scope="session")
def cli_env() -> dict[str, str]:
    """Environment for `counterfeit` subprocesses: offline, few threads."""
    env = dict(os.environ)
    env.update({"HF_HUB_OFFLINE": "1", "COUNTERFEIT_OFFLINE": "1", "OMP_NUM_THREADS": "2"})
    return env
