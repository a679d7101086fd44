"""Administrator allow / block lists by sender address, sender domain and client IP.

An entry is a full address (`ann@example.org`), a domain (`example.org` or `@example.org`,
which also covers its subdomains) or, for IPs, a CIDR range. Blocking compares the
envelope sender and the From header address, so a block holds whichever the spammer
forges; allowing compares the envelope sender only (a From header is too easily forged).
Allow-listing bypasses spam scoring (SCL -1) but never malware scanning.
"""

from __future__ import annotations

import ipaddress
import os
import time
from dataclasses import dataclass, field
from email.utils import getaddresses
from pathlib import Path

from mxflow import mime
from mxflow.checks.verdict import ALLOWED, BLOCKED
from mxflow.config.filter import FilterPolicy
from mxflow.mail import Action, CheckResult, MessageContext, Phase


def sender_matches(address: str, entries: tuple[str, ...]) -> str | None:
    """The entry of `entries` that `address` matches, or None."""
    address = address.strip().strip("<>").lower()
    if "@" not in address:
        return None
    domain = address.rsplit("@", 1)[1]
    for entry in entries:
        if "@" in entry and not entry.startswith("@"):
            if address == entry:
                return entry
            continue
        wanted = entry.lstrip("@")
        if domain == wanted or domain.endswith("." + wanted):
            return entry
    return None


@dataclass
class IpListCheck:
    """Allow / block by client IP, at CONNECT so a blocked client is refused at once."""

    policy: FilterPolicy
    name: str = "ip_lists"
    phase: Phase = Phase.CONNECT

    async def check(self, ctx: MessageContext) -> CheckResult:
        result = CheckResult()
        try:
            ip = ipaddress.ip_address(ctx.client_ip)
        except ValueError:
            return result
        for network in self.policy.block_ips:
            if ip in network:
                result.add(BLOCKED, self.policy.score(BLOCKED, 100.0), f"client IP in {network}")
                result.action = Action.REJECT
                result.reason = f"client {ctx.client_ip} is blocked by policy"
                return result
        for network in self.policy.allow_ips:
            if ip in network:
                result.add(ALLOWED, 0.0, f"client IP in {network}")
                return result
        return result


class BlockFile:
    """The run-time block list (`[filter] block_file`): addresses or `@domain`s, one a line.

    Read again at most once a second and only when the file changed, so the UI's "block
    sender" takes effect within a second without a reload, and a check costs no I/O.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.entries: tuple[str, ...] = ()
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0

    def current(self) -> tuple[str, ...]:
        now = time.monotonic()
        if self.path is None or now - self._checked < 1.0:
            return self.entries
        self._checked = now
        try:
            st = self.path.stat()
        except OSError:
            self.entries, self._stamp = (), None
            return self.entries
        if (st.st_mtime_ns, st.st_size) != self._stamp:
            self._stamp = (st.st_mtime_ns, st.st_size)
            text = self.path.read_text(encoding="utf-8", errors="replace")
            self.entries = tuple(
                line.strip().lower()
                for line in text.splitlines()
                if line.strip() and not line.startswith("#")
            )
        return self.entries


def add_blocked_sender(path: Path, sender: str) -> None:
    """Append `sender` to the block file (atomically: a reader never sees half a line)."""
    sender = sender.strip().lower()
    if not sender or any(c in sender for c in "\r\n\x00"):
        raise ValueError(f"not an address to block: {sender!r}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        lines = ["# blocked senders (mxflow web: block sender); one address or @domain a line"]
    if sender not in lines:
        lines.append(sender)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, path)


@dataclass
class SenderListCheck:
    """Allow / block by envelope sender and (at DATA) the From header address."""

    policy: FilterPolicy
    phase: Phase = Phase.ENVELOPE
    name: str = "sender_lists"
    block_file: BlockFile = field(init=False)

    def __post_init__(self) -> None:
        self.block_file = BlockFile(self.policy.block_file)

    async def check(self, ctx: MessageContext) -> CheckResult:
        result = CheckResult()
        if self.phase == Phase.DATA:  # the envelope sender was judged at ENVELOPE already
            from_values = mime.view(ctx).header_all("from") if ctx.raw else []
            senders = [addr for _, addr in getaddresses(from_values) if addr]
        else:
            senders = [ctx.mail_from] if ctx.mail_from else []
        blocked = (*self.policy.block_senders, *self.block_file.current())
        for sender in senders:
            entry = sender_matches(sender, blocked)
            if entry:
                result.add(BLOCKED, self.policy.score(BLOCKED, 100.0), f"{sender} matches {entry}")
                result.action = Action.REJECT
                result.reason = f"sender {sender} is blocked by policy"
                return result
        # allowing goes by the envelope sender only: a From header is trivially forged, and
        # an allow-listed From would let any spoofer bypass the filter
        for sender in senders[:1] if self.phase != Phase.DATA else []:
            entry = sender_matches(sender, self.policy.allow_senders)
            if entry:
                result.add(ALLOWED, 0.0, f"{sender} matches {entry}")
                return result
        return result
