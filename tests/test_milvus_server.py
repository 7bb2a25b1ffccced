"""The Milvus backend against a real Milvus server: opt-in, skipped unless a server is named.

Run with ``COUNTERFEIT_MILVUS_URI=milvus://HOST:PORT`` (``MILVUS_TOKEN`` if the server needs
one); docs/deployment.md shows how to start a local one. Each test works in a collection of its
own (``cdtest_<test>_<random>``) and drops it afterwards. The properties are the ones the Milvus
Lite tests check (``check_*`` from tests/test_milvus_store.py) plus the server's own: upserts by
reference id, reopening a released collection, refusing a server older than the backend needs.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
from test_milvus_store import (
    FP,
    check_a_server_collection_is_shared,
    check_fingerprint_check,
    check_readers_see_the_writers_generations,
    check_records_and_side_data_round_trip,
    check_removed_references_never_come_back,
    check_search_equals_faiss_flat_top_k,
    reference_set,
    unit,
)

from index.errors import IndexStoreError
from index.milvus_base import server_version_problem
from index.milvus_spec import TOKEN_ENV
from index.open import create_index, open_index

SERVER_ENV = "COUNTERFEIT_MILVUS_URI"
SERVER_URI = os.environ.get(SERVER_ENV, "")

pytestmark = pytest.mark.skipif(
    not SERVER_URI, reason=f"opt-in: set {SERVER_ENV}=milvus://HOST:PORT to test a Milvus server"
)


@pytest.fixture(scope="module")
def server_address() -> str:
    """``HOST:PORT`` of the server named by $COUNTERFEIT_MILVUS_URI."""
    parts = urlsplit(SERVER_URI)
    if parts.scheme != "milvus" or not parts.hostname or parts.port is None:
        pytest.fail(f"{SERVER_ENV}={SERVER_URI!r}: expected milvus://HOST:PORT")
    return f"{parts.hostname}:{parts.port}"


@pytest.fixture(scope="module")
def server_client(server_address: str) -> Iterator[Any]:
    """A plain pymilvus client of the server, for what the backend does not do (drop, release)."""
    from pymilvus import MilvusClient

    client = MilvusClient(uri=f"http://{server_address}", token=os.environ.get(TOKEN_ENV, ""))
    yield client
    client.close()


@pytest.fixture(scope="module")
def server_version(server_client: Any) -> str:
    return str(server_client.get_server_version())


@pytest.fixture()
def supported_server(server_version: str) -> None:
    """Skip a test of the index's properties on a server the backend refuses (too old)."""
    problem = server_version_problem(server_version)
    if problem is not None:
        pytest.skip(problem)


@pytest.fixture()
def collection(request: pytest.FixtureRequest, server_client: Any) -> Iterator[str]:
    """A collection name of this test's own; the collection (and ``<name>_absent``) are dropped
    afterwards, whatever the test left."""
    test = re.sub(r"[^A-Za-z0-9_]", "_", request.node.name)[:40]
    name = f"cdtest_{test}_{uuid.uuid4().hex[:8]}"
    yield name
    for leftover in (name, f"{name}_absent"):
        if server_client.has_collection(leftover):
            server_client.drop_collection(leftover)


@pytest.fixture()
def server_spec(tmp_path: Path, server_address: str, collection: str) -> str:
    return f"milvus://{server_address}/{collection}?side={tmp_path / 'side'}"


@pytest.mark.usefixtures("supported_server")
def test_search_equals_faiss_flat_top_k(tmp_path: Path, server_spec: str) -> None:
    check_search_equals_faiss_flat_top_k(tmp_path, server_spec)


@pytest.mark.usefixtures("supported_server")
def test_removed_references_never_come_back(server_spec: str) -> None:
    check_removed_references_never_come_back(server_spec)


@pytest.mark.usefixtures("supported_server")
def test_fingerprint_check(server_spec: str) -> None:
    check_fingerprint_check(server_spec)


@pytest.mark.usefixtures("supported_server")
def test_records_and_side_data_round_trip(
    tmp_path: Path, server_spec: str, caplog: pytest.LogCaptureFixture
) -> None:
    check_records_and_side_data_round_trip(tmp_path, server_spec, caplog)


@pytest.mark.usefixtures("supported_server")
def test_readers_see_the_writers_generations(server_spec: str) -> None:
    check_readers_see_the_writers_generations(server_spec)


@pytest.mark.usefixtures("supported_server")
def test_a_collection_is_shared_by_a_writer_and_readers(
    tmp_path: Path, server_address: str, collection: str
) -> None:
    check_a_server_collection_is_shared(
        tmp_path, server_address, collection, f"{collection}_absent"
    )


@pytest.mark.usefixtures("supported_server")
def test_an_upsert_replaces_a_references_rows_in_its_brand(server_spec: str) -> None:
    """replace_aux upserts every row of a reference by its id: the rows are replaced (no
    duplicates) and stay where the brand partition key puts them (brand filters find them)."""
    refs, vectors, aux = reference_set(16)
    with create_index(server_spec, fingerprint=FP) as idx:
        ids = idx.add(refs, vectors, aux).added
        before = idx.info()
        new_aux = {rid: f"new side data of {rid}".encode() for rid in ids}
        assert idx.replace_aux(new_aux) == len(ids)
        after = idx.info()
        assert (after.count, after.vectors, after.per_brand) == (
            before.count,
            before.vectors,
            before.per_brand,
        )
        assert idx.get_aux(ids) == new_aux
        for brand in sorted({r.brand for r in refs}):
            want = [rid for rid, r in zip(ids, refs, strict=True) if r.brand == brand]
            assert [r.id for r in idx.references(brand)] == want
        _, found = idx.search_vectors(np.stack([v[0] for v in vectors]), k=1)
        assert found[:, 0].tolist() == ids  # each first view still finds its reference
        assert idx.remove(brand="brand-1") == len(ids) // 4  # a brand-filtered delete sees them


@pytest.mark.usefixtures("supported_server")
def test_reopening_a_released_collection_sees_the_same_data(
    server_spec: str, collection: str, server_client: Any
) -> None:
    """A new connection to a collection the server released (as after a restart) loads it and
    returns the same searches, records and side data."""
    refs, vectors, aux = reference_set(20)
    queries = unit(np.random.default_rng(11), 8)
    with create_index(server_spec, fingerprint=FP) as idx:
        ids = idx.add(refs, vectors, aux).added
        scores, found = idx.search_vectors(queries, k=5)
        records, side, info = idx.get_references(ids), idx.get_aux(ids), idx.info()
    server_client.release_collection(collection)
    with open_index(server_spec, fingerprint=FP) as idx:
        again_scores, again_found = idx.search_vectors(queries, k=5)
        np.testing.assert_array_equal(again_found, found)
        np.testing.assert_allclose(again_scores, scores, atol=1e-6)
        assert idx.get_references(ids) == records and idx.get_aux(ids) == side
        assert (idx.info().count, idx.info().per_brand, idx.generation) == (
            info.count,
            info.per_brand,
            info.generation,
        )


def test_an_older_server_is_refused(
    server_spec: str, collection: str, server_client: Any, server_version: str
) -> None:
    """A server older than the backend needs is refused on connecting, before anything is
    written (it would silently lose nullable product ids and misplace upserted rows)."""
    if server_version_problem(server_version) is None:
        pytest.skip(f"server {server_version} is recent enough; nothing to refuse")
    with pytest.raises(IndexStoreError, match="older than"):
        create_index(server_spec, fingerprint=FP)
    with pytest.raises(IndexStoreError, match="Upgrade the server"):
        open_index(server_spec)
    assert not server_client.has_collection(collection)
