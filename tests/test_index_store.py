"""ReferenceIndex behaviour on seeded synthetic unit vectors: add/search/remove, duplicates,
validation, search parameters, export/import, info. Safety (crashes, locks, corruption) lives in
test_index_safety.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from index.errors import (
    IndexExistsError,
    IndexMismatchError,
    IndexNotFoundError,
    IndexStoreError,
    IndexTrainingError,
    ReadOnlyIndexError,
)
from index.records import Fingerprint, NewReference
from index.store import AddReport, ReferenceIndex

DIM = 32
FP = Fingerprint(preset="tiny", arch="test:mlp", weights="random:0", preprocess='{"size":32}', dim=DIM)
FACTORIES = ["Flat", "HNSW32", "IVF8,Flat"]
REPO = Path(__file__).resolve().parents[1]


def unit(n: int, seed: int, dim: int = DIM) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make_refs(n: int, start: int = 0, brands: int = 3) -> list[NewReference]:
    return [
        NewReference(
            brand=f"brand{i % brands}",
            sha256=f"{i:064x}",
            source=f"refs/{i}.png",
            kind="logo" if i % 2 else "product",
            product_id=f"p{i % 5}",
            attributes={"i": i},
        )
        for i in range(start, start + n)
    ]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "refs.idx"


@pytest.mark.parametrize("factory", FACTORIES)
def test_add_search_remove_round_trip(path: Path, factory: str) -> None:
    vecs = unit(200, seed=1)
    with ReferenceIndex.create(path, fingerprint=FP, factory=factory) as idx:
        report = idx.add(make_refs(200), vecs)
        assert isinstance(report, AddReport) and len(report.added) == 200 and not report.skipped
        assert len(idx) == 200 and idx.generation == 1
        params = {"nprobe": 8} if factory.startswith("IVF") else None
        scores, ids = idx.search_vectors(vecs, k=5, params=params)
        assert ids.shape == (200, 5)
        # Each stored vector finds its own reference first, with inner product 1.
        np.testing.assert_array_equal(ids[:, 0], report.added)
        np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
        assert (np.diff(scores, axis=1) <= 1e-6).all()

        by_id = report.added[:10]
        assert idx.remove(ref_ids=by_id + [999_999]) == 10
        brand_n = sum(1 for r in idx.references() if r.brand == "brand1")
        assert idx.remove(brand="brand1") == brand_n
        assert idx.remove(brand="brand0", product_id="p0") > 0
        gone = set(by_id) | {r for r in report.added if (r - report.added[0]) % 3 == 1}
        live = {r.id for r in idx.references()}
        assert not live & gone and len(idx) == len(live)
        _, ids = idx.search_vectors(vecs, k=10, params=params)
        returned = set(ids[ids >= 0].tolist())
        assert returned <= live and returned
        for rid in list(live)[:20]:  # survivors still find themselves
            assert ids[report.added.index(rid), 0] == rid
        generation = idx.generation
    with ReferenceIndex.open(path) as reader:
        assert reader.generation == generation and len(reader) == len(live)
        _, ids2 = reader.search_vectors(vecs, k=10, params=params)
        np.testing.assert_array_equal(ids2[:, 0], ids[:, 0])


def test_several_vectors_per_reference_give_distinct_refs(path: Path) -> None:
    views = unit(60, seed=2).reshape(20, 3, DIM)  # 20 refs x 3 views
    with ReferenceIndex.create(path, fingerprint=FP) as idx:
        added = idx.add(make_refs(20), list(views)).added
        assert idx.info().vectors == 60
        q = views[:, 1]  # the middle view of each ref
        scores, ids = idx.search_vectors(q, k=8)
        for row in ids:
            assert len(set(row.tolist())) == 8  # no reference twice
        np.testing.assert_array_equal(ids[:, 0], added)
        # The score of a ref is its best view: brute force over the 3 views as stored.
        stored = idx.get_vectors(added)
        best = np.array([(stored[rid] @ q[0]).max() for rid in added])
        expected = np.sort(best)[::-1][:8]
        np.testing.assert_allclose(scores[0], expected, atol=1e-5)
        matches = idx.search(q[:2], k=3)
        assert [m.ref_id for m in matches[0]] == ids[0, :3].tolist()
        assert matches[0][0].brand == "brand0" and matches[0][0].source == "refs/0.png"


def test_duplicates_are_skipped_and_reported(path: Path) -> None:
    vecs = unit(6, seed=3)
    with ReferenceIndex.create(path, fingerprint=FP) as idx:
        first = idx.add(make_refs(3), vecs[:3])
        refs = make_refs(2, start=2) + [make_refs(1, start=3)[0]]  # sha 2 stored, sha 3 twice
        report = idx.add(refs, vecs[3:6])
        assert report.added == [first.added[-1] + 1]
        assert report.skipped == [(0, first.added[2], f"{2:064x}"), (2, report.added[0], f"{3:064x}")]
        assert len(idx) == 4
        assert idx.existing_sha256([f"{3:064x}", "nope"]) == {f"{3:064x}": report.added[0]}
        gen = idx.generation
        all_dup = idx.add(make_refs(2), vecs[:2])
        assert all_dup.added == [] and len(all_dup.skipped) == 2 and idx.generation == gen


def test_removed_ids_are_never_reused(path: Path) -> None:
    with ReferenceIndex.create(path, fingerprint=FP) as idx:
        ids = idx.add(make_refs(3), unit(3, seed=4)).added
        idx.remove(ref_ids=[ids[-1]])
        new = idx.add(make_refs(1, start=10), unit(1, seed=5)).added
        assert new[0] > ids[-1]


@pytest.mark.parametrize(
    ("vectors", "message"),
    [
        (lambda v: v[:, :16], "shape"),
        (lambda v: v * 2.0, "norm"),
        (lambda v: np.where(np.arange(DIM) == 0, np.nan, v).astype(np.float32), "norm"),
        (lambda v: v[:2], "vector entries"),
    ],
)
def test_invalid_vectors_raise_and_commit_nothing(path: Path, vectors, message: str) -> None:
    with ReferenceIndex.create(path, fingerprint=FP) as idx:
        bad = vectors(unit(3, seed=6))
        with pytest.raises(ValueError, match=message):
            idx.add(make_refs(3), list(bad))
        assert len(idx) == 0 and idx.generation == 0


def test_training_needs_enough_vectors(path: Path) -> None:
    with ReferenceIndex.create(path, fingerprint=FP, factory="IVF64,Flat") as idx:
        with pytest.raises(IndexTrainingError, match="at least"):
            idx.add(make_refs(10), unit(10, seed=7))
        assert len(idx) == 0 and idx.generation == 0
        assert len(idx.add(make_refs(300), unit(300, seed=8)).added) == 300


def test_search_params(path: Path) -> None:
    vecs = unit(400, seed=9)
    queries = unit(20, seed=10)
    with ReferenceIndex.create(path, fingerprint=FP) as flat:
        flat.add(make_refs(400), vecs)
        exact = flat.search_vectors(queries, k=5)[1]
    with ReferenceIndex.create(path.with_name("ivf"), fingerprint=FP, factory="IVF16,Flat") as ivf:
        ivf.add(make_refs(400), vecs)
        # Probing every list makes IVF exhaustive: identical to Flat.
        np.testing.assert_array_equal(ivf.search_vectors(queries, k=5, params={"nprobe": 16})[1], exact)
        with pytest.raises(ValueError, match="nprobe"):
            ivf.search_vectors(queries, k=5, params={"efSearch": 10})
    with ReferenceIndex.create(path.with_name("hnsw"), fingerprint=FP, factory="HNSW16",
                               build_params={"efConstruction": 80}) as hnsw:  # fmt: skip
        hnsw.add(make_refs(400), vecs)
        np.testing.assert_array_equal(hnsw.search_vectors(queries, k=5, params={"efSearch": 400})[1], exact)


def test_set_search_params_commits_new_defaults_that_readers_take_up(path: Path) -> None:
    vecs, queries = unit(400, seed=9), unit(20, seed=10)
    with ReferenceIndex.create(path, fingerprint=FP) as flat:
        flat.add(make_refs(400), vecs)
        exact = flat.search_vectors(queries, k=5)[1]
    with ReferenceIndex.create(path.with_name("ivf"), fingerprint=FP, factory="IVF16,Flat",
                               search_params={"nprobe": 1}) as ivf, ReferenceIndex.open(ivf.path) as reader:  # fmt: skip
        ivf.add(make_refs(400), vecs)
        reader.reload()
        assert reader.search_defaults == {"nprobe": 1}
        assert not np.array_equal(reader.search_vectors(queries, k=5)[1], exact)  # one list of 16
        generation = ivf.generation
        for bad in ({"efSearch": 8}, {"nprobe": 0}, {"nprobe": "16"}):
            with pytest.raises(ValueError):
                ivf.set_search_params(bad)
        assert ivf.generation == generation and ivf.search_defaults == {"nprobe": 1}  # nothing committed
        assert ivf.set_search_params({"nprobe": 16}) == {"nprobe": 16}
        assert ivf.generation == generation + 1
        reader.reload()
        assert reader.search_defaults == {"nprobe": 16}
        np.testing.assert_array_equal(reader.search_vectors(queries, k=5)[1], exact)  # every list: exact
    with ReferenceIndex.open(path.with_name("ivf")) as reopened:
        assert reopened.search_defaults == {"nprobe": 16}
        with pytest.raises(ReadOnlyIndexError):
            reopened.set_search_params({"nprobe": 2})


def test_bad_factory_and_create_errors(path: Path) -> None:
    with pytest.raises(ValueError, match="factory"):
        ReferenceIndex.create(path, fingerprint=FP, factory="NotAnIndex")
    assert not path.exists()
    ReferenceIndex.create(path, fingerprint=FP).close()
    with pytest.raises(IndexExistsError):
        ReferenceIndex.create(path, fingerprint=FP)
    with pytest.raises(IndexNotFoundError):
        ReferenceIndex.open(path.with_name("missing"))
    (path.with_name("junk")).mkdir()
    (path.with_name("junk") / "x.txt").write_text("x")
    with pytest.raises(IndexExistsError):
        ReferenceIndex.create(path.with_name("junk"), fingerprint=FP)


def test_read_only_index_refuses_writes(path: Path) -> None:
    ReferenceIndex.create(path, fingerprint=FP).close()
    with ReferenceIndex.open(path) as reader:
        assert not reader.writable
        with pytest.raises(ReadOnlyIndexError):
            reader.add(make_refs(1), unit(1, seed=11))
        with pytest.raises(ReadOnlyIndexError):
            reader.remove(brand="brand0")
    with pytest.raises(IndexStoreError, match="closed"):
        len(reader)


def test_fingerprint_mismatch_is_refused(path: Path) -> None:
    ReferenceIndex.create(path, fingerprint=FP).close()
    other = Fingerprint(preset="tiny", arch=FP.arch, weights="random:1", preprocess=FP.preprocess, dim=DIM)
    with pytest.raises(IndexMismatchError, match=r"weights.*rebuild"):
        ReferenceIndex.open(path, fingerprint=other)
    renamed = Fingerprint(preset="renamed", arch=FP.arch, weights=FP.weights, preprocess=FP.preprocess, dim=DIM)
    ReferenceIndex.open(path, fingerprint=renamed).close()  # the preset name is not compared
    wider = Fingerprint(preset="tiny", arch=FP.arch, weights=FP.weights, preprocess=FP.preprocess, dim=64)
    with pytest.raises(IndexMismatchError, match="dim"):
        ReferenceIndex.open_or_create(path, fingerprint=wider)
    with pytest.raises(IndexMismatchError, match="rebuild"):
        ReferenceIndex.open_or_create(path, fingerprint=FP, factory="HNSW32")
    with ReferenceIndex.open_or_create(path, fingerprint=FP) as idx:
        assert idx.writable and idx.factory == "Flat"


def test_persistence_across_processes(path: Path) -> None:
    code = f"""
