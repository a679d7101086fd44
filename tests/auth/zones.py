"""Test helpers: serve TXT records from the real embedded DNS server, one root zone each.

The vendored suites come with their DNS as a name -> TXT map; `serve_txt` puts that map in
a root zone (so any name can be served) on a fresh loopback address. `None` as a value
makes the name never answer, which the resolver sees as a timeout (temperror).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import dns.asyncresolver

from mxflow.auth.keys import split_txt
from mxflow.dns.server import EmbeddedDnsServer
from mxflow.dns.zone import Zone
from tests.dnsserver import serve_zones

DATA = Path(__file__).resolve().parent.parent / "data" / "auth"

TxtMap = Mapping[str, str | Sequence[str] | None]


def txt_zone(records: TxtMap) -> Zone:
    """A zone at the root holding `records` (long TXT values split into 255-octet strings)."""
    zone = Zone.from_records(".", [])
    for name, value in records.items():
        owner = name.rstrip(".") + "."
        if value is None:
            zone.add(owner, "TIMEOUT", "")
            continue
        for record in [value] if isinstance(value, str) else value:
            zone.add(owner, "TXT", split_txt(record))
    return zone


@asynccontextmanager
async def serve_txt(records: TxtMap, *extra: Zone) -> AsyncIterator[EmbeddedDnsServer]:
    """The embedded server answering `records` (plus any `extra` zones)."""
    async with serve_zones([txt_zone(records), *extra]) as server:
        yield server


def quick_resolver(server: EmbeddedDnsServer) -> dns.asyncresolver.Resolver:
    """A resolver that gives up fast, for the cases that exercise a DNS timeout."""
    return server.resolver(timeout=0.3, lifetime=0.6)


def crlf(text: str) -> bytes:
    """A YAML-embedded message as wire bytes (CRLF line ends)."""
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")
