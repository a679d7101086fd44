"""Delivery status notifications (RFC 3464): recipients that failed, or are delayed.

A failure DSN reports `Action: failed` (a 4.x.x that expired in the queue becomes 5.x.x);
a delay DSN (`delayed_until` given: Postfix's delay_warning_time, Exchange's delay
notification) reports `Action: delayed` with the temporary status and `Will-Retry-Until`.

A DSN goes to the envelope sender from the null sender `<>`; mail from the null sender
never gets one (RFC 5321 §6.1), which is also what keeps bounces from looping.
"""

from __future__ import annotations

import time
from email.utils import formatdate, make_msgid

from mxflow.mail import header_section
from mxflow.queue.spool import Envelope
from mxflow.smtp.client import Reply

MAX_ORIGINAL_HEADERS = 64 * 1024  # of the undelivered message's header, in the DSN


def build_dsn(
    *,
    reporting_mta: str,
    envelope: Envelope,
    raw: bytes,
    failed: list[tuple[str, Reply]],
    now: float | None = None,
    delayed_until: float | None = None,
) -> bytes:
    """The DSN message (CRLF line ends) reporting `failed` recipients of `envelope` (or,
    with `delayed_until`, recipients still being retried until then)."""
    now = time.time() if now is None else now
    boundary = f"mxflow-dsn-{envelope.queue_id}"
    lines = [
        *_dsn_headers(reporting_mta, envelope, boundary, now, delayed=delayed_until is not None),
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Description: Notification",
        "",
        *_notification(reporting_mta, failed, delayed_until),
        "",
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "Content-Description: Delivery report",
        "",
        *_delivery_status(reporting_mta, envelope, failed, now, delayed_until),
        "",
        f"--{boundary}",
        "Content-Type: text/rfc822-headers",
        "Content-Description: Undelivered message headers",
        "",
    ]
    head = "\r\n".join(lines).encode("utf-8") + b"\r\n"
    original = header_section(raw)[:MAX_ORIGINAL_HEADERS]
    tail = f"\r\n--{boundary}--\r\n".encode()
    return head + original + tail


def _dsn_headers(
    reporting_mta: str, envelope: Envelope, boundary: str, now: float, *, delayed: bool
) -> list[str]:
    """The DSN's own header: from the mailer daemon to the envelope sender, marked
    auto-replied (RFC 3834) so that vacation responders do not answer it."""
    subject = (
        "Delayed Mail (still being retried)" if delayed else "Undelivered Mail Returned to Sender"
    )
    return [
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>",
        f"To: <{envelope.mail_from}>",
        f"Subject: {subject}",
        f"Date: {formatdate(now)}",
        f"Message-ID: {make_msgid(domain=reporting_mta)}",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
    ]


def _notification(
    reporting_mta: str, failed: list[tuple[str, Reply]], delayed_until: float | None
) -> list[str]:
    """The human-readable part: one line per recipient with the reply that failed it."""
    if delayed_until is None:
        what = ["Your message could not be delivered to one or more recipients."]
    else:
        what = [
            "Your message could not be delivered yet to one or more recipients.",
            f"The mail system will keep trying until {formatdate(delayed_until)};",
            "you do not need to send it again.",
        ]
    return [
        f"This is the mail system at {reporting_mta}.",
        "",
        *what,
        "",
        *(f"<{rcpt}>: {reply}" for rcpt, reply in failed),
    ]


def _delivery_status(
    reporting_mta: str,
    envelope: Envelope,
    failed: list[tuple[str, Reply]],
    now: float,
    delayed_until: float | None = None,
) -> list[str]:
    """The machine-readable part (RFC 3464 §2.2, §2.3): per-message fields, then one block
    of fields per failed recipient."""
    lines = [
        f"Reporting-MTA: dns; {reporting_mta}",
        f"X-Mxflow-Queue-ID: {envelope.queue_id}",
        f"Arrival-Date: {formatdate(envelope.received_at)}",
    ]
    for rcpt, reply in failed:
        lines += ["", *_recipient_status(rcpt, reply, now, delayed_until)]
    return lines


def _recipient_status(
    rcpt: str, reply: Reply, now: float, delayed_until: float | None = None
) -> list[str]:
    """One recipient's fields: a failure is final, so a 4.x.x status that expired in the
    queue is reported as 5.x.x; a delay keeps its 4.x.x and says until when it is retried;
    the diagnostic says whether an SMTP server gave it."""
    code = reply.status
    action = "failed" if delayed_until is None else "delayed"
    if code.startswith("4.") and delayed_until is None:  # expired: now permanent
        code = "5." + code[2:]
    lines = [f"Final-Recipient: rfc822; {rcpt}", f"Action: {action}", f"Status: {code}"]
    if reply.remote:
        lines.append(f"Remote-MTA: dns; {reply.remote.rsplit(':', 1)[0]}")
    if reply.code:
        lines.append(f"Diagnostic-Code: smtp; {reply.code} {reply.text}")
    else:
        lines.append(f"Diagnostic-Code: X-mxflow; {reply.text}")
    lines.append(f"Last-Attempt-Date: {formatdate(now)}")
    if delayed_until is not None:
        lines.append(f"Will-Retry-Until: {formatdate(delayed_until)}")
    return lines
