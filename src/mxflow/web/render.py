"""Rendering pages: one Jinja2 environment (autoescaping everything), shared filters.

Message content is only ever shown as escaped text: a message's HTML is never rendered,
its headers and text parts are printed inside <pre>, and the page's Content-Security-Policy
forbids scripts and remote resources besides.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.templating import Jinja2Templates

from mxflow.web.accounts import Session

_HERE = Path(__file__).resolve().parent
STATUS_CLASS = {
    "Delivered": "ok",
    "FilteredAsSpam": "warn",
    "Pending": "info",
    "Quarantined": "warn",
    "Failed": "bad",
    "Expanded": "info",
}


def _when(ts: float | None) -> str:
    if not ts:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def _size(n: int | None) -> str:
    n = int(n or 0)
    for unit in ("B", "KB", "MB"):
        if n < 1024:
            return f"{n} {unit}"
        n //= 1024
    return f"{n} GB"


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_HERE / "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["size"] = _size
    env.globals["status_class"] = lambda s: STATUS_CLASS.get(s, "info")
    return env


TEMPLATES = Jinja2Templates(env=_env())


def page(
    request: Request,
    session: Session | None,
    name: str,
    context: dict[str, Any] | None = None,
    status: int = 200,
) -> HTMLResponse:
    ctx: dict[str, Any] = {
        "user": session.user if session else None,
        "csrf": session.csrf if session else "",
        "node": request.app.state.config.name,
        "path": request.url.path,
        "flash": request.query_params.get("done", ""),
        "flash_error": request.query_params.get("error", ""),
    }
    ctx.update(context or {})
    response: HTMLResponse = TEMPLATES.TemplateResponse(request, name, ctx, status_code=status)
    return response


def error_page(request: Request, session: Session | None, status: int, text: str) -> HTMLResponse:
    return page(request, session, "error.html", {"status": status, "text": text}, status)
