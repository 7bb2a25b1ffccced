"""The rows of a distributed indexing job: a reference prepared by a CPU task, embedded by a model
actor, stored in a checkpoint chunk, and committed by the driver exactly as the local engine
commits a chunk (:func:`detector.indexing.index_references`): same skips, same failures, same
marks located, same records.

Nothing here imports Ray; each function works on plain dict rows.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from detector.errors import ImageLoadError
from detector.features import LocalFeatures
from detector.images import read_bytes, sha256_bytes
from detector.indexing import (
    IndexingReport,
    PreparedReference,
    add_prepared,
    locate_marks,
    prepare_reference,
)
from detector.reference_manifest import Failure, ReferenceItem
from detector.reference_prep import ReferencePrepConfig
from detector.verify import VerifyConfig
from index.protocol import VectorIndex

# Row status: what happened to the item before the driver's commit.
OK, SKIPPED, READ_FAILED, PREPARE_FAILED = "ok", "skipped", "read_failed", "prepare_failed"


def item_to_json(item: ReferenceItem) -> str:
    """A reference item as the JSON text a task receives (and the job key hashes)."""
    return json.dumps(
        {"path": str(item.path), "brand": item.brand, "kind": item.kind, "product_id": item.product_id,
         "attributes": item.attributes, "source": item.source},
        sort_keys=True, default=str,
    )


def item_from_json(text: str) -> ReferenceItem:
    data = json.loads(text)
    return ReferenceItem(Path(data.pop("path")), **data)


def prepare_row(
    item_json: str,
    pixel_transform: Any,
    prep: ReferencePrepConfig,
    verify_config: VerifyConfig | None,
    known_sha256: Collection[str],
    *,
    read_text: bool = False,
) -> dict[str, Any]:
    """Read, hash and prepare one reference (the CPU part of indexing).

    Args:
        item_json: From :func:`item_to_json`.
        pixel_transform: The preset's geometric preprocessing (``build_pil_transform``): its
            output pixels are what the actor embeds.
        prep, verify_config, read_text: As in :func:`detector.indexing.index_references`.
        known_sha256: Content already in the index when the job started: skipped unprepared.

    Returns:
        ``status``, ``reason``, ``sha256``, ``attributes`` (JSON), ``features`` (bytes, b"" for
        none), ``n_views`` and ``pixels`` (the views' ``(S, S, 3)`` uint8 arrays, concatenated).
    """
    item = item_from_json(item_json)
    row: dict[str, Any] = {"status": OK, "reason": "", "sha256": "", "attributes": "{}", "features": b"",
                           "n_views": 0, "pixels": b""}
    try:
        data = read_bytes(item.path)
    except ImageLoadError as e:
        return {**row, "status": READ_FAILED, "reason": e.reason}
    row["sha256"] = sha = sha256_bytes(data)
    if sha in known_sha256:
        return {**row, "status": SKIPPED}
    prepared = prepare_reference(item, data, sha, prep, verify_config, read_text=read_text)
    if isinstance(prepared, Failure):
        return {**row, "status": PREPARE_FAILED, "reason": prepared.reason}
    pixels = [np.asarray(pixel_transform(view), dtype=np.uint8) for view in prepared.views]
    return {
        **row,
        "attributes": json.dumps(prepared.attributes, sort_keys=True, default=str),
        "features": prepared.features.to_bytes() if prepared.features is not None else b"",
        "n_views": len(pixels),
        "pixels": b"".join(p.tobytes() for p in pixels),
    }


def row_pixels(row: dict[str, Any], image_size: int) -> list[np.ndarray]:
    """The views' pixel arrays of a prepared row."""
    flat = np.frombuffer(row["pixels"], dtype=np.uint8)
    return list(flat.reshape(int(row["n_views"]), image_size, image_size, 3)) if row["n_views"] else []


def commit_chunk(
    rows: Sequence[dict[str, Any]],
    items: Sequence[ReferenceItem],
    index: VectorIndex,
    report: IndexingReport,
    verify_config: VerifyConfig | None,
    dim: int,
) -> None:
    """Commit one finished chunk (rows with ``pos``, ``vectors``) into the index, in one add.

    What the local engine skips, the driver skips here: content indexed meanwhile (an earlier
    chunk of this run) and a second copy within the chunk; failures are reported in the same
    order (unreadable files first, then images that could not be prepared).
    """
    rows = sorted(rows, key=lambda r: r["pos"])
    report.failed.extend(Failure(str(items[r["pos"]].path), r["reason"]) for r in rows if r["status"] == READ_FAILED)
    report.skipped += sum(r["status"] == SKIPPED for r in rows)
    candidates = [r for r in rows if r["status"] in (OK, PREPARE_FAILED)]
    seen = set(index.existing_sha256(r["sha256"] for r in candidates))
    prepared: list[PreparedReference] = []
    vectors: list[np.ndarray] = []
    for r in candidates:
        if r["sha256"] in seen:
            report.skipped += 1
            continue
        seen.add(r["sha256"])
        item = items[r["pos"]]
        if r["status"] == PREPARE_FAILED:
            report.failed.append(Failure(str(item.path), r["reason"]))
            continue
        features = LocalFeatures.from_bytes(r["features"]) if r["features"] else None
        prepared.append(PreparedReference(item, r["sha256"], [], features, json.loads(r["attributes"])))
        vectors.append(np.frombuffer(r["vectors"], dtype=np.float32).reshape(-1, dim))
    if not prepared:
        return
    updates: dict[int, bytes] = {}
    if verify_config is not None and verify_config.enabled:
        prepared, updates = locate_marks(prepared, index, verify_config)
    add_prepared(prepared, vectors, index, report, updates)


def recount_committed(rows: Sequence[dict[str, Any]], items: Sequence[ReferenceItem], report: IndexingReport) -> None:
    """Report a chunk committed by an earlier run as a local rerun would: its references as
    already indexed, its failures again."""
    for r in sorted(rows, key=lambda r: r["pos"]):
        if r["status"] in (READ_FAILED, PREPARE_FAILED):
            report.failed.append(Failure(str(items[r["pos"]].path), r["reason"]))
        else:
            report.skipped += 1
