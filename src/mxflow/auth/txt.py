"""TXT lookups for DKIM keys, DMARC policies and ARC keys, over the injected async resolver.

Authentication needs three answers kept apart: records found, no record (NXDOMAIN or no
data, a permanent condition) and a temporary failure (timeout, SERVFAIL), because the
first two give permerror/none and the last gives temperror. `TxtLookup` is the small
interface the auth modules use; `ResolverTxtLookup` puts it on a `dns.asyncresolver`
resolver (never the system one: see `mxflow.dns.resolver`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

from mxflow.dns.resolver import describe_dns_error
from mxflow.errors import MxflowError


class TxtStatus(StrEnum):
    FOUND = "found"
    NXDOMAIN = "nxdomain"
    NODATA = "nodata"


@dataclass(frozen=True)
class TxtAnswer:
    """The TXT records at `name`; each record's strings already joined (RFC 7208 §3.3)."""

    name: str
    status: TxtStatus
    records: tuple[str, ...] = ()


class DnsTempError(MxflowError):
    """The lookup failed for now (timeout, SERVFAIL): the caller reports temperror."""


class TxtLookup(Protocol):
    async def txt(self, name: str) -> TxtAnswer:
        """TXT records at `name` (absolute, trailing dot optional); raises DnsTempError."""
        ...


def normalise_name(name: str) -> str:
    """Lower-case, without the trailing dot: the key used for caches and static maps."""
    return name.strip().rstrip(".").lower()


class ResolverTxtLookup:
    """`TxtLookup` over a `dns.asyncresolver.Resolver`."""

    def __init__(self, resolver: dns.asyncresolver.Resolver) -> None:
        self.resolver = resolver

    async def txt(self, name: str) -> TxtAnswer:
        key = normalise_name(name)
        try:
            qname = dns.name.from_text(key)
        except dns.exception.DNSException:
            return TxtAnswer(key, TxtStatus.NXDOMAIN)
        try:
            answer = await self.resolver.resolve(qname, dns.rdatatype.TXT, search=False)
        except dns.resolver.NXDOMAIN:
            return TxtAnswer(key, TxtStatus.NXDOMAIN)
        except dns.resolver.NoAnswer:
            return TxtAnswer(key, TxtStatus.NODATA)
        except dns.exception.DNSException as exc:  # timeout, SERVFAIL, REFUSED, ...
            raise DnsTempError(f"TXT {key}: {describe_dns_error(exc)}") from exc
        records = tuple(
            b"".join(rdata.strings).decode("utf-8", "surrogateescape") for rdata in answer
        )
        return TxtAnswer(key, TxtStatus.FOUND, records)


def as_txt_lookup(source: dns.asyncresolver.Resolver | TxtLookup) -> TxtLookup:
    """Accept either a resolver (the engine's injected one) or a ready `TxtLookup`."""
    if isinstance(source, dns.asyncresolver.Resolver):
        return ResolverTxtLookup(source)
    return source
