"""The Milvus backend (Milvus Lite file) against the FAISS index: same searches, same records,
same verdicts; deletes, the fingerprint check, the side store and the index argument forms.

The ``check_*`` functions take any Milvus index argument: ``tests/test_milvus_server.py`` runs
them against a real Milvus server too."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest

from index.errors import (
    BackendUnavailableError,
    IndexExistsError,
    IndexMismatchError,
    IndexNotFoundError,
)
from index.milvus_base import server_version_problem
from index.milvus_spec import is_milvus_spec, parse_milvus_spec
from index.open import create_index, index_exists, index_spec, open_index
from index.records import Fingerprint, NewReference
from index.side_store import SideStore, blob_key
from index.store import ReferenceIndex

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

DIM = 16
FP = Fingerprint(preset="p", arch="test:arch", weights="random:0", preprocess="{}", dim=DIM)
OTHER_FP = Fingerprint(preset="p", arch="test:arch", weights="random:1", preprocess="{}", dim=DIM)


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` random unit vectors of dimension DIM."""
    v = rng.normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def reference_set(n: int, seed: int = 0) -> tuple[list[NewReference], list[np.ndarray], list[bytes | None]]:
    """``n`` references of 4 brands with 1 to 3 views each; every third has side data."""
    rng = np.random.default_rng(seed)
    refs = [
        NewReference(brand=f"brand-{i % 4}", sha256=f"{seed:08x}{i:056x}", source=f"refs/{i}.png",
                     kind="logo" if i % 5 == 0 else "product", product_id=None if i % 2 else f"P{i}",
                     attributes={"i": i, "note": 'quote " and \\ backslash'})
        for i in range(n)
    ]  # fmt: skip
    vectors = [unit(rng, 1 + i % 3) for i in range(n)]
    aux = [rng.bytes(1000 + i) if i % 3 == 0 else None for i in range(n)]
    return refs, vectors, aux


@pytest.fixture()
def lite_spec(tmp_path: Path) -> str:
    return f"milvus-lite:{tmp_path / 'refs.db'}"


def faiss_float32(path: Path) -> ReferenceIndex:
    """A FAISS Flat index keeping float32 raw vectors, as Milvus does (new FAISS indexes keep
    float16), so that the two compare value for value."""
    return ReferenceIndex.create(path, fingerprint=FP, raw_vectors="float32")


def test_search_equals_faiss_flat_top_k(tmp_path, lite_spec):
    check_search_equals_faiss_flat_top_k(tmp_path, lite_spec)


def check_search_equals_faiss_flat_top_k(tmp_path: Path, spec: str) -> None:
    """Top-k ids and scores equal FAISS Flat's, also when one reference's views crowd a page."""
    refs, vectors, aux = reference_set(120)
    queries = unit(np.random.default_rng(7), 25)
    with faiss_float32(tmp_path / "faiss") as flat, create_index(spec, fingerprint=FP) as store:
        assert flat.add(refs, vectors, aux).added == store.add(refs, vectors, aux).added
        expected_scores, expected_ids = flat.search_vectors(queries, k=10)
        scores, ids = store.search_vectors(queries, k=10)
        np.testing.assert_array_equal(ids, expected_ids)  # distinct references, best view each
        np.testing.assert_allclose(scores, expected_scores, atol=1e-5)
        for got, want in zip(store.search(queries[:3], k=4), flat.search(queries[:3], k=4)):
            assert [m.to_dict() | {"score": 0} for m in got] == [m.to_dict() | {"score": 0} for m in want]
            assert [m.score for m in got] == pytest.approx([m.score for m in want], abs=1e-5)
        # One reference with 40 views around a query: its views fill the first page of rows,
        # the search fetches more until it has k distinct references.
        crowd = unit(np.random.default_rng(9), 40) * 0.05 + queries[0]
        crowd = crowd / np.linalg.norm(crowd, axis=1, keepdims=True)
        crowd_ref = [NewReference(brand="crowd", sha256="c" * 64, source="crowd.png")]
        assert flat.add(crowd_ref, [crowd]).added == store.add(crowd_ref, [crowd]).added
        expected_scores, expected_ids = flat.search_vectors(queries[:2], k=5)
        scores, ids = store.search_vectors(queries[:2], k=5)
        np.testing.assert_array_equal(ids, expected_ids)
        np.testing.assert_allclose(scores, expected_scores, atol=1e-5)
        # More references asked than stored: padded like FAISS.
        scores, ids = store.search_vectors(queries[:2], k=130)
        assert (ids[:, 121:] == -1).all() and np.isneginf(scores[:, 121:]).all() and (ids[:, :121] > 0).all()


