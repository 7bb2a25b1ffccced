"""Index work for worker threads: summaries, reloads (with their metrics), adding and removing
references. Nothing here runs on the event loop."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from detector.images import IMAGE_EXTENSIONS
from detector.service.state import ScoringBackend, ServiceState

log = logging.getLogger(__name__)

_LOCK_WAIT_S = 10.0  # how long an admin write waits for another writer (e.g. a CLI 'index add')


def index_summary(detector: ScoringBackend) -> dict[str, Any]:
    """The loaded index's counts for public answers (without its server path)."""
    info = detector.index.info().to_dict()
    info.pop("path", None)  # no server paths in public answers
    return info


def update_index_gauges(state: ServiceState) -> None:
    """Set the index generation and reference count gauges from the loaded index."""
    if state.detector is None:
        return
    index = state.detector.index
    state.metrics.index_generation.set(getattr(index, "generation", 0))
    try:
        state.metrics.index_refs.set(index.info().count)
    except Exception:  # metrics must never break a reload
        log.exception("could not read index counts")


def reload_index(state: ServiceState) -> bool:
    """Switch the detector to a newer index generation on disk; True when it changed."""
    assert state.detector is not None
    try:
        changed = state.detector.reload_index()
    except Exception:
        state.metrics.reloads.labels(result="failed").inc()
        raise
    state.metrics.reloads.labels(result="changed" if changed else "unchanged").inc()
    if changed:
        update_index_gauges(state)
    return changed


def add_references(
    detector: ScoringBackend,
    blobs: list[tuple[str, bytes]],
    brand: str,
    kind: str,
    product_id: str | None,
) -> dict[str, Any]:
    """Embed uploaded images and add them to the index on disk; the report of the add."""
    from detector.indexing import ReferenceItem, index_references, prep_config_for

    prep = prep_config_for(detector.embedder.preset)
    # Uploads go to a private temp dir under names we choose: client names never become paths.
    with tempfile.TemporaryDirectory(prefix="counterfeit-upload-") as tmp:
        items, shown = [], {}
        for i, (name, data) in enumerate(blobs):
            path = Path(tmp) / f"upload-{i:03d}{_safe_suffix(name)}"
            path.write_bytes(data)
            shown[str(path)] = name
            items.append(
                ReferenceItem(
                    path=path,
                    brand=brand,
                    kind=kind,
                    product_id=product_id,
                    attributes={"uploaded_as": name, "via": "http"},
                    source=f"upload:{name}",
                )
            )
        with _open_writable(detector) as index:
            report = index_references(
                items,
                index,
                detector.embedder,
                prep=prep,
                verify_config=detector.config.verify,
                workers=1,
            )
    return {
        "added": report.added,
        "skipped_already_indexed": report.skipped,
        "failed": [{"item": shown.get(f.item, f.item), "reason": f.reason} for f in report.failed],
    }


def remove_references(
    detector: ScoringBackend, brand: str | None, ref_ids: list[int] | None, product_id: str | None
) -> int:
    """Withdraw references from the index on disk; how many were removed."""
    with _open_writable(detector) as index:
        return int(index.remove(ref_ids=ref_ids, brand=brand, product_id=product_id))


def _safe_suffix(name: str) -> str:
    suffix = Path(name).suffix.lower()
    return suffix if suffix in IMAGE_EXTENSIONS else ".img"


def _open_writable(detector: ScoringBackend) -> Any:
    from index.open import index_spec, open_index

    return open_index(
        index_spec(detector.index),
        writable=True,
        fingerprint=detector.fingerprint,
        lock_timeout=_LOCK_WAIT_S,
    )
