"""Sanitise: nobody else may speak in our name (RFC 8601 5).

An `Authentication-Results` field carrying our authserv-id that arrives with the message
is forged (or stale): it is removed before the checks run, so neither they nor anything
downstream can mistake it for ours. Only the header section can hold the field; the
search stays there (a case-insensitive search of a 100 KB body costs ~0.4 ms a message).
"""

from __future__ import annotations

import re

from mxflow.auth.results import strip_our_results
from mxflow.intake.base import Transaction
from mxflow.intake.headerfields import rewrite_headers
from mxflow.mail import header_section

_AUTH_RESULTS = re.compile(rb"(?im)^authentication-results[ \t]*:")


class SanitiseStage:
    """Forged results in our name out; with `strip_prefixes`, every header field whose name
    starts with one of them too (the host's own `X-MS-Exchange-Organization-*`, which only
    it may write, as the reference strips them from mail that arrives from outside)."""

    name = "sanitise"

    def __init__(self, authserv_id: str, *, strip_prefixes: tuple[str, ...] = ()) -> None:
        self.authserv_id = authserv_id
        self.strip_prefixes = strip_prefixes

    async def run(self, tx: Transaction) -> None:
        if _AUTH_RESULTS.search(header_section(tx.raw)):
            tx.raw = strip_our_results(tx.raw, self.authserv_id)
        if self.strip_prefixes:
            tx.raw = rewrite_headers(tx.raw, remove_prefixes=self.strip_prefixes)
        tx.ctx.raw = tx.raw
