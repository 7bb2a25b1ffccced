"""Replacing stored references' side data (aux bytes): on its own, or in the commit of an add
or a remove (a brand's new or withdrawn logo changes its product photos' located marks)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from index.errors import ReadOnlyIndexError
from index.records import Fingerprint, NewReference
from index.store import ReferenceIndex

DIM = 16
FP = Fingerprint(preset="tiny", arch="test:mlp", weights="random:0", preprocess='{"size":16}', dim=DIM)
REPO = Path(__file__).resolve().parents[1]


def unit(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def refs(n: int, start: int = 0) -> list[NewReference]:
    return [NewReference(brand="b", sha256=f"{i:064x}", source=f"{i}.png", kind="product") for i in range(start, start + n)]


@pytest.mark.parametrize("factory", ["Flat", "HNSW32"])
def test_replace_aux_is_one_commit_and_keeps_vectors(tmp_path: Path, factory: str) -> None:
    with ReferenceIndex.create(tmp_path / "i", fingerprint=FP, factory=factory) as idx:
        ids = idx.add(refs(3), unit(3, 0), aux=[b"a", None, b"c"]).added
        generation, vectors = idx.generation, idx.get_vectors(ids)
        assert idx.replace_aux({ids[0]: b"A", ids[1]: b"B", ids[2]: None, 999: b"x"}) == 3
        assert idx.generation == generation + 1
        assert idx.get_aux(ids) == {ids[0]: b"A", ids[1]: b"B"}
        assert all(np.array_equal(v, vectors[k]) for k, v in idx.get_vectors(ids).items())
        assert idx.replace_aux({999: b"x"}) == 0 and idx.generation == generation + 1  # nothing to commit
        with pytest.raises(ValueError):
            idx.replace_aux({ids[0]: "text"})
    with ReferenceIndex.open(tmp_path / "i") as ro:
        assert ro.get_aux(ids) == {ids[0]: b"A", ids[1]: b"B"}
        with pytest.raises(ReadOnlyIndexError):
            ro.replace_aux({ids[0]: b"z"})


def test_add_and_remove_update_other_references_in_their_commit(tmp_path: Path) -> None:
    with ReferenceIndex.create(tmp_path / "i", fingerprint=FP) as idx:
        first = idx.add(refs(2), unit(2, 0), aux=[b"p0", b"p1"]).added
        generation = idx.generation
        new = idx.add(refs(1, start=5), unit(1, 1), aux=[b"logo"], aux_updates={first[0]: b"p0-located"}).added
        assert idx.generation == generation + 1
        assert idx.get_aux(first + new) == {first[0]: b"p0-located", first[1]: b"p1", new[0]: b"logo"}
        # Only duplicates added: the updates still commit.
        assert idx.add(refs(1, start=5), unit(1, 1), aux_updates={first[1]: b"p1-located"}).added == []
        assert idx.get_aux([first[1]]) == {first[1]: b"p1-located"}
        generation = idx.generation
        assert idx.remove(ref_ids=new, aux_updates={first[0]: b"p0-again", new[0]: b"ignored"}) == 1
        assert idx.generation == generation + 1
        assert idx.get_aux(first + new) == {first[0]: b"p0-again", first[1]: b"p1-located"}


def test_index_package_imports_neither_torch_nor_detector() -> None:
    code = "import sys, index.store, index.writes; print(any(m in sys.modules for m in ('torch', 'detector')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
