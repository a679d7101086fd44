"""Pages: login and logout, the dashboard, message trace search and one message's hops."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from mxflow.store.trace import STATUSES
from mxflow.store.trace_query import TraceQuery, parse_when, search, show
from mxflow.web import auth
from mxflow.web.render import error_page, page
from mxflow.web.stats import VERDICTS, chart_svg, dashboard

_QUARANTINE_ID = re.compile(r"quarantine id ([0-9a-f]+)")


def _safe_next(target: str) -> str:
    """Only a local path: never redirect a login to another site."""
    local = target.startswith("/") and not target.startswith(("//", "/\\"))
    return target if local else "/"


async def login_form(request: Request) -> Response:
    token = auth.new_login_token()
    target = _safe_next(request.query_params.get("next", "/"))
    response = page(request, None, "login.html", {"login_token": token, "next": target})
    auth.set_cookie(request, response, auth.LOGIN_COOKIE, token, 1800)
    return response


async def login(request: Request) -> Response:
    form = await request.form()
    name, password = str(form.get("username", "")), str(form.get("password", ""))
    cookie = request.cookies.get(auth.LOGIN_COOKIE, "")
    if not cookie or not secrets.compare_digest(cookie, str(form.get("login_token", ""))):
        return error_page(request, None, 400, "The login form was stale or forged; try again.")
    accounts = auth.accounts(request)
    keys = (f"ip:{auth.client_ip(request)}", f"user:{name.lower()}")
    wait = accounts.throttle.retry_after(*keys)
    if wait > 0:
        text = f"Too many failed logins. Try again in {int(wait // 60) + 1} minute(s)."
        return _login_again(request, text, 429)
    user = await asyncio.to_thread(accounts.authenticate, name, password)
    if user is None:
        accounts.throttle.failed(*keys)
        return _login_again(request, "Wrong user name or password.", 401)
    accounts.throttle.succeeded(*keys)
    token, session = accounts.open_session(user)
    target = _safe_next(str(form.get("next", "/")))
    if target == "/" and not user.is_admin:
        target = "/trace"
    response = RedirectResponse(target, status_code=303)
    lifetime = int(session.expires - time.time())
    auth.set_cookie(request, response, auth.COOKIE, token, lifetime)
    response.delete_cookie(auth.LOGIN_COOKIE, path="/")
    return response


def _login_again(request: Request, text: str, status: int) -> Response:
    token = auth.new_login_token()
    response = page(
        request, None, "login.html", {"login_token": token, "error": text, "next": "/"}, status
    )
    auth.set_cookie(request, response, auth.LOGIN_COOKIE, token, 1800)
    return response


async def logout(request: Request) -> Response:
    await auth.require_post(request)
    auth.accounts(request).close_session(request.cookies.get(auth.COOKIE, ""))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(auth.COOKIE, path="/")
    return response


async def home(request: Request) -> Response:
    session = auth.require(request)
    if not session.user.is_admin:
        return RedirectResponse("/trace", status_code=303)
    state = request.app.state
    board = await asyncio.to_thread(dashboard, state.trace.database, state.quarantine)
    depth = await asyncio.to_thread(_queue_depth, state)
    context = {
        "board": board,
        "chart": chart_svg(board),
        "verdicts": VERDICTS,
        "queue_depth": depth,
        "held": len(state.quarantine.list()) if state.quarantine is not None else None,
    }
    return page(request, session, "dashboard.html", context)


def _queue_depth(state: Any) -> int:
    return len(state.spool.ids())  # messages, not the spool's preallocated empty files


def _query(params: Any) -> tuple[TraceQuery, str]:
    """The search form's fields as a TraceQuery, and an error to show (or '')."""
    q = TraceQuery(
        sender=params.get("sender", "").strip(),
        recipient=params.get("recipient", "").strip(),
        status=params.get("status", "") if params.get("status", "") in STATUSES else "",
        message_id=params.get("message_id", "").strip(),
        limit=200,
    )
    try:
        q.since = parse_when(params["since"]) if params.get("since") else parse_when("2d")
        q.until = parse_when(params["until"]) if params.get("until") else None
    except ValueError as exc:
        return q, str(exc)
    return q, ""


async def trace_search(request: Request) -> Response:
    session = auth.require(request)
    q, problem = _query(request.query_params)
    rows = []
    if not problem:
        db = request.app.state.trace.database  # the node's file, or PostgreSQL: every node
        rows = await asyncio.to_thread(search, db, q, domains=session.user.scope())
    context = {
        "rows": rows,
        "form": dict(request.query_params),
        "statuses": STATUSES,
        "problem": problem,
        "quote": quote,
    }
    return page(request, session, "trace.html", context)


async def trace_message(request: Request) -> Response:
    session = auth.require(request)
    trace_id = request.query_params.get("id", "")
    db = request.app.state.trace.database
    found = None
    if trace_id:
        found = await asyncio.to_thread(show, db, trace_id, domains=session.user.scope())
    if found is None:
        return error_page(request, session, 404, f"No message {trace_id!r} in the trace.")
    return page(request, session, "message.html", {"trace": found, "held_id": _held_id})


def _held_id(detail: str) -> str:
    """The quarantine id a trace event names ("quarantine id X..."), for a link."""
    match = _QUARANTINE_ID.search(detail)
    return match.group(1) if match else ""
