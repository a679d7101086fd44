"""The delivery-target interface: where a route hands one transaction's recipients.

A target takes a `Parcel` (sender, recipients that share a next hop, the message) and
returns one `Reply` per recipient, as an SMTP peer would: 2xx delivered, 5xx permanent,
anything else (code 0 included: no session could be had) temporary. The scheduler
(queue/) retries and bounces from those replies alone, whatever the target is: an SMTP
relay (smart hosts or MX, relay.py), the node's own Maildirs (below), and next the
archive.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mxflow.delivery.mailbox import INBOX, JUNK, deliver_maildir
from mxflow.smtp.client import Reply


@dataclass(frozen=True)
class Parcel:
    """One transaction's worth: recipients of one message that share a next hop."""

    mail_from: str
    rcpts: list[str]
    raw: bytes
    domain: str  # the recipients' domain (MX delivery resolves it)
    queue_id: str = ""
    body_8bit: bool = False
    smtputf8: bool = False
    junk: bool = False  # the verdict filed it as spam: a mailbox puts it in Junk


class DeliveryTarget(Protocol):
    """A place a route delivers to; `name` shows in logs and the trace."""

    name: str

    async def deliver(self, parcel: Parcel) -> dict[str, Reply]: ...


class MaildirTarget:
    """Local delivery into one Maildir per recipient under `root`.

    As a mailbox host's (`mailboxes=True`) it files junk in the `Junk` folder and adds
    `Return-Path` and `Delivered-To`, as final delivery does; as a plain sink it stores
    the message exactly as relayed.
    """

    def __init__(self, root: Path, *, fsync: bool = True, mailboxes: bool = False) -> None:
        self.name = f"maildir:{root}"
        self.root = root
        self.fsync = fsync
        self.mailboxes = mailboxes

    async def deliver(self, parcel: Parcel) -> dict[str, Reply]:
        if not self.mailboxes:
            return await deliver_maildir(
                self.root, parcel.rcpts, parcel.queue_id, parcel.raw, fsync=self.fsync
            )
        return await deliver_maildir(
            self.root,
            parcel.rcpts,
            parcel.queue_id,
            parcel.raw,
            fsync=self.fsync,
            folder=JUNK if parcel.junk else INBOX,
            mail_from=parcel.mail_from,
        )