import numpy as np
from index.records import Fingerprint, NewReference
from index.store import ReferenceIndex
fp = Fingerprint(**{FP.to_dict()!r})
x = np.random.default_rng(12).standard_normal((50, {DIM})).astype(np.float32)
x /= np.linalg.norm(x, axis=1, keepdims=True)
with ReferenceIndex.create({str(path)!r}, fingerprint=fp, factory="HNSW32") as idx:
    print(idx.add([NewReference(brand="b", sha256=str(i), source=str(i)) for i in range(50)], x, aux=[b"a%d" % i for i in range(50)]).added)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    added = json.loads(out.stdout.strip().splitlines()[-1])
    vecs = unit(50, seed=12)
    with ReferenceIndex.open(path, fingerprint=FP) as idx:
        assert len(idx) == 50 and idx.factory == "HNSW32"
        _, ids = idx.search_vectors(vecs, k=1)
        assert ids[:, 0].tolist() == added
        assert idx.get_aux([added[3]]) == {added[3]: b"a3"}


def test_info_references_and_aux(path: Path) -> None:
    with ReferenceIndex.create(path, fingerprint=FP) as idx:
        added = idx.add(make_refs(12), unit(12, seed=13), aux=[b"k%d" % i if i % 2 else None for i in range(12)]).added
        info = idx.info()
        assert info.count == 12 and info.vectors == 12 and info.dim == DIM and info.factory == "Flat"
        assert info.per_brand == {"brand0": {"logo": 2, "product": 2}, "brand1": {"logo": 2, "product": 2},
                                  "brand2": {"logo": 2, "product": 2}}  # fmt: skip
        assert info.size_bytes > 0 and info.generation == 1
        assert json.loads(json.dumps(info.to_dict()))["fingerprint"]["weights"] == "random:0"
        refs = list(idx.references(brand="brand2"))
        assert [r.id for r in refs] == added[2::3]
        assert refs[0].attributes == {"i": 2} and refs[0].sha256 == f"{2:064x}"
        assert idx.get_aux(added[:4]) == {added[1]: b"k1", added[3]: b"k3"}
        assert set(idx.get_references([added[0], 12345])) == {added[0]}
        manifest = json.loads((path / "manifest.json").read_text())
        assert manifest["count"] == 12 and manifest["generation"] == 1 and manifest["dim"] == DIM


