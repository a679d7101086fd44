"""Journal: the archiver keeps a copy of every message before it says 250.

The copy is the message exactly as it will be relayed (our Received line on top of what
the client sent), written and fsync'd into the archive (store/archive.py) before the
store stage spools it, as the spool is before the 250: nothing the archiver accepted is
missing from its archive. An archive that cannot write answers 451, so the client keeps
the message and tries again. Retention runs here too, at most once an hour, so an
archiver needs no separate timer.
"""

from __future__ import annotations

import asyncio
import logging
import time

from mxflow.intake.base import Transaction
from mxflow.store.archive import Archive

log = logging.getLogger("mxflow.intake")

EXPIRY_INTERVAL = 3600.0


class JournalStage:
    name = "journal"

    def __init__(self, archive: Archive, *, retention: float | None = None) -> None:
        self.archive = archive
        self.retention = retention
        self._last_expiry = 0.0

    async def run(self, tx: Transaction) -> None:
        try:
            await asyncio.to_thread(
                self.archive.append,
                tx.raw,
                mail_from=tx.mail_from,
                rcpt_tos=tx.rcpt_tos,
                queue_id=tx.queue_id,
                client_ip=tx.session.peer_ip,
            )
        except Exception as exc:
            log.error("archive write failed id=%s: %s", tx.queue_id, exc)
            tx.reply = "451 4.3.0 Local error: could not archive message, try again later"
            return
        tx.notes.append("journalled")
        await self._expire()

    async def _expire(self) -> None:
        now = time.monotonic()
        if self.retention is None or now - self._last_expiry < EXPIRY_INTERVAL:
            return
        self._last_expiry = now
        try:
            gone = await asyncio.to_thread(self.archive.expire, self.retention)
        except Exception as exc:
            log.error("archive retention failed: %s", exc)
            return
        if gone:
            log.info("archive retention removed %d entries", gone)
