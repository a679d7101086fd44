"""A logged-in user writes only as itself: the `From:` of submitted mail must be owned.

MAIL FROM is checked at MAIL (intake/lockdown.py); the author a recipient sees is the
`From:` header, which arrives only with the data, so it is checked here, after DATA:
the one `From:` field must name only addresses the user owns (its mailbox and the
aliases that lead to it, `Directory.owned_addresses`), and so must a `Sender:` field
when there is one. Otherwise `550 5.7.1`, before anything is queued or signed — the
host would otherwise DKIM-sign a forgery in the organisation's name. Mail that did not
come through a login (the inbound side) is not this stage's business.
"""

from __future__ import annotations

import email.utils

from mxflow.auth.results import header_values
from mxflow.intake.base import Transaction
from mxflow.store.directory import Directory


def _authors(values: list[str]) -> list[str]:
    return [a.strip().lower() for _, a in email.utils.getaddresses(values)]


class SenderOwnershipStage:
    """Refuse submitted mail whose `From:` (or `Sender:`) is not the user's own."""

    name = "sender-ownership"

    def __init__(self, directory: Directory) -> None:
        self.directory = directory

    async def run(self, tx: Transaction) -> None:
        user = tx.session.auth_user
        if user is None:
            return
        owned = self.directory.owned_addresses(user)
        froms = header_values(tx.raw, "From")
        senders = header_values(tx.raw, "Sender")
        if len(froms) != 1:
            tx.reply = "550 5.7.1 Message refused: exactly one From: header is required"
            return
        authors = _authors(froms)
        if not authors or "" in authors:
            tx.reply = "550 5.7.1 Message refused: From: names no usable address"
            return
        for field, addresses in (("From", authors), ("Sender", _authors(senders))):
            foreign = [a for a in addresses if a not in owned]
            if foreign:
                shown = foreign[0][:100].encode("ascii", "replace").decode()
                tx.reply = f"550 5.7.1 Message refused: {user} may not send as {shown} ({field}:)"
                return