def test_export_import_round_trip(path: Path, tmp_path: Path) -> None:
    views = unit(30, seed=14).reshape(10, 3, DIM)
    with ReferenceIndex.create(path, fingerprint=FP) as idx:
        idx.add(make_refs(10), list(views), aux=[bytes([i]) * 5 for i in range(10)])
        idx.remove(ref_ids=[2])
        assert idx.export_records(tmp_path / "export") == 9
        before = {r.sha256: r for r in idx.references()}
        before_aux = idx.get_aux([r.id for r in before.values()])
        with pytest.raises(IndexExistsError):
            idx.export_records(tmp_path / "export")
        assert idx.import_records(tmp_path / "export").added == []  # all duplicates
    with ReferenceIndex.create_from_export(tmp_path / "export", tmp_path / "copy", factory="HNSW32") as copy:
        assert copy.factory == "HNSW32" and len(copy) == 9 and copy.info().vectors == 27
        after = {r.sha256: r for r in copy.references()}
        assert after.keys() == before.keys()
        for sha, ref in after.items():
            old = before[sha]
            assert (ref.brand, ref.kind, ref.product_id, ref.source, ref.added_at, ref.attributes) == (
                old.brand, old.kind, old.product_id, old.source, old.added_at, old.attributes)  # fmt: skip
            assert copy.get_aux([ref.id])[ref.id] == before_aux[old.id]
        _, ids = copy.search_vectors(views[:, 0], k=1)
        got = [copy.get_references([i])[i].sha256 if i >= 0 else None for i in ids[:, 0]]
        assert got == [f"{i:064x}" if i != 1 else got[1] for i in range(10)]  # ref 2 (index 1) removed
    other = Fingerprint(preset="x", arch="other", weights="w", preprocess="p", dim=DIM)
    with ReferenceIndex.create(tmp_path / "other", fingerprint=other) as idx2:
        with pytest.raises(IndexMismatchError):
            idx2.import_records(tmp_path / "export")