def test_removed_references_never_come_back(lite_spec):
    check_removed_references_never_come_back(lite_spec)


def check_removed_references_never_come_back(spec: str) -> None:
    """Removals by id and by brand + product_id stay removed, after reopening too."""
    refs, vectors, aux = reference_set(30)
    with create_index(spec, fingerprint=FP) as idx:
        ids = idx.add(refs, vectors, aux).added
        gone = [ids[0], ids[3], ids[6]]  # all three have side data
        blobs = idx.get_aux(gone)
        assert len(blobs) == 3
        assert idx.remove(ref_ids=gone + [10_000]) == 3
        assert idx.remove(brand="brand-1", product_id="P10") == 0  # the filters combine with AND
        assert idx.remove(brand="brand-2", product_id="P10") == 1
        gone.append(ids[10])
        queries = np.concatenate([vectors[ids.index(r)] for r in gone])
        _, found = idx.search_vectors(queries, k=len(refs))
        assert not set(found.ravel().tolist()) & set(gone)
        assert not idx.get_references(gone) and not idx.get_aux(gone) and not idx.get_vectors(gone)
        assert len(idx) == 26 and gone[0] not in {r.id for r in idx.references()}
        assert not any(SideStore(idx.path).get(blob_key(b)) for b in blobs.values())  # blobs deleted too
        generation = idx.generation
    with open_index(spec, writable=True, fingerprint=FP) as idx:  # and after reopening
        assert idx.generation == generation
        _, found = idx.search_vectors(queries, k=len(refs))
        assert not set(found.ravel().tolist()) & set(gone)
        new = idx.add([NewReference(brand="b", sha256="f" * 64, source="new.png")], unit(np.random.default_rng(1), 1))
        assert new.added[0] > max(ids)  # ids are never reused
        # Re-adding removed content is a new reference, not a resurrection of the old id.
        again = idx.add([refs[0]], [vectors[0]]).added
        assert again and again[0] not in gone


def test_fingerprint_check(lite_spec):
    check_fingerprint_check(lite_spec)


def check_fingerprint_check(spec: str) -> None:
    """An index opened with another model's fingerprint is refused, read-only or writable."""
    create_index(spec, fingerprint=FP).close()
    with pytest.raises(IndexMismatchError, match="another model"):
        open_index(spec, fingerprint=OTHER_FP)
    with pytest.raises(IndexMismatchError):
        open_index(spec, writable=True, fingerprint=OTHER_FP)
    with pytest.raises(IndexExistsError):
        create_index(spec, fingerprint=FP)
    with open_index(spec, fingerprint=FP) as idx:
        assert idx.fingerprint == FP and idx.dim == DIM
        with pytest.raises(ValueError, match=r"shape \(q, 16\)"):
            idx.search_vectors(np.ones((1, 8), np.float32))


def test_records_and_side_data_round_trip(tmp_path, lite_spec, caplog):
    check_records_and_side_data_round_trip(tmp_path, lite_spec, caplog)


