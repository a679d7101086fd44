"""Delivery status notifications (RFC 3464) for recipients that could not be delivered.

A DSN goes to the envelope sender from the null sender `<>`; mail from the null sender
never gets one (RFC 5321 §6.1), which is also what keeps bounces from looping.
"""

from __future__ import annotations

import time
from email.utils import formatdate, make_msgid

from mxflow.queue.spool import Envelope
from mxflow.smtp.client import Reply


def _headers_of(raw: bytes, limit: int = 64 * 1024) -> bytes:
    end = raw.find(b"\r\n\r\n")
    head = raw[: end + 2] if end >= 0 else raw[:limit]
    return head[:limit]


def build_dsn(
    *,
    reporting_mta: str,
    envelope: Envelope,
    raw: bytes,
    failed: list[tuple[str, Reply]],
    now: float | None = None,
) -> bytes:
    """The DSN message (CRLF line ends) reporting `failed` recipients of `envelope`."""
    now = time.time() if now is None else now
    boundary = f"mxflow-dsn-{envelope.queue_id}"
    human = [
        f"This is the mail system at {reporting_mta}.",
        "",
        "Your message could not be delivered to one or more recipients.",
        "",
    ]
    per_rcpt: list[str] = []
    for rcpt, reply in failed:
        human.append(f"<{rcpt}>: {reply}")
        per_rcpt += ["", f"Final-Recipient: rfc822; {rcpt}", "Action: failed"]
        code = reply.status
        if code.startswith("4."):  # a temporary failure that expired is now permanent
            code = "5." + code[2:]
        per_rcpt.append(f"Status: {code}")
        if reply.remote:
            per_rcpt.append(f"Remote-MTA: dns; {reply.remote.rsplit(':', 1)[0]}")
        if reply.code:
            per_rcpt.append(f"Diagnostic-Code: smtp; {reply.code} {reply.text}")
        else:
            per_rcpt.append(f"Diagnostic-Code: X-mxflow; {reply.text}")
        per_rcpt.append(f"Last-Attempt-Date: {formatdate(now)}")
    status = [
        f"Reporting-MTA: dns; {reporting_mta}",
        f"X-Mxflow-Queue-ID: {envelope.queue_id}",
        f"Arrival-Date: {formatdate(envelope.received_at)}",
        *per_rcpt,
    ]
    subject = "Undelivered Mail Returned to Sender"
    lines = [
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>",
        f"To: <{envelope.mail_from}>",
        f"Subject: {subject}",
        f"Date: {formatdate(now)}",
        f"Message-ID: {make_msgid(domain=reporting_mta)}",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Description: Notification",
        "",
        *human,
        "",
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "Content-Description: Delivery report",
        "",
        *status,
        "",
        f"--{boundary}",
        "Content-Type: text/rfc822-headers",
        "Content-Description: Undelivered message headers",
        "",
    ]
    head = "\r\n".join(lines).encode("utf-8") + b"\r\n"
    original = _headers_of(raw)
    tail = f"\r\n--{boundary}--\r\n".encode()
    return head + original + tail