def test_hnsw_removal_uses_tombstones_then_compacts(path: Path) -> None:
    vecs = unit(100, seed=15)
    with ReferenceIndex.create(path, fingerprint=FP, factory="HNSW32") as idx:
        added = idx.add(make_refs(100), vecs).added
        idx.remove(ref_ids=added[:10])  # 10% dead: kept in faiss, hidden by a selector
        assert idx._snapshot.index.ntotal == 100
        _, ids = idx.search_vectors(vecs[:10], k=5, params={"efSearch": 100})
        assert not set(ids.ravel().tolist()) & set(added[:10]) and (ids >= 0).all()
        with ReferenceIndex.open(path) as reader:  # readers load the tombstones too
            _, rids = reader.search_vectors(vecs[:10], k=5, params={"efSearch": 100})
            np.testing.assert_array_equal(rids, ids)
        idx.remove(ref_ids=added[10:30])  # 30% dead: rebuilt without them
        assert idx._snapshot.index.ntotal == 70
        _, ids = idx.search_vectors(vecs[30:], k=1)
        assert ids[:, 0].tolist() == added[30:]


def test_rebuild_to_another_factory(path: Path) -> None:
    vecs = unit(300, seed=16)
    with ReferenceIndex.create(path, fingerprint=FP) as idx:
        added = idx.add(make_refs(300), vecs).added
        idx.rebuild(factory="IVF8,Flat")
        assert idx.factory == "IVF8,Flat"
        _, ids = idx.search_vectors(vecs, k=1, params={"nprobe": 8})
        assert ids[:, 0].tolist() == added
    with ReferenceIndex.open(path) as reader:
        assert reader.factory == "IVF8,Flat" and reader.info().factory == "IVF8,Flat"


