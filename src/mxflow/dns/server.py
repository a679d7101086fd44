"""The embedded authoritative DNS server: answers for the lab's zones over UDP and TCP.

Tests and the lab point every resolver here, so nothing in mxflow ever asks a real
resolver. It is authoritative only: a name in no served zone gets REFUSED (no recursion).
Answers follow RFC 1034/2308: NXDOMAIN for a name that does not exist, NODATA (NOERROR,
empty answer, SOA in authority) for a name that exists without the asked type; CNAMEs are
followed across the served zones. A UDP answer larger than the client's limit (512 bytes,
or its EDNS payload size) is sent truncated (TC) so the client retries over TCP, which
carries the full answer; an idle TCP connection is closed after `TCP_IDLE_TIMEOUT`.
Zone transfers (AXFR/IXFR) are refused. Names marked as timeouts are never answered, so
tests can see a resolver time out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Iterable, Sequence
from types import TracebackType

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from mxflow.dns.resolver import make_resolver
from mxflow.dns.zone import Zone
from mxflow.errors import MxflowError

log = logging.getLogger(__name__)

MAX_CNAME_CHAIN = 8
UDP_DEFAULT_PAYLOAD = 512
UDP_MAX_PAYLOAD = 4096
ZONE_TRANSFERS = (dns.rdatatype.AXFR, dns.rdatatype.IXFR)
TCP_IDLE_TIMEOUT = 10.0
"""Seconds a TCP connection may wait for its next query (RFC 7766 §6.2.3: servers close
idle connections, so silent clients cannot pile up)."""


class Authority:
    """The answering logic over a set of zones, separate from the sockets (and testable)."""

    def __init__(self, zones: Iterable[Zone]) -> None:
        self.zones = list(zones)
        self.silenced: set[dns.name.Name] = set()

    def zone_for(self, qname: dns.name.Name) -> Zone | None:
        """The served zone with the longest origin containing `qname`."""
        best: Zone | None = None
        for zone in self.zones:
            if qname.is_subdomain(zone.origin) and (
                best is None or len(zone.origin) > len(best.origin)
            ):
                best = zone
        return best

    def is_silenced(self, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> bool:
        """True when the query must go unanswered (a simulated timeout)."""
        if qname in self.silenced:
            return True
        zone = self.zone_for(qname)
        if zone is None or qname not in zone.timeouts:
            return False
        node = zone.records.get(qname, {})
        return rdtype not in node and dns.rdatatype.CNAME not in node

    def answer(self, query: dns.message.Message) -> dns.message.Message | None:
        """The response to `query`, or None when it must not be answered."""
        response = dns.message.make_response(query)
        response.flags &= ~dns.flags.RA
        if query.opcode() != dns.opcode.QUERY or len(query.question) != 1:
            response.set_rcode(dns.rcode.NOTIMP if query.question else dns.rcode.FORMERR)
            return response
        question = query.question[0]
        qname, rdtype = question.name, question.rdtype
        if question.rdclass != dns.rdataclass.IN or rdtype in ZONE_TRANSFERS:
            response.set_rcode(dns.rcode.REFUSED)
            return response
        if self.is_silenced(qname, rdtype):
            return None
        zone = self.zone_for(qname)
        if zone is None:
            response.set_rcode(dns.rcode.REFUSED)
            return response
        if qname in zone.servfails:
            response.set_rcode(dns.rcode.SERVFAIL)
            return response
        response.flags |= dns.flags.AA
        name = qname
        seen: set[dns.name.Name] = set()
        for _ in range(MAX_CNAME_CHAIN):
            node = zone.records.get(name) or self._wildcard(zone, name)
            if node is None:
                if not zone.has_name(name):
                    response.set_rcode(dns.rcode.NXDOMAIN)
                self._add_soa(response, zone)
                return response
            if rdtype == dns.rdatatype.ANY and node:
                for each in node.values():
                    response.answer.append(self._rrset(name, each))
                return response
            rdataset = node.get(rdtype)
            if rdataset is not None:
                response.answer.append(self._rrset(name, rdataset))
                return response
            cname = node.get(dns.rdatatype.CNAME)
            if cname is None or rdtype == dns.rdatatype.CNAME:
                self._add_soa(response, zone)
                return response
            response.answer.append(self._rrset(name, cname))
            seen.add(name)
            target: dns.name.Name = cname[0].target
            next_zone = self.zone_for(target)
            if target in seen or next_zone is None or self.is_silenced(target, rdtype):
                return response
            name, zone = target, next_zone
        return response

    @staticmethod
    def _wildcard(
        zone: Zone, name: dns.name.Name
    ) -> dict[dns.rdatatype.RdataType, dns.rdataset.Rdataset] | None:
        """Records of the `*` name that covers `name` (RFC 4592, simplified), if any."""
        if zone.has_name(name) or name == zone.origin:
            return None
        parent = name.parent()
        while parent.is_subdomain(zone.origin):
            node = zone.records.get(dns.name.Name(("*", *parent.labels)))
            if node is not None:
                return node
            if zone.has_name(parent) or parent == zone.origin:
                return None
            parent = parent.parent()
        return None

    @staticmethod
    def _rrset(name: dns.name.Name, rdataset: dns.rdataset.Rdataset) -> dns.rrset.RRset:
        rrset = dns.rrset.RRset(name, rdataset.rdclass, rdataset.rdtype)
        for rdata in rdataset:
            rrset.add(rdata, rdataset.ttl)
        return rrset

    def _add_soa(self, response: dns.message.Message, zone: Zone) -> None:
        """The SOA of a negative answer, its TTL capped at SOA MINIMUM (RFC 2308 §3): how
        long resolvers may cache "no such name/data"."""
        soa = zone.soa()
        rrset = self._rrset(zone.origin, soa)
        rrset.update_ttl(min(soa.ttl, soa[0].minimum))
        response.authority.append(rrset)


def to_wire(query: dns.message.Message, response: dns.message.Message, *, udp: bool) -> bytes:
    """Render `response`; over UDP cut to the client's limit with TC set when too large."""
    limit = 65535
    if udp:
        limit = UDP_DEFAULT_PAYLOAD
        if query.edns >= 0:
            limit = max(UDP_DEFAULT_PAYLOAD, min(query.payload, UDP_MAX_PAYLOAD))
    try:
        return response.to_wire(max_size=limit)
    except dns.exception.TooBig:
        response.answer.clear()
        response.authority.clear()
        response.additional.clear()
        response.flags |= dns.flags.TC
        return response.to_wire(max_size=limit)


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: EmbeddedDnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        wire = self.server.handle(data, udp=True)
        if wire is not None and self.transport is not None:
            self.transport.sendto(wire, addr)


