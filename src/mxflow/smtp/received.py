"""The RFC 5321 §4.4 `Received:` trace header mxflow prepends to every message it accepts."""

from __future__ import annotations

import re
from email.utils import formatdate

from mxflow.mail import TlsInfo

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?$"
)


def safe_hostname(name: str | None) -> str | None:
    """`name` when it is a plain LDH host name, else None: a PTR answer is data from the
    network, and only a value that cannot break the header line goes into one."""
    return name if name and _HOSTNAME.match(name) else None


def protocol_name(esmtp: bool, tls: bool, authenticated: bool) -> str:
    """The `with` keyword of RFC 3848: SMTP, ESMTP, ESMTPS, ESMTPA, ESMTPSA."""
    if not esmtp:
        return "SMTP"
    return "ESMTP" + ("S" if tls else "") + ("A" if authenticated else "")


def received_header(
    *,
    helo: str,
    client_ip: str,
    client_hostname: str | None,
    by_hostname: str,
    esmtp: bool,
    tls: TlsInfo | None,
    queue_id: str,
    rcpt_tos: list[str],
    authenticated: bool = False,
    now: float | None = None,
) -> bytes:
    """`Received: from helo (rdns [ip]) by host (mxflow) with ESMTPS (...) id Q for <r>; date`.

    `for` is given only with a single recipient, so one copy does not reveal the others.
    """
    helo = "".join(c for c in helo if c.isprintable() and c not in "()") or "unknown"
    client_hostname = safe_hostname(client_hostname)
    rdns = f"{client_hostname} " if client_hostname else ""
    lines = [
        f"Received: from {helo} ({rdns}[{client_ip}])",
        f"\tby {by_hostname} (mxflow) with {protocol_name(esmtp, tls is not None, authenticated)}",
    ]
    if tls is not None:
        lines.append(f"\t(version={tls.version} cipher={tls.cipher} bits={tls.bits})")
    lines.append(f"\tid {queue_id}")
    date = formatdate(now, localtime=False)
    if len(rcpt_tos) == 1:
        lines.append(f"\tfor <{rcpt_tos[0]}>; {date}")
    else:
        lines[-1] += f"; {date}"
    return ("\r\n".join(lines) + "\r\n").encode("utf-8", "surrogateescape")
