"""ASGI middleware for every HTTP request: body size limit, tokens before the body, timeout and
request metrics."""

from __future__ import annotations

import asyncio
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from detector.service.errors import ApiError, error_response
from detector.service.http_auth import PROTECTED, auth_error
from detector.service.state import ServiceState


class LimitsMiddleware:
    """Body size limit, whole-request timeout and request metrics, for every HTTP request.

    Pure ASGI so that it sees the body stream: FastAPI would turn an exception raised while it
    reads the body into a 400, so an oversized body is remembered here and answered 413.
    """

    def __init__(self, app: ASGIApp, state: ServiceState) -> None:
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
            response = error_response(error)
            await response(scope, receive, send)

        try:
            declared = _content_length(scope)
            if declared is not None and declared > limit:
                await respond(_too_large(limit))
                return
            # Check tokens before the body is read: an unauthenticated client must not make us
            # parse megabytes of multipart (the route dependencies check again, and document it).
            area = PROTECTED.get(scope["path"])
            if area is not None:
                headers = dict(scope.get("headers", []))
                raw = headers.get(b"authorization")
                denied = auth_error(
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
