"""The review portal's pages under ``/review``: the queue, an item, decisions, images and the
analyst's overview. Login and sessions are :mod:`detector.review.web_session`.

Isolation: every item is read through :meth:`ReviewStore.item` with the logged-in principal,
so a brand user asking for another brand's item (its page, its images or a decision on it)
gets 404, the same answer as for a missing item.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from detector.review.models import ITEM_KINDS, STATUSES
from detector.review.pages import STATIC_DIR, Pages
from detector.review.reasons import verdict_reasons
from detector.review.stats import brand_stats
from detector.review.store import ORDERS, QueueFilter, ReviewStore
from detector.review.users import Principal
from detector.review.web_session import CSRF_HEADER, csrf_ok, current, login_router, with_headers

Session = tuple[Principal, str]


def add_review_portal(app: FastAPI, store: ReviewStore) -> None:
    """Mount the portal (pages, static files) on ``app`` under ``/review``."""
    pages = Pages()
    app.include_router(login_router(store, pages))
    app.include_router(portal_router(store, pages))
    app.mount("/review/static", StaticFiles(directory=STATIC_DIR), name="review-static")


def portal_router(store: ReviewStore, pages: Pages) -> APIRouter:
    router = APIRouter()

    def not_found(request: Request, session: Session) -> Response:
        return pages.error(request, session, 404, "No such item.")

    @router.get("/review", include_in_schema=False)
    def home(request: Request) -> Response:
        session = current(store, request)
        if session is None:
            return with_headers(RedirectResponse("/review/login", status_code=303))
        target = "/review/overview" if session[0].is_analyst else "/review/queue"
        return with_headers(RedirectResponse(target, status_code=303))

    @router.get("/review/queue", include_in_schema=False)
    def queue(request: Request, brand: str | None = None, status: str | None = "pending",
              kind: str | None = None, min_score: str | None = None, max_score: str | None = None,
              since: str | None = None, until: str | None = None, order: str = "newest",
              page: int = 1) -> Response:
        session = current(store, request)
        if session is None:
            return with_headers(RedirectResponse("/review/login", status_code=303))
        who = session[0]
        flt = QueueFilter(
            brand=(brand or None) if who.is_analyst else who.brand,
            status=status if status in STATUSES else None,
            kind=kind if kind in ITEM_KINDS else None,
            min_score=_number(min_score), max_score=_number(max_score),
            since=_date(since), until=_date(until, next_day=True),
            order=order if order in ORDERS else "newest",
        )
        result = store.queue(who, flt, page=page)
        raw = {"min_score": min_score, "max_score": max_score, "since": since, "until": until}
        query = {"brand": brand if who.is_analyst else None, "status": status or "", "kind": kind,
                 "order": order, **raw}
        return pages.render("queue.html", request, session, page=result, flt=flt,
                            query={k: v for k, v in query.items() if v is not None},
                            brands=store.brands(who), statuses=STATUSES, kinds=ITEM_KINDS, orders=ORDERS,
                            raw={k: v or "" for k, v in raw.items()})

    @router.get("/review/items/{item_id}", include_in_schema=False)
    def item_page(request: Request, item_id: int) -> Response:
        session = current(store, request)
        if session is None:
            return with_headers(RedirectResponse("/review/login", status_code=303))
        item = store.item(session[0], item_id)
        if item is None:
            return not_found(request, session)
        refs = [(m, item.reference_blobs.get(str(m["ref_id"]))) for m in item.matches
                if m.get("brand") == item.brand]
        box = _box_percent(item.box, item.image_width, item.image_height)
        return pages.render("item.html", request, session, item=item, refs=refs, box=box,
                            reasons=verdict_reasons(item), history=store.history(session[0], item_id))

    @router.post("/review/items/{item_id}/decision", include_in_schema=False)
    def decide(request: Request, item_id: int, decision: Annotated[str, Form()] = "",
               note: Annotated[str | None, Form()] = None,
               csrf: Annotated[str | None, Form()] = None) -> Response:
        session = current(store, request)
        if session is None:
            return pages.error(request, None, 401, "Log in first.")
        if not csrf_ok(session[1], csrf or request.headers.get(CSRF_HEADER)):
            return pages.error(request, session, 403, "Missing or wrong CSRF token; reload the page.")
        try:
            row = store.decide(session[0], item_id, decision, note)
        except ValueError as e:
            return pages.error(request, session, 422, str(e))
        if row is None:
            return not_found(request, session)
        next_id = store.next_pending(session[0], item_id, brand=row.brand)
        target = f"/review/items/{next_id}" if next_id is not None else "/review/queue"
        return with_headers(RedirectResponse(target, status_code=303))

    @router.get("/review/items/{item_id}/image", include_in_schema=False)
    def listing_image(request: Request, item_id: int) -> Response:
        session = current(store, request)
        item = store.item(session[0], item_id) if session else None
        path = store.image_file(item.image_blob) if item else None
        if path is None:
            return Response(status_code=404)
        return with_headers(FileResponse(path))

    @router.get("/review/items/{item_id}/references/{ref_id}", include_in_schema=False)
    def reference_image(request: Request, item_id: int, ref_id: int) -> Response:
        session = current(store, request)
        item = store.item(session[0], item_id) if session else None
        path = store.image_file(item.reference_blobs.get(str(ref_id))) if item else None
        if path is None:
            return Response(status_code=404)
        return with_headers(FileResponse(path))

    @router.get("/review/overview", include_in_schema=False)
    def overview(request: Request) -> Response:
        session = current(store, request)
        if session is None:
            return with_headers(RedirectResponse("/review/login", status_code=303))
        if not session[0].is_analyst:
            return pages.error(request, session, 404, "Not found.")
        return pages.render("overview.html", request, session, stats=brand_stats(store))

    return router


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def _date(text: str | None, *, next_day: bool = False) -> datetime | None:
    try:
        day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC) if text else None
    except ValueError:
        return None
    return day + timedelta(days=1) if day is not None and next_day else day


def _box_percent(box: list[int] | None, width: int | None, height: int | None) -> dict[str, int] | None:
    """The evidence box for the SVG drawn over the photo (in the original image's pixels)."""
    if not box or not width or not height:
        return None
    x0, y0, x1, y1 = (int(v) for v in box)
    return {"w": width, "h": height, "x": x0, "y": y0, "bw": max(1, x1 - x0), "bh": max(1, y1 - y0)}
