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
import re
import tempfile
import time
import unicodedata
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Protocol

from fastapi import Depends, FastAPI, File, Form, Query, Request, Security, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPBearer
from PIL import Image
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from detector.errors import DetectorError, ImageLoadError
from detector.images import IMAGE_EXTENSIONS, load_image
from detector.service import auth
from detector.service.batcher import BatcherClosedError, BatcherOverloadedError, MicroBatcher
from detector.service.metrics import CONTENT_TYPE, ServiceMetrics
from detector.verdict import Verdict
from index.errors import IndexLockedError, IndexStoreError
from index.records import KINDS

log = logging.getLogger(__name__)

API_VERSION = "v1"
_LOCK_WAIT_S = 10.0  # how long an admin write waits for another writer (e.g. a CLI 'index add')
_MAX_NAME_CHARS = 200


# ---------------------------------------------------------------------- settings and state
@dataclass(frozen=True)
class ServiceSettings:
    """Limits and knobs of the service.

    Attributes:
        max_body_bytes: Largest request body (checked from Content-Length and while streaming).
        max_files: Most images per request (score or add).
        max_pixels: Largest image (width * height); None: the detector's own limit.
        request_timeout_s: Whole-request time limit (504 after it).
        max_batch_images: Most images per model call; 1 disables micro-batching.
        max_wait_ms: Longest wait of an idle model for more requests to batch.
        max_queue_images: Images allowed to wait for the model before 503 ``overloaded``.
        decode_workers: Threads decoding uploaded images.
        index_poll_s: Check the index on disk for a newer generation this often (0: never;
            useful with several worker processes, where an admin write reaches one of them).
        admin_token: Bearer token of the admin endpoints; None disables them.
        score_token: Bearer token required by /v1/score; None leaves scoring open.
    """

    max_body_bytes: int = 20 * 1024 * 1024
    max_files: int = 16
    max_pixels: int | None = None
    request_timeout_s: float = 30.0
    max_batch_images: int = 32
    max_wait_ms: float = 5.0
    max_queue_images: int = 1024
    decode_workers: int = 2
    index_poll_s: float = 0.0
    admin_token: str | None = field(default=None, repr=False)
    score_token: str | None = field(default=None, repr=False)
    max_field_chars: int = 256

    def __post_init__(self) -> None:
        for name in (
            "max_body_bytes",
            "max_files",
            "max_batch_images",
            "max_queue_images",
            "decode_workers",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.request_timeout_s <= 0:
            raise ValueError(f"request_timeout_s must be > 0, got {self.request_timeout_s}")
        if self.max_wait_ms < 0 or self.index_poll_s < 0:
            raise ValueError("max_wait_ms and index_poll_s must be >= 0")


class ScoringBackend(Protocol):
    """What the service needs from a detector (:class:`~detector.scoring.Detector` has it)."""

    embedder: Any
    thresholds: Any
    config: Any

    @property
    def index(self) -> Any: ...

    @property
    def fingerprint(self) -> Any: ...

    def analyse_images(self, images: Sequence[Image.Image], names: Sequence[str]) -> list[Any]: ...

    def reload_index(self) -> bool: ...

    def close(self) -> None: ...


class ApiError(Exception):
    """An error answered as ``{"error": {"code", "message"}}`` (plus ``extra`` fields)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
        self.extra = extra or {}


@dataclass
class _State:
    settings: ServiceSettings
    metrics: ServiceMetrics
    detector: ScoringBackend | None = None
    load_error: str | None = None
    model_pool: ThreadPoolExecutor | None = None
    decode_pool: ThreadPoolExecutor | None = None
    admin_pool: ThreadPoolExecutor | None = None
    batcher: MicroBatcher[tuple[Image.Image, str], Any] | None = None
    admin_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    route_paths: frozenset[str] = frozenset()


# ---------------------------------------------------------------------- response models (OpenAPI)
class ErrorBody(BaseModel):
    code: str = Field(description="Stable machine-readable error code, e.g. 'invalid_image'.")
    message: str = Field(description="What went wrong and what to do about it.")


class ErrorResponse(BaseModel):
    error: ErrorBody


class MatchModel(BaseModel):
    ref_id: int
    brand: str
    kind: str
    product_id: str | None
    score: float
    source: str
    cosine: float
    inliers: int | None
    box: list[int] | None
    shape_iou: float | None = None
    logo_area: str | None = None
    mirrored: bool = False
    verified: bool = False


class VerdictModel(BaseModel):
    image: str = Field(description="The uploaded file name (or file<N>).")
    flagged: bool
    brand: str | None
    score: float | None
    threshold: float | None
    threshold_source: str | None
    matches: list[MatchModel]
    box: list[int] | None = Field(description="Evidence box (x0, y0, x1, y1) in the listing image.")
    error: str | None = Field(description="Set when this image could not be scored.")


class ScoreResponse(BaseModel):
    listing_id: str | None
    seller_id: str | None
    results: list[VerdictModel]


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"model": ErrorResponse} for s in statuses}


# ---------------------------------------------------------------------- ASGI middleware
class _LimitsMiddleware:
    """Body size limit, whole-request timeout and request metrics, for every HTTP request.

    Pure ASGI so that it sees the body stream: FastAPI would turn an exception raised while it
    reads the body into a 400, so an oversized body is remembered here and answered 413.
    """

    def __init__(self, app: ASGIApp, state: _State) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        settings, metrics = self.state.settings, self.state.metrics
        started_at = time.perf_counter()
        status_holder = {"status": 500, "started": False}
        limit = settings.max_body_bytes
        exceeded = False
        received = 0

        async def send_wrapper(message: Message) -> None:
            if exceeded:
                return  # the app's answer to a truncated body is replaced by our 413
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                status_holder["started"] = True
            await send(message)

        async def receive_wrapper() -> Message:
            nonlocal exceeded, received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise _BodyTooLarge()
            return message

        async def respond(error: ApiError) -> None:
            status_holder["status"] = error.status
            status_holder["started"] = True
            metrics.errors.labels(code=error.code).inc()
            response = _error_response(error)
            await response(scope, receive, send)

        try:
            declared = _content_length(scope)
            if declared is not None and declared > limit:
                await respond(_too_large(limit))
                return
            # Check tokens before the body is read: an unauthenticated client must not make us
            # parse megabytes of multipart (the route dependencies check again, and document it).
            area = _PROTECTED.get(scope["path"])
            if area is not None:
                headers = dict(scope.get("headers", []))
                raw = headers.get(b"authorization")
                denied = _auth_error(
                    self.state.settings, area == "admin", raw.decode("latin-1") if raw else None
                )
                if denied is not None:
                    await respond(denied)
                    return
            try:
                await asyncio.wait_for(
                    self.app(scope, receive_wrapper, send_wrapper), settings.request_timeout_s
                )
            except TimeoutError:
                if not status_holder["started"]:
                    await respond(
                        ApiError(
                            504,
                            "timeout",
                            f"request took longer than {settings.request_timeout_s:g} s",
                        )
                    )
            except Exception:
                if not exceeded:
                    raise
            if exceeded and not status_holder["started"]:
                await respond(_too_large(limit))
        finally:
            # Label by route template (bounded cardinality); requests answered here before routing
            # (401, 413) keep their path when it is a known route.
            route = getattr(scope.get("route"), "path", None)
            template = route or (
                scope["path"] if scope["path"] in self.state.route_paths else "unmatched"
            )
            metrics.requests.labels(
                method=scope["method"], route=template, status=str(status_holder["status"])
            ).inc()
            metrics.latency.labels(route=template).observe(time.perf_counter() - started_at)


class _BodyTooLarge(Exception):
    pass


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", []):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "body_too_large", f"request body is larger than {limit} bytes")


def _error_response(error: ApiError) -> JSONResponse:
    body = {"error": {"code": error.code, "message": error.message}, **error.extra}
    return JSONResponse(body, status_code=error.status, headers=error.headers)


# ---------------------------------------------------------------------- helpers
def _display_name(filename: str | None, position: int) -> str:
    """A client file name safe to echo: base name only, printable, bounded length."""
    if not filename:
        return f"file{position}"
    base = re.split(r"[\\/]", filename)[-1]
    base = "".join(ch for ch in base if unicodedata.category(ch)[0] != "C").strip()
    return base[:_MAX_NAME_CHARS] or f"file{position}"


def _check_text(value: str | None, name: str, limit: int) -> str | None:
    if value is None:
        return None
    if len(value) > limit:
        raise ApiError(422, "invalid_field", f"{name} is longer than {limit} characters")
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise ApiError(422, "invalid_field", f"{name} must not contain control characters")
    return value


def _check_file_count(files: list[UploadFile], settings: ServiceSettings) -> None:
    if not files:
        raise ApiError(422, "no_files", "send at least one image as multipart field 'files'")
    if len(files) > settings.max_files:
        raise ApiError(
            413,
            "too_many_files",
            f"{len(files)} files sent; at most {settings.max_files} per request",
        )


async def _read_uploads(files: list[UploadFile]) -> list[tuple[str, bytes]]:
    return [(_display_name(f.filename, i), await f.read()) for i, f in enumerate(files)]


def _decode(blobs: list[tuple[str, bytes]], max_pixels: int) -> list[Image.Image | ImageLoadError]:
    out: list[Image.Image | ImageLoadError] = []
    for name, data in blobs:
        try:
            out.append(load_image(data, name=name, max_pixels=max_pixels))
        except ImageLoadError as e:
            out.append(e)
    return out


def _index_summary(detector: ScoringBackend) -> dict[str, Any]:
    info = detector.index.info().to_dict()
    info.pop("path", None)  # no server paths in public answers
    return info


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
    state = _State(settings=settings, metrics=ServiceMetrics())
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
    app.add_middleware(_LimitsMiddleware, state=state)
    _install_error_handlers(app, state)
    _add_routes(app, state)
    state.route_paths = frozenset(getattr(r, "path", "") for r in app.routes)
    return app


async def _load(state: _State, load_detector: Callable[[], ScoringBackend]) -> None:
    loop = asyncio.get_running_loop()
    try:
        detector = await loop.run_in_executor(state.model_pool, load_detector)
    except Exception as e:  # any failure leaves the service alive but not ready, and says why
        log.exception("could not load the detector")
        state.load_error = f"{type(e).__name__}: {e}"
        return
    state.detector = detector
    _update_index_gauges(state)
    state.metrics.ready.set(1)
    log.info("detector ready: model %s", detector.fingerprint.preset)


async def _poll_index(state: _State) -> None:
    while True:
        await asyncio.sleep(state.settings.index_poll_s)
        if state.detector is None:
            continue
        try:
            async with state.admin_lock:
                await _in_pool(state.admin_pool, _reload, state)
        except Exception:
            log.exception("periodic index reload failed; keeping the loaded index")


def _run_batch(state: _State, items: list[tuple[Image.Image, str]]) -> list[Any]:
    assert state.detector is not None
    return state.detector.analyse_images([img for img, _ in items], [name for _, name in items])


def _observe_batch(state: _State) -> Callable[[int, float], None]:
    def observe(n_images: int, seconds: float) -> None:
        state.metrics.batch_size.observe(n_images)
        state.metrics.batch_seconds.observe(seconds)

    return observe


def _update_index_gauges(state: _State) -> None:
    if state.detector is None:
        return
    index = state.detector.index
    state.metrics.index_generation.set(getattr(index, "generation", 0))
    try:
        state.metrics.index_refs.set(index.info().count)
    except Exception:  # metrics must never break a reload
        log.exception("could not read index counts")


def _reload(state: _State) -> bool:
    assert state.detector is not None
    try:
        changed = state.detector.reload_index()
    except Exception:
        state.metrics.reloads.labels(result="failed").inc()
        raise
    state.metrics.reloads.labels(result="changed" if changed else "unchanged").inc()
    if changed:
        _update_index_gauges(state)
    return changed


async def _in_pool(pool: ThreadPoolExecutor | None, fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)


def _install_error_handlers(app: FastAPI, state: _State) -> None:
    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        state.metrics.errors.labels(code=exc.code).inc()
        return _error_response(exc)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        codes = {
            400: "bad_request",
            401: "unauthorized",
            403: "forbidden",
            404: "not_found",
            405: "method_not_allowed",
        }
        code = codes.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        if exc.status_code == 413:
            code = "body_too_large"
        return await api_error(
            request, ApiError(exc.status_code, code, message, headers=exc.headers)
        )

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query"))
            problems.append(
                f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg", "invalid"))
            )
        return await api_error(
            request, ApiError(422, "invalid_request", "; ".join(problems) or "invalid request")
        )

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return await api_error(
            request, ApiError(500, "internal_error", "internal error; see the server log")
        )

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected)


# OpenAPI security schemes (the check itself is _auth_error, which also runs before body parsing).
_ADMIN_BEARER = HTTPBearer(auto_error=False, scheme_name="AdminToken")
_SCORE_BEARER = HTTPBearer(auto_error=False, scheme_name="ScoreToken")

# Paths whose every method needs a token: "admin" (disabled without one) or "score" (open without one).
_PROTECTED = {"/v1/score": "score", "/v1/references": "admin", "/v1/reload": "admin"}


def _auth_error(
    settings: ServiceSettings, admin: bool, authorization: str | None
) -> ApiError | None:
    """The error to answer for this Authorization header, or None when the request may go on."""
    expected = settings.admin_token if admin else settings.score_token
    result = auth.check(authorization, expected, required=admin)
    if result is auth.AuthResult.OK:
        return None
    if result is auth.AuthResult.DISABLED:
        return ApiError(
            403,
            "admin_disabled",
            f"admin endpoints are disabled: set {auth.ADMIN_TOKEN_ENV} or --admin-token-file and restart",
        )
    if result is auth.AuthResult.MISSING:
        return ApiError(
            401,
            "unauthorized",
            "send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return ApiError(403, "forbidden", "the token is not valid for this endpoint")


def _auth_dependency(state: _State, *, admin: bool) -> Callable[..., Awaitable[None]]:
    async def require_admin(
        request: Request, _: Annotated[Any, Security(_ADMIN_BEARER)] = None
    ) -> None:
        error = _auth_error(state.settings, True, request.headers.get("authorization"))
        if error is not None:
            raise error

    async def require_score(
        request: Request, _: Annotated[Any, Security(_SCORE_BEARER)] = None
    ) -> None:
        error = _auth_error(state.settings, False, request.headers.get("authorization"))
        if error is not None:
            raise error

    # Two functions (not one closure over the scheme) so that the annotations resolve at module
    # level and OpenAPI lists the two tokens separately.
    return require_admin if admin else require_score


def _ready_detector(state: _State) -> ScoringBackend:
    if state.detector is None:
        if state.load_error:
            raise ApiError(
                503, "load_failed", f"the detector could not be loaded: {state.load_error}"
            )
        raise ApiError(
            503,
            "not_ready",
            "the model and index are still loading; retry shortly",
            headers={"Retry-After": "1"},
        )
    return state.detector


def _add_routes(app: FastAPI, state: _State) -> None:
    settings = state.settings
    require_score = _auth_dependency(state, admin=False)
    require_admin = _auth_dependency(state, admin=True)

    @app.get("/healthz", tags=["ops"], summary="Process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], summary="Model and index are loaded", responses=_errors(503))
    async def readyz() -> dict[str, Any]:
        detector = _ready_detector(state)
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
        responses=_errors(503),
    )
    async def info() -> dict[str, Any]:
        detector = _ready_detector(state)
        index = await _in_pool(state.admin_pool, _index_summary, detector)
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
        responses=_errors(401, 403, 413, 422, 503, 504),
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
        detector = _ready_detector(state)
        listing_id = _check_text(listing_id, "listing_id", settings.max_field_chars)
        seller_id = _check_text(seller_id, "seller_id", settings.max_field_chars)
        _check_file_count(files, settings)
        max_pixels = settings.max_pixels or detector.config.max_pixels
        blobs: list[tuple[str, bytes]] = []
        decoded: list[Image.Image | ImageLoadError] = []

        async def prepare() -> list[tuple[Image.Image, str]]:
            blobs.extend(await _read_uploads(files))
            decoded.extend(await _in_pool(state.decode_pool, _decode, blobs, max_pixels))
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
        responses=_errors(401, 403, 409, 413, 422, 503),
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
        detector = _ready_detector(state)
        brand = (_check_text(brand, "brand", settings.max_field_chars) or "").strip()
        if not brand:
            raise ApiError(422, "invalid_field", "brand must not be empty")
        if kind not in KINDS:
            raise ApiError(
                422, "invalid_field", f"kind must be one of {', '.join(KINDS)}, got {kind!r}"
            )
        product_id = _check_text(product_id, "product_id", settings.max_field_chars)
        _check_file_count(files, settings)
        blobs = await _read_uploads(files)
        async with state.admin_lock:
            # The add embeds images: it runs on the model thread, between scoring batches.
            # Shielded so a request timeout never abandons a half-done index write.
            job = _in_pool(
                state.model_pool, _add_references, detector, blobs, brand, kind, product_id
            )
            try:
                report = await asyncio.shield(job)
            except IndexLockedError as e:
                raise ApiError(409, "index_locked", str(e)) from e
            except (IndexStoreError, DetectorError) as e:
                raise ApiError(409, "index_error", str(e)) from e
            await _in_pool(state.admin_pool, _reload, state)
        report["generation"] = getattr(detector.index, "generation", None)
        return report

    @app.delete(
        "/v1/references",
        tags=["admin"],
        summary="Remove references by brand, ref_id or product_id",
        responses=_errors(401, 403, 409, 422, 503),
        dependencies=[Depends(require_admin)],
    )
    async def remove_references(
        brand: Annotated[str | None, Query()] = None,
        ref_id: Annotated[list[int] | None, Query(description="Repeatable.")] = None,
        product_id: Annotated[str | None, Query()] = None,
    ) -> dict[str, Any]:
        """Withdraw references (exactly one selector); the index swaps atomically."""
        detector = _ready_detector(state)
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
            job = _in_pool(
                state.admin_pool, _remove_references, detector, brand, ref_id, product_id
            )
            try:
                removed = await asyncio.shield(job)
            except IndexLockedError as e:
                raise ApiError(409, "index_locked", str(e)) from e
            except IndexStoreError as e:
                raise ApiError(409, "index_error", str(e)) from e
            await _in_pool(state.admin_pool, _reload, state)
        return {"removed": removed, "generation": getattr(detector.index, "generation", None)}

    @app.post(
        "/v1/reload",
        tags=["admin"],
        summary="Pick up an index changed on disk",
        responses=_errors(401, 403, 409, 503),
        dependencies=[Depends(require_admin)],
    )
    async def reload() -> dict[str, Any]:
        detector = _ready_detector(state)
        async with state.admin_lock:
            try:
                changed = await _in_pool(state.admin_pool, _reload, state)
            except (IndexStoreError, DetectorError) as e:
                raise ApiError(409, "reload_failed", f"kept the loaded index: {e}") from e
        return {"reloaded": changed, "generation": getattr(detector.index, "generation", None)}


def _count_verdict(state: _State, verdict: Verdict) -> None:
    if verdict.error is not None:
        state.metrics.images.labels(outcome="error").inc()
        return
    outcome = "flagged" if verdict.flagged else "clean"
    state.metrics.images.labels(outcome=outcome).inc()
    if verdict.flagged and verdict.brand is not None:
        state.metrics.flags.labels(brand=verdict.brand).inc()


# ---------------------------------------------------------------------- admin jobs (worker threads)
def _safe_suffix(name: str) -> str:
    suffix = Path(name).suffix.lower()
    return suffix if suffix in IMAGE_EXTENSIONS else ".img"


def _open_writable(detector: ScoringBackend) -> Any:
    from index.store import ReferenceIndex

    return ReferenceIndex.open(
        detector.index.path,
        writable=True,
        fingerprint=detector.fingerprint,
        lock_timeout=_LOCK_WAIT_S,
    )


def _add_references(
    detector: ScoringBackend,
    blobs: list[tuple[str, bytes]],
    brand: str,
    kind: str,
    product_id: str | None,
) -> dict[str, Any]:
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


def _remove_references(
    detector: ScoringBackend, brand: str | None, ref_ids: list[int] | None, product_id: str | None
) -> int:
    with _open_writable(detector) as index:
        return int(index.remove(ref_ids=ref_ids, brand=brand, product_id=product_id))
