"""Small DNS helpers for the blocklist and reverse-DNS checks.

A lookup answers "listed", "not listed" or "could not tell" (timeout, SERVFAIL): the last
must never count as listed, so a broken blocklist cannot reject mail.
"""

from __future__ import annotations

import ipaddress

import dns.asyncresolver
import dns.exception
import dns.resolver
import dns.reversename


class LookupFailed(Exception):
    """The DNS gave no usable answer (timeout, SERVFAIL, refused)."""


async def addresses(
    resolver: dns.asyncresolver.Resolver, name: str, rdtype: str = "A"
) -> list[str]:
    """The addresses `name` resolves to; [] for NXDOMAIN / no data; LookupFailed otherwise."""
    try:
        answer = await resolver.resolve(name, rdtype, raise_on_no_answer=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
        raise LookupFailed(f"{name}/{rdtype}: {type(exc).__name__}") from exc
    except dns.exception.DNSException as exc:
        raise LookupFailed(f"{name}/{rdtype}: {exc}") from exc
    if answer.rrset is None:
        return []
    return [r.to_text() for r in answer.rrset]


async def ptr_names(resolver: dns.asyncresolver.Resolver, ip: str) -> list[str]:
    name = dns.reversename.from_address(ip).to_text()
    return [n.rstrip(".").lower() for n in await addresses(resolver, name, "PTR")]


def reversed_ip(ip: str) -> str:
    """The blocklist query label of an IP: 1.2.3.4 -> 4.3.2.1; IPv6 as 32 nibbles."""
    address = ipaddress.ip_address(ip)
    if address.version == 4:
        return ".".join(reversed(ip.split(".")))
    return ".".join(reversed(address.exploded.replace(":", "")))
