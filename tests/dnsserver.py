"""Test helper: an embedded DNS server on a fresh loopback address, as a context manager.

    async with serve_zone_text(ZONE) as server:
        resolver = server.resolver()

`ZONE` is RFC 1035 zone-file text with `$ORIGIN`. Each server binds its own
`unique_loopback()` address with port 0, so parallel tests never collide, and no test
ever asks a real resolver.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from mxflow.dns.server import EmbeddedDnsServer
from mxflow.dns.zone import Zone, parse_zone
from tests.conftest import unique_loopback


@asynccontextmanager
async def serve_zones(
    zones: Sequence[Zone], host: str | None = None
) -> AsyncIterator[EmbeddedDnsServer]:
    """Serve `zones` on `host` (default: a fresh loopback address), port 0."""
    server = EmbeddedDnsServer(zones, host=host or unique_loopback(), port=0)
    async with server:
        yield server


@asynccontextmanager
async def serve_zone_text(*texts: str, host: str | None = None) -> AsyncIterator[EmbeddedDnsServer]:
    """Serve one zone per zone-file text (each with its `$ORIGIN`)."""
    zones = [parse_zone(text, filename=f"<test zone {i}>") for i, text in enumerate(texts)]
    async with serve_zones(zones, host) as server:
        yield server
