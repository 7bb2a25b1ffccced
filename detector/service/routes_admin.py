"""Admin routes that change the index: add and remove references, reload from disk.

All need the admin token (disabled without one). Writes are serialised by the state's admin
lock and shielded from request timeouts; the detector swaps to the new index generation
atomically, so requests in flight finish on the old one.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Form, Query, UploadFile

from detector.errors import DetectorError
from detector.service import index_jobs
from detector.service.errors import ApiError
from detector.service.http_auth import auth_dependency
from detector.service.schemas import error_responses
from detector.service.state import ServiceState, in_pool, ready_detector
from detector.service.uploads import check_file_count, check_text, read_uploads
from index.errors import IndexLockedError, IndexStoreError
from index.records import KINDS


def add_admin_routes(app: FastAPI, state: ServiceState) -> None:
    """``POST``/``DELETE /v1/references`` and ``POST /v1/reload``."""
    settings = state.settings
    require_admin = auth_dependency(settings, admin=True)

    @app.post(
        "/v1/references",
        tags=["admin"],
        summary="Add reference images for a brand",
        responses=error_responses(401, 403, 409, 413, 422, 503),
        dependencies=[Depends(require_admin)],
    )
    async def add_references(
        files: Annotated[list[UploadFile], File(description="Reference images.")],
        brand: Annotated[str, Form(description="Brand the references belong to.")],
        kind: Annotated[str, Form(description="logo | product")] = "product",
        product_id: Annotated[str | None, Form()] = None,
    ) -> dict[str, Any]:
        """Embed the uploaded images and add them to the index; the service switches to the new
        index generation atomically (requests in flight finish on the old one)."""
        detector = ready_detector(state)
        brand = (check_text(brand, "brand", settings.max_field_chars) or "").strip()
        if not brand:
            raise ApiError(422, "invalid_field", "brand must not be empty")
        if kind not in KINDS:
            raise ApiError(
                422, "invalid_field", f"kind must be one of {', '.join(KINDS)}, got {kind!r}"
            )
        product_id = check_text(product_id, "product_id", settings.max_field_chars)
        check_file_count(files, settings)
        blobs = await read_uploads(files)
        async with state.admin_lock:
            # The add embeds images: it runs on the model thread, between scoring batches.
            # Shielded so a request timeout never abandons a half-done index write.
            add = index_jobs.add_references
            job = in_pool(state.model_pool, add, detector, blobs, brand, kind, product_id)
            try:
                report = await asyncio.shield(job)
            except IndexLockedError as e:
                raise ApiError(409, "index_locked", str(e)) from e
            except (IndexStoreError, DetectorError) as e:
                raise ApiError(409, "index_error", str(e)) from e
            await in_pool(state.admin_pool, index_jobs.reload_index, state)
        report["generation"] = getattr(detector.index, "generation", None)
        return report

    @app.delete(
        "/v1/references",
        tags=["admin"],
        summary="Remove references by brand, ref_id or product_id",
        responses=error_responses(401, 403, 409, 422, 503),
        dependencies=[Depends(require_admin)],
    )
    async def remove_references(
        brand: Annotated[str | None, Query()] = None,
        ref_id: Annotated[list[int] | None, Query(description="Repeatable.")] = None,
        product_id: Annotated[str | None, Query()] = None,
    ) -> dict[str, Any]:
        """Withdraw references (exactly one selector); the index swaps atomically."""
        detector = ready_detector(state)
        given = [
            name
            for name, v in (("brand", brand), ("ref_id", ref_id), ("product_id", product_id))
            if v
        ]
        if len(given) != 1:
            raise ApiError(
                422, "invalid_request", "give exactly one of brand, ref_id or product_id"
            )
        async with state.admin_lock:
            job = in_pool(
                state.admin_pool, index_jobs.remove_references, detector, brand, ref_id, product_id
            )
            try:
                removed = await asyncio.shield(job)
            except IndexLockedError as e:
                raise ApiError(409, "index_locked", str(e)) from e
            except IndexStoreError as e:
                raise ApiError(409, "index_error", str(e)) from e
            await in_pool(state.admin_pool, index_jobs.reload_index, state)
        return {"removed": removed, "generation": getattr(detector.index, "generation", None)}

    @app.post(
        "/v1/reload",
        tags=["admin"],
        summary="Pick up an index changed on disk",
        responses=error_responses(401, 403, 409, 503),
        dependencies=[Depends(require_admin)],
    )
    async def reload() -> dict[str, Any]:
        detector = ready_detector(state)
        async with state.admin_lock:
            try:
                changed = await in_pool(state.admin_pool, index_jobs.reload_index, state)
            except (IndexStoreError, DetectorError) as e:
                raise ApiError(409, "reload_failed", f"kept the loaded index: {e}") from e
        return {"reloaded": changed, "generation": getattr(detector.index, "generation", None)}
