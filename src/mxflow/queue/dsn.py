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
    lines = [
        *_dsn_headers(reporting_mta, envelope, boundary, now),
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Description: Notification",
        "",
        *_notification(reporting_mta, failed),
        "",
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "Content-Description: Delivery report",
        "",
        *_delivery_status(reporting_mta, envelope, failed, now),
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


def _dsn_headers(reporting_mta: str, envelope: Envelope, boundary: str, now: float) -> list[str]:
    """The DSN's own header: from the mailer daemon to the envelope sender, marked
    auto-replied (RFC 3834) so that vacation responders do not answer it."""
    return [
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>",
        f"To: <{envelope.mail_from}>",
        "Subject: Undelivered Mail Returned to Sender",
        f"Date: {formatdate(now)}",
        f"Message-ID: {make_msgid(domain=reporting_mta)}",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
    ]


def _notification(reporting_mta: str, failed: list[tuple[str, Reply]]) -> list[str]:
    """The human-readable part: one line per recipient with the reply that failed it."""
    return [
        f"This is the mail system at {reporting_mta}.",
        "",
        "Your message could not be delivered to one or more recipients.",
        "",
        *(f"<{rcpt}>: {reply}" for rcpt, reply in failed),
    ]


def _delivery_status(
    reporting_mta: str, envelope: Envelope, failed: list[tuple[str, Reply]], now: float
) -> list[str]:
    """The machine-readable part (RFC 3464 §2.2, §2.3): per-message fields, then one block
    of fields per failed recipient."""
    lines = [
        f"Reporting-MTA: dns; {reporting_mta}",
        f"X-Mxflow-Queue-ID: {envelope.queue_id}",
        f"Arrival-Date: {formatdate(envelope.received_at)}",
    ]
    for rcpt, reply in failed:
        lines += ["", *_recipient_status(rcpt, reply, now)]
    return lines


def _recipient_status(rcpt: str, reply: Reply, now: float) -> list[str]:
    """One recipient's fields: the failure is final, so a 4.x.x status that expired in the
    queue is reported as 5.x.x; the diagnostic says whether an SMTP server gave it."""
    code = reply.status
    if code.startswith("4."):  # a temporary failure that expired is now permanent
        code = "5." + code[2:]
    lines = [f"Final-Recipient: rfc822; {rcpt}", "Action: failed", f"Status: {code}"]
    if reply.remote:
        lines.append(f"Remote-MTA: dns; {reply.remote.rsplit(':', 1)[0]}")
    if reply.code:
        lines.append(f"Diagnostic-Code: smtp; {reply.code} {reply.text}")
    else:
        lines.append(f"Diagnostic-Code: X-mxflow; {reply.text}")
    lines.append(f"Last-Attempt-Date: {formatdate(now)}")
    return lines
