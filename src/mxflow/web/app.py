"""The admin UI as an ASGI app (Starlette): `create_app(config)`, served by `mxflow web`.

It sits on top of everything: it reads the node's trace store and quarantine, writes to the
node's spool (release, queue control) and its own account store, and never needs the node
process itself — so it runs beside `mxflow serve`, as a separate process. Every response
carries a strict Content-Security-Policy (no script at all, styles and images from this app
only), and nothing on any page comes from another host.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mxflow.config import NodeConfig
from mxflow.web import admin_views, digest_views, quarantine_views, views
from mxflow.web.accounts import Accounts
from mxflow.web.auth import Denied

log = logging.getLogger("mxflow.web")
_HERE = Path(__file__).resolve().parent
HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        b"frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]


class SecurityHeaders:
    """Add HEADERS to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], *HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


async def _denied(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Denied)
    return exc.response


class _Trainer:
    """The node's spam trainer, built on first use (loading the model takes a moment)."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self._trainer: Any = None

    def __call__(self) -> Any:
        if self._trainer is None:
            from mxflow.checks.node import node_trainer

            self._trainer = node_trainer(self.config)
        return self._trainer


def _routes() -> list[Route | Mount]:
    q = quarantine_views
    return [
        Route("/", views.home),
        Route("/login", views.login_form, methods=["GET"]),
        Route("/login", views.login, methods=["POST"]),
        Route("/logout", views.logout, methods=["POST"]),
        Route("/trace", views.trace_search),
        Route("/trace/message", views.trace_message),
        Route("/quarantine", q.quarantine_list),
        Route("/quarantine/{qid:str}", q.quarantine_item),
        Route("/quarantine/{qid:str}/{action:str}", q.quarantine_action, methods=["POST"]),
        Route("/queue", admin_views.queue_list),
        Route("/queue/{queue_id:str}/{action:str}", admin_views.queue_action, methods=["POST"]),
        Route("/connectors", admin_views.connectors),
        Route("/dns", admin_views.dns_health),
        Route("/q/{token:str}", digest_views.digest_link, methods=["GET"]),
        Route("/q/{token:str}", digest_views.digest_act, methods=["POST"]),
        Mount("/static", StaticFiles(directory=_HERE / "static"), name="static"),
    ]


async def _digest_loop(state: Any, interval: float) -> None:
    """Send quarantine digests every `interval` seconds (`[web] digest_interval`)."""
    from mxflow.web.digest import send_digests

    while True:
        await asyncio.sleep(interval)
        try:
            sent = await send_digests(state, state.config.web.public_url)
            log.info("quarantine digests sent: %d", sent)
        except Exception:  # the next round tries again
            log.exception("quarantine digests failed")


def create_app(config: NodeConfig) -> Starlette:
    """The UI of the node `config` describes (its trace, quarantine, spool, accounts)."""
    accounts = Accounts(
        config.web.users_db or config.data_dir / "web.sqlite",
        lifetime=config.web.session_lifetime,
        idle=config.web.idle_timeout,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        from mxflow.queue.spool import Spool
        from mxflow.roles.build import open_shared_database
        from mxflow.store.trace import TraceStore

        state = app.state
        # with a PostgreSQL [store] url: every node's trace and the shared quarantine
        database = await asyncio.to_thread(open_shared_database, config)
        state.trace = TraceStore(database or config.trace_db, node=config.name)
        state.spool = Spool(config.spool_dir, fsync=config.server.fsync)
        state.quarantine = None
        if config.filter is not None:
            from mxflow.checks.node import node_quarantine

            state.quarantine = node_quarantine(config, state.trace, database)
        digests = None
        if config.web.digest_interval and state.quarantine is not None:
            digests = asyncio.create_task(_digest_loop(state, config.web.digest_interval))
        try:
            yield
        finally:
            if digests is not None:
                digests.cancel()
                await asyncio.gather(digests, return_exceptions=True)
            state.spool.close()
            await asyncio.to_thread(state.trace.close)
            if database is not None:
                await database.aclose()

    app = Starlette(
        routes=_routes(),
        lifespan=lifespan,
        exception_handlers={Denied: _denied, 404: admin_views.not_found},
    )
    app.state.config = config
    app.state.accounts = accounts
    app.state.trainer = _Trainer(config)
    app.add_middleware(SecurityHeaders)
    return app