def test_reader_sees_last_commit_after_reload(path: Path) -> None:
    vecs = unit(20, seed=17)
    with ReferenceIndex.create(path, fingerprint=FP) as writer:
        writer.add(make_refs(10), vecs[:10])
        with ReferenceIndex.open(path) as reader:
            assert reader.search_vectors(vecs[15], k=1)[1][0, 0] != -1
            writer.add(make_refs(10, start=10), vecs[10:])
            new_id = writer.search_vectors(vecs[15], k=1)[1][0, 0]
            assert reader.search_vectors(vecs[15], k=1)[1][0, 0] != new_id  # old generation
            assert reader.reload() is True and reader.reload() is False
            assert reader.search_vectors(vecs[15], k=1)[1][0, 0] == new_id
            assert reader.generation == writer.generation


def test_an_ivf_index_scans_one_querys_lists_on_all_threads(path: Path) -> None:
    import faiss

    from index.faiss_ops import inner_index

    with ReferenceIndex.create(path, fingerprint=FP, factory="IVF8,Flat") as writer:
        writer.add(make_refs(200), unit(200, seed=3))
        assert faiss.extract_index_ivf(inner_index(writer._snapshot.index)).parallel_mode == 1
    with ReferenceIndex.open(path) as reader:  # read back: the mode is not in the file
        assert faiss.extract_index_ivf(inner_index(reader._snapshot.index)).parallel_mode == 1
