"""The HTTP scoring service: a FastAPI app over one :class:`~detector.scoring.Detector`.

Endpoints (all JSON, errors as ``{"error": {"code": ..., "message": ...}}``):

* ``POST /v1/score`` — multipart ``files`` (1..max_files images), optional ``listing_id`` and
  ``seller_id``; answers one verdict per image, in order. An image that cannot be read gets a
  verdict with ``error`` set while the others are scored (200). When *no* image of the request
  could be read the answer is 422 ``invalid_image``, still with the per-image ``results``.
* ``GET /healthz`` (process alive), ``GET /readyz`` (503 until model and index are loaded),
  ``GET /v1/info``, ``GET /metrics`` (Prometheus text).
* Admin (bearer token; disabled without one): ``POST /v1/references``,
  ``DELETE /v1/references``, ``POST /v1/reload``.

Concurrency: images of concurrent requests are micro-batched into one model call on a single
model thread; decoding runs on a small thread pool; the event loop never runs the model.
Index writes are serialised by a lock, and the detector swaps to the new index generation
atomically, so requests in flight finish on the old one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Form, Query, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse
from PIL import Image

from detector.errors import DetectorError, ImageLoadError
from detector.service import index_jobs
from detector.service.batcher import BatcherClosedError, BatcherOverloadedError, MicroBatcher
from detector.service.errors import ApiError, install_error_handlers
from detector.service.http_auth import auth_dependency
from detector.service.index_jobs import index_summary, reload_index, update_index_gauges
from detector.service.limits import LimitsMiddleware
from detector.service.metrics import CONTENT_TYPE, ServiceMetrics
from detector.service.schemas import (
    API_VERSION,
    ErrorBody,
    ErrorResponse,
    MatchModel,
    ScoreResponse,
    VerdictModel,
    error_responses,
)
from detector.service.settings import ServiceSettings
from detector.service.state import ScoringBackend, ServiceState, in_pool, ready_detector
from detector.service.uploads import check_file_count, check_text, decode_images, read_uploads
from detector.verdict import Verdict
from index.errors import IndexLockedError, IndexStoreError
from index.records import KINDS

__all__ = [
    "API_VERSION",
    "ApiError",
    "ErrorBody",
    "ErrorResponse",
    "MatchModel",
    "ScoreResponse",
    "ScoringBackend",
    "ServiceSettings",
    "VerdictModel",
    "create_app",
]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------- the app
def create_app(
    load_detector: Callable[[], ScoringBackend],
    settings: ServiceSettings | None = None,
) -> FastAPI:
    """Build the service around a detector loaded in the background at startup.

    Args:
        load_detector: Opens the detector (model + index); runs on the model thread after the
            server starts, so ``/healthz`` answers at once and ``/readyz`` turns 200 when done.
        settings: Limits and tokens; default :class:`ServiceSettings` (admin disabled).

    Returns:
        The FastAPI application (serve it with uvicorn; see :func:`detector.service.server.serve`).
    """
    settings = settings or ServiceSettings()
    state = ServiceState(settings=settings, metrics=ServiceMetrics())
    state.metrics.ready.set(0)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.admin_lock = asyncio.Lock()
        state.model_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        state.decode_pool = ThreadPoolExecutor(
            max_workers=settings.decode_workers, thread_name_prefix="decode"
        )
        state.admin_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="admin")
        state.batcher = MicroBatcher(
            lambda items: _run_batch(state, items),
            executor=state.model_pool,
            max_batch=settings.max_batch_images,
            max_wait_s=settings.max_wait_ms / 1000.0,
            max_queue=settings.max_queue_images,
            on_batch=_observe_batch(state),
        )
        tasks = [asyncio.create_task(_load(state, load_detector), name="load-detector")]
        if settings.index_poll_s > 0:
            tasks.append(asyncio.create_task(_poll_index(state), name="poll-index"))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await state.batcher.close()
            for pool in (state.decode_pool, state.admin_pool, state.model_pool):
                pool.shutdown(wait=True)
            if state.detector is not None:
                state.detector.close()
            state.metrics.close()

    app = FastAPI(
        title="Counterfeit detector",
        version=API_VERSION,
        description=__doc__,
        lifespan=lifespan,
    )
    app.state.service = state
    app.add_middleware(LimitsMiddleware, state=state)
    install_error_handlers(app, state.metrics)
    _add_routes(app, state)
    state.route_paths = frozenset(getattr(r, "path", "") for r in app.routes)
    return app


async def _load(state: ServiceState, load_detector: Callable[[], ScoringBackend]) -> None:
    loop = asyncio.get_running_loop()
    try:
        detector = await loop.run_in_executor(state.model_pool, load_detector)
    except Exception as e:  # any failure leaves the service alive but not ready, and says why
        log.exception("could not load the detector")
        state.load_error = f"{type(e).__name__}: {e}"
        return
    state.detector = detector
    update_index_gauges(state)
    state.metrics.ready.set(1)
    log.info("detector ready: model %s", detector.fingerprint.preset)


async def _poll_index(state: ServiceState) -> None:
    while True:
        await asyncio.sleep(state.settings.index_poll_s)
        if state.detector is None:
            continue
        try:
            async with state.admin_lock:
                await in_pool(state.admin_pool, reload_index, state)
        except Exception:
            log.exception("periodic index reload failed; keeping the loaded index")


def _run_batch(state: ServiceState, items: list[tuple[Image.Image, str]]) -> list[Any]:
    assert state.detector is not None
    return state.detector.analyse_images([img for img, _ in items], [name for _, name in items])


def _observe_batch(state: ServiceState) -> Callable[[int, float], None]:
    def observe(n_images: int, seconds: float) -> None:
        state.metrics.batch_size.observe(n_images)
        state.metrics.batch_seconds.observe(seconds)

    return observe


def _add_routes(app: FastAPI, state: ServiceState) -> None:
    settings = state.settings
    require_score = auth_dependency(settings, admin=False)
    require_admin = auth_dependency(settings, admin=True)

    @app.get("/healthz", tags=["ops"], summary="Process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["ops"],
        summary="Model and index are loaded",
        responses=error_responses(503),
    )
    async def readyz() -> dict[str, Any]:
        detector = ready_detector(state)
        return {"status": "ready", "generation": getattr(detector.index, "generation", None)}

    @app.get(
        "/metrics", tags=["ops"], summary="Prometheus metrics", response_class=PlainTextResponse
    )
    async def metrics() -> PlainTextResponse:
        if state.batcher is not None:
            state.metrics.queued.set(state.batcher.queued_items)
        return PlainTextResponse(state.metrics.render(), media_type=CONTENT_TYPE)

    @app.get(
        "/v1/info",
        tags=["ops"],
        summary="Model fingerprint, index counts, thresholds version",
        responses=error_responses(503),
    )
    async def info() -> dict[str, Any]:
        detector = ready_detector(state)
        index = await in_pool(state.admin_pool, index_summary, detector)
        return {
            "api_version": API_VERSION,
            "model": detector.fingerprint.to_dict(),
            "index": index,
            "thresholds": {
                "version": detector.thresholds.version,
                "score": getattr(detector.thresholds, "score", None),
            },
            "limits": {
                "max_files": settings.max_files,
                "max_body_bytes": settings.max_body_bytes,
                "max_pixels": settings.max_pixels or detector.config.max_pixels,
                "request_timeout_s": settings.request_timeout_s,
                "max_batch_images": settings.max_batch_images,
                "max_wait_ms": settings.max_wait_ms,
            },
            "admin_enabled": settings.admin_token is not None,
            "score_token_required": settings.score_token is not None,
        }

    @app.post(
        "/v1/score",
        tags=["scoring"],
        summary="Score listing images",
        response_model=ScoreResponse,
        responses=error_responses(401, 403, 413, 422, 503, 504),
        dependencies=[Depends(require_score)],
    )
    async def score(
        files: Annotated[
            list[UploadFile],
            File(description="One or more listing images (JPEG, PNG, WebP, GIF, BMP, TIFF)."),
        ],
        listing_id: Annotated[str | None, Form(description="Passed through to the answer.")] = None,
        seller_id: Annotated[str | None, Form(description="Passed through to the answer.")] = None,
    ) -> JSONResponse:
        """Score 1..max_files images. Each image gets a verdict, in order; an unreadable image
        gets ``error`` set and the others are still scored. 422 when no image could be read."""
        detector = ready_detector(state)
        listing_id = check_text(listing_id, "listing_id", settings.max_field_chars)
        seller_id = check_text(seller_id, "seller_id", settings.max_field_chars)
        check_file_count(files, settings)
        max_pixels = settings.max_pixels or detector.config.max_pixels
        blobs: list[tuple[str, bytes]] = []
        decoded: list[Image.Image | ImageLoadError] = []

        async def prepare() -> list[tuple[Image.Image, str]]:
            blobs.extend(await read_uploads(files))
            decoded.extend(await in_pool(state.decode_pool, decode_images, blobs, max_pixels))
            return [
                (img, name)
                for (name, _), img in zip(blobs, decoded)
                if isinstance(img, Image.Image)
            ]

        assert state.batcher is not None
        try:
            # Submitting the preparation (not its result) announces this request to the batcher,
            # so an idle model waits for it briefly instead of running a batch without it.
            analyses = iter(await state.batcher.submit(prepare()))
        except ApiError:
            raise
        except BatcherOverloadedError as e:
            raise ApiError(503, "overloaded", str(e), headers={"Retry-After": "1"}) from e
        except BatcherClosedError as e:
            raise ApiError(503, "shutting_down", str(e)) from e
        except Exception as e:
            log.exception("scoring failed")
            raise ApiError(500, "scoring_failed", f"scoring failed: {type(e).__name__}") from e
        results = []
        for (name, _), img in zip(blobs, decoded):
            verdict = (
                Verdict.failed(name, img.reason)
                if isinstance(img, ImageLoadError)
                else next(analyses).verdict
            )
            results.append(verdict.to_dict())
            _count_verdict(state, verdict)
        body = {"listing_id": listing_id, "seller_id": seller_id, "results": results}
        if all(isinstance(img, ImageLoadError) for img in decoded):
            raise ApiError(
                422, "invalid_image", f"no image could be read: {results[0]['error']}", extra=body
            )
        return JSONResponse(body)

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
            job = in_pool(
                state.model_pool,
                index_jobs.add_references,
                detector,
                blobs,
                brand,
                kind,
                product_id,
            )
            try:
                report = await asyncio.shield(job)
            except IndexLockedError as e:
                raise ApiError(409, "index_locked", str(e)) from e
            except (IndexStoreError, DetectorError) as e:
                raise ApiError(409, "index_error", str(e)) from e
            await in_pool(state.admin_pool, reload_index, state)
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
            await in_pool(state.admin_pool, reload_index, state)
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
                changed = await in_pool(state.admin_pool, reload_index, state)
            except (IndexStoreError, DetectorError) as e:
                raise ApiError(409, "reload_failed", f"kept the loaded index: {e}") from e
        return {"reloaded": changed, "generation": getattr(detector.index, "generation", None)}


def _count_verdict(state: ServiceState, verdict: Verdict) -> None:
    if verdict.error is not None:
        state.metrics.images.labels(outcome="error").inc()
        return
    outcome = "flagged" if verdict.flagged else "clean"
    state.metrics.images.labels(outcome=outcome).inc()
    if verdict.flagged and verdict.brand is not None:
        state.metrics.flags.labels(brand=verdict.brand).inc()
