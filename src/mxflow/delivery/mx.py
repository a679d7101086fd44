"""Where mail for a domain goes by DNS: RFC 5321 §5.1 and the null MX of RFC 7505.

MX hosts are tried in preference order (equal preferences shuffled), each host's
addresses in turn; no MX record means the domain itself is the host ("implicit MX", only
when the domain has an address record); a single `MX 0 .` is a null MX: the domain
accepts no mail, and mail to it is bounced at once (5.1.10) instead of retried.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.rdatatype
import dns.resolver

from mxflow.errors import MxflowError


@dataclass(frozen=True)
class MxHost:
    preference: int
    name: str
    addresses: tuple[str, ...]


class MxError(MxflowError):
    """Resolution gave no usable host; `permanent` says bounce (True) or retry (False)."""

    def __init__(self, status: str, text: str, *, permanent: bool) -> None:
        super().__init__(f"{status} {text}")
        self.status = status
        self.text = text
        self.permanent = permanent


async def _addresses(resolver: dns.asyncresolver.Resolver, name: str) -> tuple[str, ...]:
    found: list[str] = []
    for rdtype in ("A", "AAAA"):
        try:
            answer = await resolver.resolve(name, rdtype)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            continue
        found.extend(r.to_text() for r in answer)
    return tuple(found)


async def resolve_mx(resolver: dns.asyncresolver.Resolver, domain: str) -> list[MxHost]:
    """The hosts to try for `domain`, in order; raises MxError when there are none."""
    try:
        answer = await resolver.resolve(domain, "MX")
        records = [(int(r.preference), r.exchange.to_text().rstrip(".")) for r in answer]
    except dns.resolver.NXDOMAIN:
        raise MxError("5.1.2", f"domain {domain} does not exist", permanent=True) from None
    except dns.resolver.NoAnswer:
        records = []
    except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
        raise MxError("4.4.3", f"DNS lookup for {domain} failed: {exc}", permanent=False) from None
    if len(records) == 1 and records[0][1] in ("", "."):
        raise MxError("5.1.10", f"{domain} accepts no mail (null MX, RFC 7505)", permanent=True)
    records = [r for r in records if r[1] not in ("", ".")]
    try:
        if not records:  # implicit MX: the domain itself, if it has an address
            addrs = await _addresses(resolver, domain)
            if not addrs:
                raise MxError("5.1.2", f"{domain} has no MX and no address", permanent=True)
            return [MxHost(0, domain, addrs)]
        random.shuffle(records)
        records.sort(key=lambda r: r[0])
        hosts = [MxHost(pref, name, await _addresses(resolver, name)) for pref, name in records]
    except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
        raise MxError("4.4.3", f"DNS lookup for {domain} failed: {exc}", permanent=False) from None
    hosts = [h for h in hosts if h.addresses]
    if not hosts:
        raise MxError("4.4.4", f"no MX host of {domain} has an address", permanent=False)
    return hosts
