"""Administrator allow / block lists by sender address, sender domain and client IP.

An entry is a full address (`ann@example.org`), a domain (`example.org` or `@example.org`,
which also covers its subdomains) or, for IPs, a CIDR range. Blocking compares the
envelope sender and the From header address, so a block holds whichever the spammer
forges; allowing compares the envelope sender only (a From header is too easily forged).
Allow-listing bypasses spam scoring (SCL -1) but never malware scanning.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from email.utils import getaddresses

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


@dataclass
class SenderListCheck:
    """Allow / block by envelope sender and (at DATA) the From header address."""

    policy: FilterPolicy
    phase: Phase = Phase.ENVELOPE
    name: str = "sender_lists"

    async def check(self, ctx: MessageContext) -> CheckResult:
        result = CheckResult()
        if self.phase == Phase.DATA:  # the envelope sender was judged at ENVELOPE already
            from_values = mime.view(ctx).header_all("from") if ctx.raw else []
            senders = [addr for _, addr in getaddresses(from_values) if addr]
        else:
            senders = [ctx.mail_from] if ctx.mail_from else []
        for sender in senders:
            entry = sender_matches(sender, self.policy.block_senders)
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
