"""Small DNS helpers for the blocklist and reverse-DNS checks.

A lookup answers "listed", "not listed" or "could not tell" (timeout, SERVFAIL): the last
must never count as listed, so a broken blocklist cannot reject mail. The same goes for
answers that are not listings (RFC 5782 §5): `127.0.0.1` (a list must never return it; a
list that does is broken or wildcarded), `127.255.255.0/24` (the error codes Spamhaus and
others return to a query through a public or over-quota resolver) and anything outside
127.0.0.0/8 (a domain parked on a wildcard).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re

import dns.asyncresolver
import dns.exception
import dns.resolver
import dns.reversename

from mxflow.errors import MxflowError

_NOT_A_LISTING = (
    ipaddress.ip_network("127.0.0.1/32"),
    ipaddress.ip_network("127.255.255.0/24"),
)
_LISTING_RANGE = ipaddress.ip_network("127.0.0.0/8")


class LookupFailed(MxflowError):
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


def zone_label(zone: str) -> str:
    """A zone as a symbol suffix: `zen.spamhaus.org` -> `ZEN_SPAMHAUS_ORG`."""
    return re.sub(r"[^A-Z0-9]+", "_", zone.upper()).strip("_")


def listing_codes(answer: list[str]) -> tuple[list[str], list[str]]:
    """The A records of a blocklist answer split into (listing codes, error codes)."""
    codes: list[str] = []
    errors: list[str] = []
    for text in answer:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            errors.append(text)
            continue
        if (
            address.version != 4
            or address not in _LISTING_RANGE
            or any(address in net for net in _NOT_A_LISTING)
        ):
            errors.append(text)
        else:
            codes.append(text)
    return codes, errors


def zone_listing(
    zone: str, weight: float, codes_table: dict[str, float], answer: list[str]
) -> tuple[float, list[str]] | str | None:
    """A blocklist answer judged: (score, codes) when listed — the best score of the codes
    in `codes_table`, `weight` for the others —, None when not listed, and a message when
    the answer is no listing at all (a refused query, a broken list)."""
    codes, errors = listing_codes(answer)
    if not codes:
        return f"{zone} answered {errors[0]}: not a listing (query refused?)" if errors else None
    return max(codes_table.get(code, weight) for code in codes), codes


Judged = tuple[float, list[str]] | str | None


async def query_zones(
    resolver: dns.asyncresolver.Resolver, lookups: list[tuple[str, str, float, dict[str, float]]]
) -> list[Judged]:
    """Each `(name, zone, weight, codes)` looked up as `name.zone`, concurrently, and judged
    by `zone_listing`; a lookup that failed is its message, like an answer that is none."""
    answers = await asyncio.gather(
        *(addresses(resolver, f"{name}.{zone}") for name, zone, _, _ in lookups),
        return_exceptions=True,
    )
    judged: list[Judged] = []
    for (_, zone, weight, codes), answer in zip(lookups, answers, strict=True):
        if isinstance(answer, LookupFailed):
            judged.append(str(answer))
        elif isinstance(answer, BaseException):
            raise answer
        else:
            judged.append(zone_listing(zone, weight, codes, answer))
    return judged
