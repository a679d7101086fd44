"""Quarantine digests: one message to each recipient with newly quarantined mail, with
signed, expiring links to release it (to that recipient only) or to say "not spam".

A link carries a token: base64url(JSON {q: quarantine id, r: recipient, a: action, e:
expiry}) "." HMAC-SHA256 of that under the UI's signing key, so it cannot be forged or
bent to another recipient or message. Opening the link (GET) only shows what it will do;
the button on that page (POST, the token in the form) does it — mail scanners that fetch
every link in a message must not release anything. Spam is releasable by its recipient;
malware is listed without links (an administrator decides). Each (message, recipient) is
listed in one digest only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from mxflow.store.quarantine import HELD, QuarantineEntry, released_recipients

ACTIONS = ("release", "not-spam")
LINK_LIFETIME = 7 * 86400.0


@dataclass(frozen=True)
class Grant:
    """What a valid token allows."""

    qid: str
    recipient: str
    action: str
    expires: float


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(key: bytes, grant: Grant) -> str:
    body = json.dumps(
        {"q": grant.qid, "r": grant.recipient, "a": grant.action, "e": int(grant.expires)},
        separators=(",", ":"),
    ).encode()
    mac = hmac.new(key, body, hashlib.sha256).digest()
    return f"{_b64(body)}.{_b64(mac)}"


def verify(key: bytes, token: str, *, now: float | None = None) -> Grant | None:
    """The grant of a genuine, unexpired token; None otherwise."""
    now = time.time() if now is None else now
    try:
        body_text, mac_text = token.split(".", 1)
        body = base64.urlsafe_b64decode(body_text + "=" * (-len(body_text) % 4))
        mac = base64.urlsafe_b64decode(mac_text + "=" * (-len(mac_text) % 4))
        if not hmac.compare_digest(mac, hmac.new(key, body, hashlib.sha256).digest()):
            return None
        data = json.loads(body)
        grant = Grant(str(data["q"]), str(data["r"]), str(data["a"]), float(data["e"]))
    except (ValueError, KeyError, TypeError):
        return None
    if grant.expires < now or grant.action not in ACTIONS:
        return None
    return grant


def _pending(
    entries: list[QuarantineEntry], accounts: Any, quarantine: Any
) -> dict[str, list[QuarantineEntry]]:
    """recipient -> entries held for them that no digest has listed yet."""
    out: dict[str, list[QuarantineEntry]] = {}
    for entry in entries:
        released = {r.lower() for r in released_recipients(quarantine, entry.id)}
        for rcpt in entry.rcpt_tos:
            if rcpt.lower() in released or accounts.digested(entry.id, rcpt):
                continue
            out.setdefault(rcpt.lower(), []).append(entry)
    return out


def compose(
    recipient: str, entries: list[QuarantineEntry], key: bytes, base_url: str, sender: str
) -> EmailMessage:
    """The digest for one recipient (plain text: links, never HTML)."""
    lines = [
        f"{len(entries)} message(s) to you were held in quarantine.",
        "Release one only if you know the sender; it is delivered to you alone.",
        "",
    ]
    for e in entries:
        expires = min(e.expires, time.time() + LINK_LIFETIME)
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(e.ts))
        lines += [f"* {e.subject or '(no subject)'}", f"  from {e.mail_from or '<>'}, {when}"]
        if e.kind == "malware":
            lines.append("  held as malware: only your administrator can release it")
        else:
            for action, label in (("release", "Release"), ("not-spam", "Not spam")):
                token = sign(key, Grant(e.id, recipient, action, expires))
                lines.append(f"  {label}: {base_url.rstrip('/')}/q/{token}")
        lines.append("")
    lines.append("Messages left in quarantine are deleted when their retention ends.")
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = recipient
    msg["Subject"] = f"Quarantine digest: {len(entries)} message(s) held for you"
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or "mxflow")
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content("\n".join(lines))
    return msg


async def send_digests(state: Any, base_url: str) -> int:
    """Queue one digest per recipient with newly held mail; returns how many were sent.

    `state` holds the node's config, quarantine, spool and trace and the UI's accounts
    (the web app's state, or the same gathered by `mxflow quarantine digest`)."""
    config, quarantine, accounts = state.config, state.quarantine, state.accounts
    spool, trace = state.spool, state.trace
    domain = config.accepted_domains[0].domain if config.accepted_domains else config.hostname
    sender = f"quarantine@{domain}"
    key = accounts.signing_key()
    pending = _pending(quarantine.list(state=HELD), accounts, quarantine)
    for rcpt, entries in sorted(pending.items()):
        msg = compose(rcpt, entries, key, base_url, sender)
        raw = msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))
        env = await spool.inject("", [rcpt], raw, message_id=msg["Message-ID"], helo="digest")
        trace.record(
            env.queue_id,
            "received",
            message_id=str(msg["Message-ID"]),
            recipient=rcpt,
            status="Pending",
            detail=f"quarantine digest of {len(entries)} message(s)",
            sender="",
            subject=str(msg["Subject"]),
            size=len(raw),
        )
        for entry in entries:
            accounts.mark_digested(entry.id, rcpt)
    return len(pending)
