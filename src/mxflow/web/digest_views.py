"""The pages behind digest links: no login, the signed token is the authority.

GET shows the message and one button; POST (the token in the URL, checked again) acts.
The release goes to the recipient in the token only; "not spam" also trains the filter.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response

from mxflow.store.quarantine import QuarantineError, release_into_spool
from mxflow.web.digest import Grant, verify
from mxflow.web.render import error_page, page


def _grant(request: Request) -> Grant | None:
    key = request.app.state.accounts.signing_key()
    return verify(key, request.path_params["token"])


async def digest_link(request: Request) -> Response:
    grant = _grant(request)
    store = request.app.state.quarantine
    if grant is None or store is None:
        return error_page(request, None, 404, "This link is not valid, or it has expired.")
    try:
        entry = await asyncio.to_thread(store.get, grant.qid)
    except QuarantineError:
        return error_page(request, None, 404, "That message is no longer in quarantine.")
    context = {"entry": entry, "grant": grant, "token": request.path_params["token"]}
    return page(request, None, "digest_action.html", context)


async def digest_act(request: Request) -> Response:
    grant = _grant(request)
    state = request.app.state
    if grant is None or state.quarantine is None:
        return error_page(request, None, 404, "This link is not valid, or it has expired.")
    learn = state.trainer().train if grant.action == "not-spam" else None
    try:
        queue_id = await release_into_spool(
            state.quarantine,
            grant.qid,
            state.spool,
            state.trace,
            learn=learn,
            by=f"digest link of {grant.recipient}",
            recipient=grant.recipient,
        )
    except QuarantineError as exc:
        return error_page(request, None, 409, str(exc))
    context = {"recipient": grant.recipient, "queue_id": queue_id, "trained": learn is not None}
    return page(request, None, "digest_done.html", context)
