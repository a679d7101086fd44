"""Quarantine pages: the list, a safe preview, and the actions.

Release goes into the node's spool (`release_into_spool`: not filtered again, traced under
the same Message-ID, picked up by the running node within a second). "Not spam" releases
and trains the filter with it as ham; "report as spam" trains it as spam and deletes the
message. Malware is released only by an administrator; a domain administrator acts only on
messages whose recipients are all in their domains.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from mxflow.checks.lists import add_blocked_sender
from mxflow.checks.node import node_policy
from mxflow.store.quarantine import QuarantineEntry, QuarantineError, release_into_spool
from mxflow.web import auth
from mxflow.web.accounts import Session
from mxflow.web.preview import preview
from mxflow.web.render import error_page, page

ACTIONS = ("release", "not-spam", "report-spam", "delete", "block-sender")


def _visible(entry: QuarantineEntry, session: Session, *, to_act: bool = False) -> bool:
    scope = session.user.scope()
    if scope is None:
        return True
    domains = [r.rpartition("@")[2].lower() for r in entry.rcpt_tos]
    return all(d in scope for d in domains) if to_act else any(d in scope for d in domains)


def _no_quarantine(request: Request, session: Session) -> Response:
    return error_page(request, session, 404, "This node has no filter, so no quarantine.")


async def quarantine_list(request: Request) -> Response:
    session = auth.require(request)
    store = request.app.state.quarantine
    if store is None:
        return _no_quarantine(request, session)
    show_all = request.query_params.get("all") == "1"
    entries = await asyncio.to_thread(store.list, state=None if show_all else "held")
    entries = [e for e in entries if _visible(e, session)]
    return page(request, session, "quarantine.html", {"entries": entries, "show_all": show_all})


async def quarantine_item(request: Request) -> Response:
    session = auth.require(request)
    store = request.app.state.quarantine
    if store is None:
        return _no_quarantine(request, session)
    qid = request.path_params["qid"]
    try:
        entry, raw = await asyncio.to_thread(store.show, qid)
    except QuarantineError:
        return error_page(request, session, 404, f"No quarantined message {qid}.")
    if not _visible(entry, session):
        return error_page(request, session, 404, f"No quarantined message {qid}.")
    context = {
        "entry": entry,
        "preview": await asyncio.to_thread(preview, raw),
        "may_act": _visible(entry, session, to_act=True),
        "may_release": entry.kind != "malware" or session.user.is_admin,
        "quote": quote,
    }
    return page(request, session, "quarantine_item.html", context)


async def quarantine_action(request: Request) -> Response:
    session, _ = await auth.require_post(request)
    state = request.app.state
    qid, action = request.path_params["qid"], request.path_params["action"]
    if state.quarantine is None or action not in ACTIONS:
        return error_page(request, session, 404, "No such action.")
    try:
        entry = await asyncio.to_thread(state.quarantine.get, qid)
    except QuarantineError:
        return error_page(request, session, 404, f"No quarantined message {qid}.")
    if not _visible(entry, session, to_act=True):
        return error_page(request, session, 403, "That message is not only for your domains.")
    try:
        done = await _act(state, session, entry, action)
    except QuarantineError as exc:
        return RedirectResponse(f"/quarantine/{qid}?error={quote(str(exc))}", status_code=303)
    where = "/quarantine" if action in ("delete", "report-spam") else f"/quarantine/{qid}"
    return RedirectResponse(f"{where}?done={quote(done)}", status_code=303)


async def _act(state: Any, session: Session, entry: QuarantineEntry, action: str) -> str:
    store, user = state.quarantine, session.user
    if action in ("release", "not-spam"):
        if entry.kind == "malware" and not user.is_admin:
            raise QuarantineError("malware is released only by an administrator")
        learn = state.trainer().train if action == "not-spam" else None
        queue_id = await release_into_spool(
            store,
            entry.id,
            state.spool,
            state.trace,
            learn=learn,
            allow_malware=user.is_admin,
            by=f"web user {user.name}",
        )
        trained = " and trained the filter with it as not spam" if learn else ""
        return (
            f"Released {entry.id} to {', '.join(entry.rcpt_tos)} (queued as {queue_id}){trained}."
        )
    if action == "report-spam":
        _, raw = await asyncio.to_thread(store.show, entry.id)
        await asyncio.to_thread(state.trainer().train, raw, True)
        await asyncio.to_thread(store.delete, entry.id)
        return f"Trained the filter with {entry.id} as spam, and deleted it."
    if action == "delete":
        await asyncio.to_thread(store.delete, entry.id)
        return f"Deleted {entry.id}."
    sender = entry.mail_from
    if not sender:
        return "The null sender (a bounce) cannot be blocked."
    await asyncio.to_thread(state.accounts.block_sender, sender, user.name)
    block_file = node_policy(state.config).block_file
    assert block_file is not None
    await asyncio.to_thread(add_blocked_sender, block_file, sender)
    return f"Blocked sender {sender}: the filter rejects its mail from now on."
