"""The portal's browser sessions over HTTP: cookies, CSRF checks, security headers, login and
logout routes.

* Session cookie ``review_session``: HttpOnly, SameSite=Strict, path ``/review``, Secure unless
  the page is served over plain HTTP to a loopback host (local use and tests).
* CSRF: every POST carries the session's token (form field ``csrf`` or header
  ``X-CSRF-Token``); the login form, before any session exists, uses a double-submit cookie.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from detector.review.pages import Pages
from detector.review.store import ReviewStore
from detector.review.users import (
    Principal,
    authenticate,
    end_session,
    session_principal,
    start_session,
)

SESSION_COOKIE = "review_session"
LOGIN_CSRF_COOKIE = "review_login_csrf"
CSRF_HEADER = "x-csrf-token"
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "testserver"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' https: data:; "
                               "script-src 'self'; style-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def secure_cookies(request: Request) -> bool:
    return request.url.scheme == "https" or (request.url.hostname or "") not in _LOOPBACK


def set_cookie(response: Response, request: Request, name: str, value: str, max_age: int | None = None) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/review", httponly=True,
                        samesite="strict", secure=secure_cookies(request))


def current(store: ReviewStore, request: Request) -> tuple[Principal, str] | None:
    """The logged-in user and the session's CSRF token, or None."""
    with store.session() as db:
        return session_principal(db, request.cookies.get(SESSION_COOKIE))


def csrf_ok(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), given.encode())  # type: ignore[union-attr]


def with_headers(response: Response) -> Response:
    for key, value in SECURITY_HEADERS.items():
        response.headers.setdefault(key, value)
    return response


def login_router(store: ReviewStore, pages: Pages) -> APIRouter:
    router = APIRouter()

    def login_page(request: Request, error: str | None = None, status: int = 200) -> Response:
        token = secrets.token_urlsafe(32)
        response = pages.render("login.html", request, None, status=status, csrf=token, error=error)
        set_cookie(response, request, LOGIN_CSRF_COOKIE, token, max_age=3600)
        return response

    @router.get("/review/login", response_class=HTMLResponse, include_in_schema=False)
    def login_form(request: Request) -> Response:
        return login_page(request)

    @router.post("/review/login", include_in_schema=False)
    def login(request: Request, token: Annotated[str, Form()] = "",
              csrf: Annotated[str | None, Form()] = None) -> Response:
        cookie = request.cookies.get(LOGIN_CSRF_COOKIE)
        if not cookie or not csrf_ok(cookie, csrf):
            return pages.error(request, None, 403, "The form expired or was not sent from this site; reload it.")
        with store.session() as db:
            who = authenticate(db, token)
            if who is None:
                return login_page(request, "That token is not valid.", status=401)
            session_id, _ = start_session(db, who)
        response = RedirectResponse("/review", status_code=303)
        set_cookie(response, request, SESSION_COOKIE, session_id)
        response.delete_cookie(LOGIN_CSRF_COOKIE, path="/review")
        return with_headers(response)

    @router.post("/review/logout", include_in_schema=False)
    def logout(request: Request, csrf: Annotated[str | None, Form()] = None) -> Response:
        session = current(store, request)
        if session is None:
            return with_headers(RedirectResponse("/review/login", status_code=303))
        if not csrf_ok(session[1], csrf or request.headers.get(CSRF_HEADER)):
            return pages.error(request, session, 403, "Missing or wrong CSRF token.")
        with store.session() as db:
            end_session(db, request.cookies.get(SESSION_COOKIE))
        response = RedirectResponse("/review/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/review")
        return with_headers(response)

    return router
