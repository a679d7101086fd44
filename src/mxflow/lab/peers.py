"""The lab's internet peers on the wire: senders that find the MX like a real MTA, and the
recipients' MX hosts that record what arrives and judge it as a receiver would.

A recipient MX accepts every message and evaluates SPF, DKIM and DMARC on arrival (the
client IP and HELO as it saw them), plus SPF against the reference's literal record, so
the report can show what contoso.com's outbound mail looks like to the world. Bounces
(null sender) are kept apart: they tell the report that a relay refused a message after
accepting it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from dataclasses import dataclass, field

import dns.asyncresolver

from mxflow.auth.authenticate import authenticate
from mxflow.auth.spf import check_host
from mxflow.delivery.mx import MxError, resolve_mx
from mxflow.lab.client import LabClient, dot_stuff
from mxflow.lab.world import LITERAL_SPF_DOMAIN

log = logging.getLogger("mxflow.lab")
LAB_ID = re.compile(rb"^X-Lab-Id: *(\S+)", re.MULTILINE | re.IGNORECASE)


@dataclass
class Arrival:
    """One message at a recipient MX and how the receiver judged it."""

    lab_id: str
    client_ip: str
    mail_from: str
    spf: str
    dkim: bool  # a valid signature aligned with the From domain... or any valid one
    dmarc: str
    literal_spf: str
    bounce: bool


@dataclass
class RecipientMx:
    """A minimal receiving MTA on one loopback address (the lab's port)."""

    ip: str
    port: int
    resolver: dns.asyncresolver.Resolver
    arrivals: list[Arrival] = field(default_factory=list)
    pending: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._session, self.ip, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")[0]
        helo, mail_from = "", ""
        writer.write(b"220 recipient MX (mxflow lab) ESMTP\r\n")
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            while line := await asyncio.wait_for(reader.readline(), 30):
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    helo = line[5:].strip().decode("ascii", "replace")
                    writer.write(b"250-recipient MX\r\n250 8BITMIME\r\n")
                elif verb == b"MAIL":
                    mail_from = line.partition(b"<")[2].partition(b">")[0].decode()
                    writer.write(b"250 ok\r\n")
                elif verb == b"DATA":
                    writer.write(b"354 go ahead\r\n")
                    raw = await self._data(reader)
                    self.pending += 1
                    writer.write(b"250 ok: recorded\r\n")
                    task = asyncio.create_task(self._judge(raw, peer, helo, mail_from))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                elif verb == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    break
                else:  # RCPT, RSET, NOOP
                    writer.write(b"250 ok\r\n")
                await writer.drain()
        writer.close()

    @staticmethod
    async def _data(reader: asyncio.StreamReader) -> bytes:
        lines = []
        while (line := await reader.readline()) not in (b".\r\n", b""):
            lines.append(line[1:] if line.startswith(b"..") else line)
        return b"".join(lines)

    async def _judge(self, raw: bytes, ip: str, helo: str, mail_from: str) -> None:
        try:
            found = LAB_ID.search(raw)
            lab_id = found.group(1).decode() if found else ""
            outcome = await authenticate(
                raw, ip=ip, helo=helo, mail_from=mail_from, resolver=self.resolver
            )
            literal = await check_host(
                ip, LITERAL_SPF_DOMAIN, mail_from or f"postmaster@{helo}", resolver=self.resolver
            )
            dkim = any(r.result == "pass" for r in outcome.dkim)
            self.arrivals.append(
                Arrival(lab_id, ip, mail_from, outcome.spf.result, dkim,
                        outcome.dmarc.result, literal.result, not mail_from)
            )  # fmt: skip
        finally:
            self.pending -= 1


async def deliver(
    resolver: dns.asyncresolver.Resolver,
    port: int,
    *,
    source: str,
    helo: str,
    mail_from: str,
    rcpt: str,
    raw: bytes,
    host: str | None = None,
) -> str:
    """Send one message as an MTA would: the MX of the recipient's domain (or `host`),
    from `source`; the server's final reply (a refusal at any step ends it)."""
    if host is None:
        try:
            hosts = await resolve_mx(resolver, rcpt.rpartition("@")[2])
        except MxError as exc:
            return f"{exc.status} {exc.text}"
        address = hosts[0].addresses[0]
    else:
        answer = await resolver.resolve(host, "A")
        address = answer[0].to_text()
    try:
        client = await LabClient.open(address, port, source=source)
    except OSError as exc:
        return f"421 cannot connect to {address}:{port}: {exc}"
    try:
        reply = await client.cmd(f"EHLO {helo}")
        if not reply.startswith("250"):
            return reply
        return await client.transaction(mail_from, [rcpt], dot_stuff(raw))
    finally:
        await client.close()
