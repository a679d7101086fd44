"""Administrator pages: the queue (list, retry, delete), connectors, DNS health.

Queue actions are the spool's control requests, the same as `mxflow queue retry|delete`:
the running node carries them out within a second. DNS health runs `records.check` for
every accepted domain through the node's own resolver (`[dns] resolver`); a node without
one says so instead of asking some other resolver.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from mxflow.errors import MxflowError
from mxflow.queue.spool import SpoolError
from mxflow.web import auth
from mxflow.web.render import error_page, page

DNS_TIMEOUT = 8.0


def _queue_rows(spool: Any) -> list[dict[str, Any]]:
    rows = []
    for queue_id in spool.ids()[:500]:
        try:
            env = spool.load_envelope(queue_id)
            state = spool.load_state(queue_id, env)
        except (OSError, SpoolError):
            continue  # delivered meanwhile
        path = spool.queue / queue_id
        rows.append(
            {
                "id": queue_id,
                "sender": env.mail_from,
                "recipients": env.rcpt_tos,
                "pending": state.pending(),
                "received": env.received_at,
                "age": time.time() - env.received_at,
                "next": state.next_attempt,
                "attempts": state.attempts,
                "size": path.stat().st_size if path.exists() else 0,
                "last": next((r.reply for r in state.rcpts.values() if r.reply), ""),
            }
        )
    return rows


async def queue_list(request: Request) -> Response:
    session = auth.require(request, admin=True)
    rows = await asyncio.to_thread(_queue_rows, request.app.state.spool)
    return page(request, session, "queue.html", {"rows": rows})


async def queue_action(request: Request) -> Response:
    await auth.require_post(request, admin=True)
    queue_id, action = request.path_params["queue_id"], request.path_params["action"]
    spool = request.app.state.spool
    if action not in ("retry", "delete") or not spool.valid_id(queue_id):
        return RedirectResponse("/queue?error=no+such+message+or+action", status_code=303)
    spool.request(queue_id, action)
    verb = "retried" if action == "retry" else "deleted"
    done = f"Message {queue_id} will be {verb} within a second."
    return RedirectResponse(f"/queue?done={quote(done)}", status_code=303)


async def connectors(request: Request) -> Response:
    session = auth.require(request, admin=True)
    config = request.app.state.config
    return page(
        request,
        session,
        "connectors.html",
        {
            "inbound": config.inbound_connectors,
            "routes": config.routes,
            "listeners": config.listeners,
            "domains": config.accepted_domains,
            "blocked": request.app.state.accounts.blocked_senders(),
        },
    )


async def _check(domain: str, resolver: Any) -> dict[str, Any]:
    from mxflow.records.check import check_domain

    try:
        result = await asyncio.wait_for(check_domain(domain, resolver), DNS_TIMEOUT)
    except (MxflowError, TimeoutError) as exc:
        return {"domain": domain, "error": str(exc) or "timed out", "result": None}
    return {"domain": domain, "error": "", "result": result}


async def dns_health(request: Request) -> Response:
    session = auth.require(request, admin=True)
    config = request.app.state.config
    checks: list[dict[str, Any]] = []
    if config.dns_resolver:
        from mxflow.dns.resolver import resolver_from_endpoint

        resolver = resolver_from_endpoint(config.dns_resolver)
        domains = [d.domain for d in config.accepted_domains]
        checks = list(await asyncio.gather(*(_check(d, resolver) for d in domains)))
    context = {"resolver": config.dns_resolver, "checks": checks}
    return page(request, session, "dns.html", context)


async def not_found(request: Request, exc: Exception) -> Response:
    return error_page(request, auth.session(request), 404, "There is no such page.")
