"""Error answers: :class:`ApiError` and the handlers that answer every failure alike.

Every error, whatever raised it, is answered ``{"error": {"code": ..., "message": ...}}``
and counted in ``counterfeit_http_errors_total`` by code.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from detector.service.metrics import ServiceMetrics

log = logging.getLogger(__name__)

# Codes of the errors FastAPI/Starlette raise themselves (routing, methods, bad requests).
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
}


class ApiError(Exception):
    """An error answered as ``{"error": {"code", "message"}}`` (plus ``extra`` fields)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
        self.extra = extra or {}


def error_response(error: ApiError) -> JSONResponse:
    """The JSON answer of ``error``."""
    body = {"error": {"code": error.code, "message": error.message}, **error.extra}
    return JSONResponse(body, status_code=error.status, headers=error.headers)


def install_error_handlers(app: FastAPI, metrics: ServiceMetrics) -> None:
    """Answer ApiError, HTTP and validation errors and any unexpected exception as JSON."""

    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        metrics.errors.labels(code=exc.code).inc()
        return error_response(exc)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = _HTTP_CODES.get(exc.status_code, "http_error")
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