def check_records_and_side_data_round_trip(
    tmp_path: Path, spec: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Records, vectors and side data read back as FAISS's; replace_aux upserts by reference id."""
    refs, vectors, aux = reference_set(12)
    big = np.random.default_rng(3).bytes(150_000)  # side data beyond Milvus' 64 KiB VARCHAR
    aux[1] = aux[2] = big  # two references with the same content share one blob
    with faiss_float32(tmp_path / "faiss") as flat, create_index(spec, fingerprint=FP) as store:
        report = store.add(refs + [refs[4]], vectors + [vectors[4]], aux + [None])
        assert report.skipped == [(12, report.added[4], refs[4].sha256)]
        flat.add(refs, vectors, aux)
        ids = report.added
        expected = flat.get_references(ids)
        got = store.get_references(ids)
        assert {i: r.to_dict() | {"added_at": ""} for i, r in got.items()} == {
            i: r.to_dict() | {"added_at": ""} for i, r in expected.items()
        }
        assert got[ids[0]].product_id == "P0" and got[ids[1]].product_id is None
        assert store.get_aux(ids) == flat.get_aux(ids) and store.get_aux([ids[1]])[ids[1]] == big
        got_vectors = store.get_vectors(ids)
        for rid, mat in flat.get_vectors(ids).items():
            np.testing.assert_array_equal(got_vectors[rid], mat)
        assert [r.id for r in store.references()] == [r.id for r in flat.references()]
        assert [r.id for r in store.references("brand-2")] == [r.id for r in flat.references("brand-2")]
        assert store.existing_sha256([refs[3].sha256, "e" * 64]) == {refs[3].sha256: ids[3]}
        info, flat_info = store.info(), flat.info()
        assert (info.count, info.vectors, info.per_brand) == (flat_info.count, flat_info.vectors, flat_info.per_brand)
        # Replacing one sharer's side data keeps the blob the other still names.
        assert store.replace_aux({ids[1]: b"new", 99_999: b"unknown id ignored"}) == 1
        assert store.get_aux([ids[1], ids[2]]) == {ids[1]: b"new", ids[2]: big}
        assert store.replace_aux({ids[2]: None}) == 1
        assert not store.get_aux([ids[2]]) and not SideStore(store.path).get(blob_key(big))
        # A damaged blob is left out (logged), the others are still read.
        side = SideStore(store.path)
        damaged = side._path(blob_key(aux[3]))
        damaged.write_bytes(b"garbage")
        with caplog.at_level(logging.WARNING, logger="index.side_store"):
            assert set(store.get_aux([ids[3], ids[6]])) == {ids[6]}
        assert "damaged" in caplog.text


def test_readers_see_the_writers_generations(lite_spec):
    check_readers_see_the_writers_generations(lite_spec)


def check_readers_see_the_writers_generations(spec: str) -> None:
    """A reader opened beside the writer sees its writes and generations; it cannot write."""
    refs, vectors, _ = reference_set(6)
    with create_index(spec, fingerprint=FP) as writer, open_index(spec) as reader:
        assert reader.generation == 0 and not reader.reload()
        writer.add(refs, vectors)
        assert reader.committed_generation() == 1 and reader.reload() and reader.generation == 1
        assert len(reader) == 6 and reader.search(vectors[0][:1], k=1)[0][0].source == refs[0].source
        with pytest.raises(Exception, match="read-only"):
            reader.remove(brand="brand-0")
        assert index_spec(reader) == spec


def test_index_arguments(tmp_path, monkeypatch):
    assert not is_milvus_spec(str(tmp_path)) and is_milvus_spec("milvus-lite:x.db")
    lite = parse_milvus_spec("milvus-lite:dir/refs.db")
    assert lite.lite and lite.uri.endswith("dir/refs.db") and lite.side_dir.name == "refs.db.side"
    server = parse_milvus_spec("milvus://db.internal:19530/brand_refs?side=/mnt/refs-side")
    assert (server.uri, server.collection, str(server.side_dir)) == (
        "http://db.internal:19530", "brand_refs", "/mnt/refs-side"
    )
    monkeypatch.setenv("MILVUS_TOKEN", "secret")
    assert server.token == "secret"
    for bad, message in [
        ("milvus://db:19530/refs", "side=DIR"),
        ("milvus://db/refs?side=/s", "HOST:PORT"),
        ("milvus://db:19530/bad-name?side=/s", "COLLECTION"),
        ("milvus://user:pw@db:19530/refs?side=/s", "MILVUS_TOKEN"),
        ("milvus-lite:", "database file"),
        ("milvus-lite:refs.milvus", "ends in .db"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_milvus_spec(bad)
    missing = tmp_path / "absent.db"
    assert not index_exists(f"milvus-lite:{missing}")
    with pytest.raises(IndexNotFoundError):
        open_index(f"milvus-lite:{missing}")
    assert not missing.exists()  # opening never creates a database
    with pytest.raises(ValueError, match="'Flat' and 'HNSW<M>'"):
        create_index(f"milvus-lite:{tmp_path / 'ivf.db'}", fingerprint=FP, factory="IVF64,PQ8")


def test_servers_older_than_the_backend_needs_are_named():
    problem = server_version_problem("v2.3.5-lite")  # the embedded 2.3.5 standalone's answer
    assert problem is not None and "older than 2.5" in problem and "nullable" in problem
    assert server_version_problem("v2.4.9") is not None
    # Releases from 2.5 on pass; strings that are no release number are not judged.
    for fine in ("v2.5.0", "2.6.6", "v3.0.1-rc1", "milvus_lite-3.2.2", "Cloud (Milvus 2.5)"):
        assert server_version_problem(fine) is None, fine


def test_missing_pymilvus_is_a_clear_error(lite_spec, monkeypatch):
    monkeypatch.setitem(sys.modules, "pymilvus", None)  # import pymilvus now raises ImportError
    with pytest.raises(BackendUnavailableError, match=r"counterfeit-detector\[milvus\]"):
        create_index(lite_spec, fingerprint=FP)


def test_detector_gives_the_same_verdicts_on_milvus_lite(tiny_index_dir, sample_set, tmp_path):
    from detector.indexing import run_indexing
    from detector.scoring import Detector

    spec = f"milvus-lite:{tmp_path / 'refs.db'}"
    report = run_indexing(sample_set.references_dir, spec, preset="tiny-clip-test", embedder_options={"device": "cpu"})
    assert report.added == sample_set.n_references and not report.failed
    assert report.report_path is not None and report.report_path.parent.parent == tmp_path / "refs.db.side"
    folder = sample_set.labels_path.parent / "listings"
    listings = [folder / f"{name}_00000.jpg" for name in ("copy", "logo_small", "neg_nologo", "neg_unindexed")]
    with Detector.open(tiny_index_dir, device="cpu") as flat, Detector.open(spec, device="cpu") as lite:
        expected, got = flat.score_many(listings), lite.score_many(listings)
        # The indexing writer withdraws the copied brand; the replica reloads and stops matching it.
        with open_index(spec, writable=True) as writer:
            assert writer.remove(brand=expected[0].brand) > 0
        assert lite.reload_index() and not lite.reload_index()
        assert lite.score(listings[0]).brand != expected[0].brand
    assert any(v.flagged for v in expected) and any(not v.flagged for v in expected)
    for e, g in zip(expected, got):
        assert (g.flagged, g.brand, g.box) == (e.flagged, e.brand, e.box)
        assert g.score == pytest.approx(e.score, abs=1e-4)
        assert [(m.brand, m.source) for m in g.matches] == [(m.brand, m.source) for m in e.matches]


@pytest.fixture()
def milvus_server(tmp_path, free_tcp_port):
    """A Milvus gRPC server on localhost (Milvus Lite's own server mode) for milvus:// specs."""
    import socket
    import subprocess
    import time

    server = subprocess.Popen(
        [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(tmp_path / "server-data"),
         "--host", "127.0.0.1", "--port", str(free_tcp_port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", free_tcp_port), timeout=0.2).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("the Milvus Lite server did not start")
                time.sleep(0.1)
        yield f"127.0.0.1:{free_tcp_port}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_a_server_collection_is_shared_by_a_writer_and_readers(tmp_path, milvus_server):
    check_a_server_collection_is_shared(tmp_path, milvus_server, "brand_refs", "other_refs")


def check_a_server_collection_is_shared(
    tmp_path: Path, address: str, collection: str, absent: str
) -> None:
    """A writer and a replica of the server collection ``collection`` share rows and side data;
    the collection ``absent`` (not created) is no index."""
    spec = f"milvus://{address}/{collection}?side={tmp_path / 'shared-side'}"
    refs, vectors, aux = reference_set(24)
    queries = unit(np.random.default_rng(5), 6)
    assert not index_exists(spec)
    with create_index(tmp_path / "faiss", fingerprint=FP) as flat, create_index(spec, fingerprint=FP) as writer, \
            open_index(spec, fingerprint=FP) as replica:  # fmt: skip
        ids = writer.add(refs, vectors, aux).added
        flat.add(refs, vectors, aux)
        assert replica.reload() and len(replica) == 24
        np.testing.assert_array_equal(replica.search_vectors(queries, k=5)[1], flat.search_vectors(queries, k=5)[1])
        assert replica.get_aux(ids) == flat.get_aux(ids)  # side data through the shared folder
        assert (tmp_path / "shared-side" / "aux").is_dir()
        writer.remove(ref_ids=ids[:4])
        assert replica.committed_generation() == writer.generation == 2
        assert not set(replica.search_vectors(np.concatenate(vectors[:4]), k=24)[1].ravel()) & set(ids[:4])
    with pytest.raises(IndexMismatchError):
        open_index(spec, fingerprint=OTHER_FP)
    with pytest.raises(IndexNotFoundError):
        open_index(f"milvus://{address}/{absent}?side={tmp_path / 'side'}")


def test_another_process_opens_and_searches_the_lite_file(lite_spec):
    import json
    import subprocess

    refs, vectors, aux = reference_set(10)
    with create_index(lite_spec, fingerprint=FP) as idx:
        ids = idx.add(refs, vectors, aux).added
        expected = idx.search_vectors(vectors[4][:1], k=3)[1][0].tolist()
    script = (
        "import json, sys, numpy as np\n"
        "from index.open import open_index\n"
        "with open_index(sys.argv[1]) as idx:\n"
        "    q = np.array(json.loads(sys.argv[2]), dtype=np.float32)\n"
        "    print(json.dumps([len(idx), idx.search_vectors(q, k=3)[1][0].tolist(), sorted(idx.get_aux(range(20)))]))\n"
    )
    out = subprocess.run([sys.executable, "-c", script, lite_spec, json.dumps(vectors[4][:1].tolist())],
                         check=False, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    count, found, with_aux = json.loads(out.stdout.strip().splitlines()[-1])
    assert (count, found, with_aux) == (10, expected, [ids[i] for i in range(10) if aux[i] is not None])


def test_an_upsert_request_never_splits_a_reference(lite_spec, monkeypatch):
    import index.milvus_writes

    monkeypatch.setattr(index.milvus_writes, "UPSERT_ROWS", 3)
    refs, _, _ = reference_set(5)
    rng = np.random.default_rng(2)
    with create_index(lite_spec, fingerprint=FP) as idx:
        requests: list[list[int]] = []
        upsert = idx._client.upsert
        monkeypatch.setattr(idx._client, "upsert",
                            lambda name, rows: (requests.append([r["ref_id"] for r in rows]), upsert(name, rows))[1])
        ids = idx.add(refs, [unit(rng, 2) for _ in refs]).added
        idx.replace_aux({rid: b"x" for rid in ids[:3]})
    assert len(requests) == 5  # 10 rows by 2 + 2 + 1 references, then 6 rows by 2 + 1
    for rows in requests:
        assert all(rows.count(rid) == 2 for rid in rows)  # both views of a reference in one request