class EmbeddedDnsServer:
    """An authoritative DNS server for `zones` on `host:port`, UDP and TCP on the same port.

    `port=0` picks a free port; after `start()`, `port` is the bound one. Use
    `resolver()` for a dnspython resolver that asks this server only.
    """

    def __init__(self, zones: Sequence[Zone], host: str = "127.0.0.53", port: int = 0) -> None:
        self.authority = Authority(zones)
        self.host = host
        self.port = port
        self.queries = 0
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tcp_tasks: set[asyncio.Task[None]] = set()

    @property
    def zones(self) -> list[Zone]:
        return self.authority.zones

    def add_zone(self, zone: Zone) -> None:
        """Serve one more zone (takes effect for the next query)."""
        self.authority.zones.append(zone)

    def silence(self, name: str) -> None:
        """Never answer any query for `name` from now on (a simulated timeout)."""
        self.authority.silenced.add(dns.name.from_text(name))

    def handle(self, data: bytes, *, udp: bool) -> bytes | None:
        """The wire response to one wire query, or None to stay silent."""
        self.queries += 1
        try:
            query = dns.message.from_wire(data)
        except dns.exception.DNSException:
            if len(data) < 12:
                return None
            (query_id,) = struct.unpack("!H", data[:2])
            flags = dns.flags.QR | dns.rcode.FORMERR
            return struct.pack("!HHHHHH", query_id, flags, 0, 0, 0, 0)
        if query.flags & dns.flags.QR:
            return None
        response = self.authority.answer(query)
        if response is None:
            return None
        return to_wire(query, response, udp=udp)

    async def start(self) -> None:
        """Bind UDP and TCP on `host:port` (one free port for both when `port` is 0)."""
        loop = asyncio.get_running_loop()
        last_error: OSError | None = None
        for _ in range(20):
            try:
                transport, _protocol = await loop.create_datagram_endpoint(
                    lambda: _UdpProtocol(self), local_addr=(self.host, self.port)
                )
            except OSError as exc:
                raise MxflowError(
                    f"cannot listen on {self.host}:{self.port}/udp: {exc.strerror}"
                ) from exc
            bound_port: int = transport.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self._serve_tcp, self.host, bound_port)
            except OSError as exc:
                transport.close()
                last_error = exc
                if self.port:
                    break
                continue
            self._udp = transport
            self.port = bound_port
            return
        strerror = last_error.strerror if last_error else "no free port"
        raise MxflowError(f"cannot listen on {self.host}:{self.port}/tcp: {strerror}")

    async def stop(self) -> None:
        """Close both sockets and any open TCP connections."""
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            for task in list(self._tcp_tasks):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*self._tcp_tasks, return_exceptions=True)
            await self._tcp.wait_closed()
            self._tcp = None

    async def serve_forever(self) -> None:
        """Run until cancelled."""
        if self._tcp is None:
            await self.start()
        assert self._tcp is not None
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    async def __aenter__(self) -> EmbeddedDnsServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def resolver(
        self, *, timeout: float = 2.0, lifetime: float = 5.0
    ) -> dns.asyncresolver.Resolver:
        """A resolver that asks this server only."""
        return make_resolver(self.host, self.port, timeout=timeout, lifetime=lifetime)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tcp_tasks.add(task)
        try:
            while True:
                async with asyncio.timeout(TCP_IDLE_TIMEOUT):
                    header = await reader.readexactly(2)
                    (length,) = struct.unpack("!H", header)
                    data = await reader.readexactly(length)
                wire = self.handle(data, udp=False)
                if wire is None:
                    continue
                writer.write(struct.pack("!H", len(wire)) + wire)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass
        except asyncio.CancelledError:
            # `stop()` cancels open connections. Ending normally, not cancelled, because
            # Python 3.11's stream callback logs a cancelled handler as an unhandled error.
            pass
        finally:
            self._tcp_tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()
