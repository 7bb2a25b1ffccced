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

# The module docstring above is the OpenAPI description of the app. The service's parts live in
# sibling modules; this one builds the app and runs its lifecycle, and re-exports the names
# callers import from here.

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import FastAPI
from PIL import Image

from detector.service.batcher import MicroBatcher
from detector.service.errors import ApiError, install_error_handlers
from detector.service.index_jobs import reload_index, update_index_gauges
from detector.service.limits import LimitsMiddleware
from detector.service.metrics import ServiceMetrics
from detector.service.routes_admin import add_admin_routes
from detector.service.routes_ops import add_ops_routes
from detector.service.routes_scoring import add_scoring_routes
from detector.service.schemas import (
    API_VERSION,
    ErrorBody,
    ErrorResponse,
    MatchModel,
    ScoreResponse,
    VerdictModel,
)
from detector.service.settings import ServiceSettings
from detector.service.state import ScoringBackend, ServiceState, in_pool

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
            if state.review is not None:
                state.review.store.close()
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
    # Registration order is the order of the paths in OpenAPI.
    add_ops_routes(app, state)
    add_scoring_routes(app, state)
    add_admin_routes(app, state)
    if settings.queue_url:
        _add_review(app, state)
    state.route_paths = frozenset(getattr(r, "path", "") for r in app.routes)
    return app


def _add_review(app: FastAPI, state: ServiceState) -> None:
    """The review queue (flagged verdicts are recorded) and its portal under ``/review``."""
    from detector.review.recorder import QueueRecorder
    from detector.review.store import ReviewStore
    from detector.review.web import add_review_portal

    settings = state.settings
    store = ReviewStore(settings.queue_url, image_dir=settings.queue_image_dir)  # type: ignore[arg-type]
    state.review = QueueRecorder(store, near_margin=settings.queue_margin)
    add_review_portal(app, store)


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
