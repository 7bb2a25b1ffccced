"""Rendering the portal's pages: the Jinja2 templates shipped in ``templates/``."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from detector.review.users import Principal

TEMPLATES_DIR = Path(__file__).with_name("templates")
STATIC_DIR = Path(__file__).with_name("static")


class Pages:
    def __init__(self) -> None:
        self.env = Environment(loader=FileSystemLoader(TEMPLATES_DIR),
                               autoescape=select_autoescape(["html"]))
        self.env.filters["when"] = _when
        self.env.filters["pct"] = lambda x: "–" if x is None else f"{100 * x:.0f}%"

    def render(self, name: str, request: Request, session: tuple[Principal, str] | None, *,
               status: int = 200, **context: Any) -> HTMLResponse:
        from detector.review.web_session import with_headers

        who, csrf = session if session else (None, context.pop("csrf", None))
        html = self.env.get_template(name).render(request=request, who=who, csrf=csrf, **context)
        return with_headers(HTMLResponse(html, status_code=status))  # type: ignore[return-value]

    def error(self, request: Request, session: tuple[Principal, str] | None, status: int,
              message: str) -> HTMLResponse:
        return self.render("error.html", request, session, status=status, status_code=status, message=message)


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else ""
