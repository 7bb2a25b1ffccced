"""The open state of a Milvus-backed reference index: connection, metadata, generation, lifecycle.

The base of :class:`index.milvus_store.MilvusReferenceIndex`; the writes are in
:mod:`index.milvus_writes`. The generation (a collection property the writer advances after
each write) plays the part of the FAISS index's committed generation: readers compare it to
the one they loaded to drop side data decoded from older data (:meth:`reload`).
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Self

from index.atomic import WriterLock
from index.errors import (
    BackendUnavailableError,
    IndexMismatchError,
    IndexNotFoundError,
    IndexStoreError,
    ReadOnlyIndexError,
)
from index.milvus_schema import (
    FORMAT_VERSION,
    P_CREATED,
    P_FACTORY,
    P_FINGERPRINT,
    P_FORMAT,
    P_GENERATION,
    P_NEXT_ID,
    P_UPDATED,
    id_filter,
    literal,
)
from index.milvus_spec import MilvusLocation
from index.records import Fingerprint
from index.side_store import SideStore

LOCK_NAME = "writer.lock"
QUERY_LIMIT = 16384  # Milvus' largest result window of one query
ID_PAGE = 1000  # reference ids per paged query (rows = ids * views, split further if needed)
# Open clients per Milvus Lite file in this process: its in-process server stops with the last.
_LITE_USERS: dict[str, int] = {}
_LITE_USERS_LOCK = threading.Lock()
INSTALL_HINT = "pip install 'counterfeit-detector[milvus]' (pymilvus, and milvus-lite for milvus-lite: paths)"
# Oldest Milvus server the index runs on, checked on connecting because older ones fail it
# quietly: they drop the nullable flag of product_id (nullable fields came in 2.5) and then refuse
# null values, and 2.3.5 upserts rows of a partition-key collection into the wrong partition, so
# brand filters miss them (likely fixed by milvus-io/milvus#30772, Feb 2024). Both seen on 2.3.5.
MIN_SERVER_VERSION = (2, 5)
# A release number at the start: "v2.3.5-lite", "2.6.6"; not Milvus Lite's "milvus_lite-3.2.2".
_RELEASE = re.compile(r"^v?(\d+)\.(\d+)")


def connect(location: MilvusLocation) -> Any:
    """A ``pymilvus.MilvusClient`` for ``location``.

    Raises:
        BackendUnavailableError: pymilvus (or milvus-lite) is not installed.
        IndexStoreError: The server or the database file cannot be reached.
    """
    try:
        from pymilvus import MilvusClient
    except ImportError as e:
        raise BackendUnavailableError(f"the Milvus backend needs pymilvus: {INSTALL_HINT}") from e
    if location.lite:
        try:
            import milvus_lite  # noqa: F401  (pymilvus opens local files through it)
        except ImportError as e:
            raise BackendUnavailableError(f"milvus-lite: paths need the milvus-lite package: {INSTALL_HINT}") from e
    try:
        client = MilvusClient(uri=location.uri, token=location.token)
    except Exception as e:  # pymilvus raises its own types for refused connections and locked files
        hint = " (a Milvus Lite file is open in one process at a time)" if location.lite else ""
        raise IndexStoreError(f"cannot connect to Milvus at {location.spec}{hint}: {e}") from e
    if location.lite:
        with _LITE_USERS_LOCK:
            _LITE_USERS[location.uri] = _LITE_USERS.get(location.uri, 0) + 1
    else:
        _refuse_old_server(location, client)
    return client


def server_version_problem(version: str) -> str | None:
    """Why a Milvus server reporting ``version`` cannot hold an index, or None when it can.

    A version string that is not a Milvus release number (Milvus Lite's own server, a managed
    service's banner) is not judged: None.
    """
    match = _RELEASE.match(version.strip())
    if match is None or (int(match[1]), int(match[2])) >= MIN_SERVER_VERSION:
        return None
    oldest = ".".join(str(n) for n in MIN_SERVER_VERSION)
    return (
        f"Milvus server {version} is older than {oldest}, the oldest this index runs on: it lacks "
        "nullable fields (product_id; Milvus 2.5) and may upsert rows into the wrong partition of "
        "the brand partition key (2.3.5 does; brand filters then miss them). Upgrade the server"
    )


def _refuse_old_server(location: MilvusLocation, client: Any) -> None:
    """Close ``client`` and raise IndexStoreError when its server is too old for the index."""
    try:
        problem = server_version_problem(str(client.get_server_version()))
    except Exception as e:  # pymilvus raises its own types for a dropped connection
        client.close()
        raise IndexStoreError(f"cannot read the Milvus version at {location.spec}: {e}") from e
    if problem is not None:
        client.close()
        raise IndexStoreError(f"{location.spec}: {problem}")


def disconnect(location: MilvusLocation, client: Any) -> None:
    """Close ``client``; for Milvus Lite, when it was this process's last one on the file, stop
    the file's in-process server too, which releases the file's lock for other processes
    (pymilvus keeps it until the process exits otherwise)."""
    with contextlib.suppress(Exception):
        client.close()
    if not location.lite:
        return
    with _LITE_USERS_LOCK:
        left = _LITE_USERS.get(location.uri, 1) - 1
        if left > 0:
            _LITE_USERS[location.uri] = left
            return
        _LITE_USERS.pop(location.uri, None)
        with contextlib.suppress(Exception):
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(location.uri)


def pymilvus_types() -> tuple[Any, Any]:
    """``(MilvusClient, DataType)`` (after :func:`connect` has checked the import)."""
    from pymilvus import DataType, MilvusClient

    return MilvusClient, DataType


class MilvusCollection:
    """Connection, metadata and lifecycle of one Milvus-backed index. Thread-safe."""

    def __init__(self, location: MilvusLocation, client: Any, lock: WriterLock | None) -> None:
        self.location = location
        self.path = location.side_dir  # local folder: side data, reports, background vectors
        self._client = client
        self._writer_lock = lock
        self._lock = threading.RLock()
        self._closed = False
        self.side = SideStore(location.side_dir)
        if not client.has_collection(location.collection):
            raise IndexNotFoundError(f"no reference index at {location.spec} (no collection {location.collection!r})")
        # A collection is searchable only while loaded; a new process (or a server restart)
        # finds it released. Loading an already loaded collection is a no-op.
        client.load_collection(location.collection)
        props = self._properties()
        if P_FINGERPRINT not in props:
            raise IndexNotFoundError(
                f"collection {location.collection!r} at {location.spec} is not a reference index (no fingerprint)"
            )
        if int(props.get(P_FORMAT, 0)) > FORMAT_VERSION:
            raise IndexMismatchError(
                f"index at {location.spec} has format version {props[P_FORMAT]}; this code reads up to "
                f"{FORMAT_VERSION}. Upgrade the package."
            )
        self.fingerprint = Fingerprint.from_dict(json.loads(props[P_FINGERPRINT]))
        self.factory: str = props[P_FACTORY]
        self.dim: int = int(self.fingerprint.dim)
        self.metric = "inner_product"
        self._created_at = props[P_CREATED]
        self._generation = int(props[P_GENERATION])

    @property
    def spec(self) -> str:
        """The index argument this object was opened from."""
        return self.location.spec

    @property
    def writable(self) -> bool:
        return self._writer_lock is not None

    @property
    def generation(self) -> int:
        """The generation this object last loaded (see :meth:`reload`)."""
        return self._generation

    def committed_generation(self) -> int:
        """Latest generation the writer committed (one metadata read; cheap enough to poll)."""
        self._check_open()
        return int(self._properties()[P_GENERATION])

    def reload(self) -> bool:
        """Take the latest committed generation. Searches always see the collection's current
        rows; the generation tells callers to drop side data decoded from older ones.

        Returns:
            True if the generation advanced since this object last loaded it.
        """
        current = self.committed_generation()
        if current == self._generation:
            return False
        self._generation = current
        return True

    def check_fingerprint(self, fingerprint: Fingerprint | None) -> None:
        """Raise IndexMismatchError when ``fingerprint`` is not this index's model."""
        if fingerprint is not None and not fingerprint.is_compatible(self.fingerprint):
            raise IndexMismatchError(
                f"index at {self.spec} was built with another model "
                f"({fingerprint.describe_difference(self.fingerprint)}; given != index). "
                "Vectors of different models cannot be mixed: rebuild the index with this model "
                f"(new index, re-add the references) or embed with the index's model "
                f"({self.fingerprint.preset or self.fingerprint.arch})."
            )

    # -- metadata -------------------------------------------------------------------------------

    def _properties(self) -> dict[str, str]:
        described = self._client.describe_collection(self.location.collection)
        return {str(k): str(v) for k, v in (described.get("properties") or {}).items()}

    def _set_properties(self, values: dict[str, str]) -> None:
        self._client.alter_collection_properties(self.location.collection, properties=values)

    def _next_ref_id(self) -> int:
        return int(self._properties()[P_NEXT_ID])

    def _advance_generation(self, now: str) -> None:
        """Publish the write just made: readers polling the generation pick it up."""
        gen = int(self._properties()[P_GENERATION]) + 1
        self._set_properties({P_GENERATION: str(gen), P_UPDATED: now})
        self._generation = gen

    # -- queries --------------------------------------------------------------------------------

    def existing_sha256(self, shas: Iterable[str]) -> dict[str, int]:
        """sha256 -> ref id for the given content hashes that are already stored."""
        self._check_open()
        wanted = sorted(set(shas))
        found: dict[str, int] = {}
        for start in range(0, len(wanted), 1000):
            chunk = ", ".join(literal(s) for s in wanted[start : start + 1000])
            for row in self._query(f"view == 0 and sha256 in [{chunk}]", ["ref_id", "sha256"]):
                found[row["sha256"]] = min(int(row["ref_id"]), found.get(row["sha256"], 1 << 62))
        return found


    def _query(self, expr: str, fields: list[str]) -> list[dict[str, Any]]:
        return list(self._client.query(self.location.collection, filter=expr, output_fields=fields,
                                       limit=QUERY_LIMIT))  # fmt: skip

    def _rows_of_ids(self, ref_ids: list[int], fields: list[str]) -> list[dict[str, Any]]:
        """Every row of the given reference ids (queried in pages of ids)."""
        rows: list[dict[str, Any]] = []
        ids = sorted(set(ref_ids))
        for start in range(0, len(ids), ID_PAGE):
            rows += self._query_complete(id_filter(ids[start : start + ID_PAGE]), fields)
        return rows

    def _rows_in_id_ranges(self, expr: str, fields: list[str]) -> Iterator[list[dict[str, Any]]]:
        """Rows matching ``expr``, a page of reference-id range at a time, each page sorted by
        (ref_id, view): Milvus returns query results in no set order and at most QUERY_LIMIT."""
        end = self._next_ref_id()
        for lo in range(0, end, ID_PAGE):
            page = f"ref_id >= {lo} and ref_id < {lo + ID_PAGE}" + (f" and ({expr})" if expr else "")
            rows = self._query_complete(page, fields)
            if rows:
                yield sorted(rows, key=lambda r: (int(r["ref_id"]), int(r.get("view", 0))))

    def _query_complete(self, expr: str, fields: list[str]) -> list[dict[str, Any]]:
        rows = self._query(expr, fields)
        if len(rows) >= QUERY_LIMIT:
            raise IndexStoreError(
                f"a query of {self.spec} reached Milvus' result limit of {QUERY_LIMIT} rows "
                f"(references with too many views); filter: {expr[:80]}"
            )
        return rows

    # -- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        """Release the writer lock and the connection (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            disconnect(self.location, self._client)
            if self._writer_lock is not None:
                self._writer_lock.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            if not self._closed:
                self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise IndexStoreError(f"index at {self.spec} is closed")

    def _require_writable(self) -> None:
        self._check_open()
        if not self.writable:
            raise ReadOnlyIndexError(f"index at {self.spec} is open read-only; open it with writable=True")


def writer_lock_path(location: MilvusLocation) -> Path:
    return location.side_dir / LOCK_NAME
