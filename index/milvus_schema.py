"""The Milvus collection of a reference index: its fields, its metadata and row conversions.

One row per stored vector (a reference with several views has several rows), the record's
fields repeated on each row so that a search, a delete or a brand filter needs no join::

    vid         INT64 primary key = ref_id * VIEW_SLOTS + view (upsert/delete by reference id)
    ref_id      INT64               the reference id (ids are never reused)
    view        INT64               0 .. n_views - 1; view 0 is the one read for records
    brand       VARCHAR, partition key (brand-scoped deletes and queries touch one partition)
    kind, product_id (nullable), source, sha256, added_at      VARCHAR
    attributes  VARCHAR             the attributes as JSON text
    aux_key     VARCHAR(64)         sha256 of the side data in the side store, "" if none
    vector      FLOAT_VECTOR(dim)   inner product (vectors are unit-norm)

The index's metadata (fingerprint, generation, next id...) are collection properties.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from index.records import Fingerprint, Reference

FORMAT_VERSION = 1
VIEW_SLOTS = 4096  # views per reference the primary key can hold
MAX_TEXT = 65535  # Milvus' VARCHAR limit (bytes)
_TEXT_LIMITS = {"brand": 512, "kind": 16, "product_id": 1024, "source": 8192, "sha256": 128, "added_at": 64,
                "attributes": MAX_TEXT, "aux_key": 64}  # fmt: skip
RECORD_FIELDS = ["ref_id", "brand", "kind", "product_id", "source", "sha256", "added_at", "attributes", "aux_key"]

# Collection properties (all strings): the Milvus counterpart of the FAISS manifest.
P_FORMAT = "counterfeit.format_version"
P_FINGERPRINT = "counterfeit.fingerprint"
P_FACTORY = "counterfeit.factory"
P_CREATED = "counterfeit.created_at"
P_UPDATED = "counterfeit.updated_at"
P_GENERATION = "counterfeit.generation"
P_NEXT_ID = "counterfeit.next_ref_id"

_HNSW = re.compile(r"^HNSW(\d+)$")


def milvus_index_params(factory: str) -> tuple[str, dict[str, Any]]:
    """Milvus index type and build parameters of a factory string ("Flat" or "HNSW<M>").

    Raises:
        ValueError: Any other factory string (the message lists the supported ones).
    """
    if factory == "Flat":
        return "FLAT", {}
    match = _HNSW.match(factory)
    if match and 2 <= int(match.group(1)) <= 2048:
        return "HNSW", {"M": int(match.group(1)), "efConstruction": 200}
    raise ValueError(f"the Milvus backend supports the factories 'Flat' and 'HNSW<M>', got {factory!r}")


def milvus_search_params(factory: str, k: int, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Search parameters: inner product; HNSW's ``ef`` from ``params["efSearch"]`` (>= k)."""
    out: dict[str, Any] = {"metric_type": "IP", "params": {}}
    unknown = set(params or {}) - {"efSearch"}
    if unknown:
        raise ValueError(f"the Milvus backend takes only the search parameter 'efSearch', got {sorted(unknown)}")
    if factory.startswith("HNSW"):
        out["params"]["ef"] = max(int(k), int((params or {}).get("efSearch", 64)))
    return out


def build_schema(client_cls: Any, data_type: Any, dim: int) -> Any:
    """The collection schema (``client_cls``: pymilvus.MilvusClient, ``data_type``: DataType)."""
    schema = client_cls.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("vid", data_type.INT64, is_primary=True)
    schema.add_field("ref_id", data_type.INT64)
    schema.add_field("view", data_type.INT64)
    schema.add_field("brand", data_type.VARCHAR, max_length=_TEXT_LIMITS["brand"], is_partition_key=True)
    for name in RECORD_FIELDS[2:]:
        schema.add_field(name, data_type.VARCHAR, max_length=_TEXT_LIMITS[name], nullable=name == "product_id")
    schema.add_field("vector", data_type.FLOAT_VECTOR, dim=int(dim))
    return schema


def initial_properties(fingerprint: Fingerprint, factory: str, now: str) -> dict[str, str]:
    """The properties of a new, empty index (reference ids start at 1, as in the FAISS index)."""
    return {
        P_FORMAT: str(FORMAT_VERSION), P_FINGERPRINT: json.dumps(fingerprint.to_dict(), sort_keys=True),
        P_FACTORY: factory, P_CREATED: now, P_UPDATED: now, P_GENERATION: "0", P_NEXT_ID: "1",
    }  # fmt: skip


def check_text_sizes(record: Mapping[str, Any], position: int) -> None:
    """Raise ValueError naming the field when a text field exceeds its VARCHAR length."""
    for name, limit in _TEXT_LIMITS.items():
        value = record.get(name)
        if value is not None and len(str(value).encode()) > limit:
            raise ValueError(f"references[{position}].{name} is longer than the Milvus limit of {limit} bytes")


def rows_of(record: Mapping[str, Any], vectors: np.ndarray) -> list[dict[str, Any]]:
    """The rows of one reference: ``record`` (the RECORD_FIELDS) repeated on each view's row."""
    if len(vectors) > VIEW_SLOTS:
        raise ValueError(f"a reference may have at most {VIEW_SLOTS} views, got {len(vectors)}")
    rid = int(record["ref_id"])
    return [{**record, "vid": rid * VIEW_SLOTS + view, "view": view, "vector": vec}
            for view, vec in enumerate(np.asarray(vectors, dtype=np.float32))]  # fmt: skip


def reference_of(row: Mapping[str, Any]) -> Reference:
    """The :class:`Reference` of a row (any view's row)."""
    return Reference(id=int(row["ref_id"]), brand=row["brand"], kind=row["kind"], product_id=row.get("product_id"),
                     source=row["source"], sha256=row["sha256"], added_at=row["added_at"],
                     attributes=json.loads(row["attributes"] or "{}"))  # fmt: skip


def literal(value: str) -> str:
    """A string literal for a Milvus filter expression (JSON quoting escapes quotes and backslashes)."""
    return json.dumps(str(value))


def id_filter(ref_ids: Iterable[int]) -> str:
    return f"ref_id in [{', '.join(str(int(i)) for i in ref_ids)}]"


def selection_filter(ref_ids: list[int] | None, brand: str | None, product_id: str | None) -> str:
    """The AND of the given filters of :meth:`remove`."""
    parts = []
    if ref_ids is not None:
        parts.append(id_filter(ref_ids))
    if brand is not None:
        parts.append(f"brand == {literal(brand)}")
    if product_id is not None:
        parts.append(f"product_id == {literal(product_id)}")
    return " and ".join(parts)
