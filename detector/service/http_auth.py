"""Bearer tokens over HTTP: which paths need one, the error to answer, the route dependencies.

The token logic itself is :mod:`detector.service.auth`; the limits middleware checks tokens
before a body is read, and the route dependencies check again so that OpenAPI documents them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Request, Security
from fastapi.security import HTTPBearer

from detector.service import auth
from detector.service.errors import ApiError
from detector.service.settings import ServiceSettings

# OpenAPI security schemes (the check itself is auth_error, which also runs before body parsing).
_ADMIN_BEARER = HTTPBearer(auto_error=False, scheme_name="AdminToken")
_SCORE_BEARER = HTTPBearer(auto_error=False, scheme_name="ScoreToken")

# Paths whose every method needs a token: "admin" (disabled without one) or "score" (open
# without one).
PROTECTED = {"/v1/score": "score", "/v1/references": "admin", "/v1/reload": "admin"}


def auth_error(
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
            f"admin endpoints are disabled: set {auth.ADMIN_TOKEN_ENV} or --admin-token-file"
            " and restart",
        )
    if result is auth.AuthResult.MISSING:
        return ApiError(
            401,
            "unauthorized",
            "send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return ApiError(403, "forbidden", "the token is not valid for this endpoint")


def auth_dependency(settings: ServiceSettings, *, admin: bool) -> Callable[..., Awaitable[None]]:
    """A route dependency that requires the admin (or scoring) token."""

    async def require_admin(
        request: Request, _: Annotated[Any, Security(_ADMIN_BEARER)] = None
    ) -> None:
        error = auth_error(settings, True, request.headers.get("authorization"))
        if error is not None:
            raise error

    async def require_score(
        request: Request, _: Annotated[Any, Security(_SCORE_BEARER)] = None
    ) -> None:
        error = auth_error(settings, False, request.headers.get("authorization"))
        if error is not None:
            raise error

    # Two functions (not one closure over the scheme) so that the annotations resolve at module
    # level and OpenAPI lists the two tokens separately.
    return require_admin if admin else require_score
