"""Test helpers for the engine: node configs on unique 127.x addresses, a raw SMTP client.

The raw client sends exactly the bytes a test gives it (smuggling tests need bare CR/LF),
binds its own source address, and returns (code, text) for every reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from mxflow.config import NodeConfig, parse_config
from mxflow.delivery.mailbox import read_maildir
from tests.conftest import free_port, unique_loopback


def node_config(
    name: str,
    data_dir: Path,
    *,
    address: str | None = None,
    port: int = 0,
    tls: str = "none",
    domains: list[dict[str, Any]] | None = None,
    connectors: list[dict[str, Any]] | None = None,
    routes: list[dict[str, Any]] | None = None,
    limits: dict[str, Any] | None = None,
    delivery: dict[str, Any] | None = None,
    server: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> NodeConfig:
    """A node's config; `extra` adds top-level tables (`dns`, `filter`, `auth`, ...)."""
    address = address or unique_loopback()
    listener: dict[str, Any] = {"address": address, "port": port, "tls": tls}
    if tls != "none":
        listener |= {"cert": "tls/node.crt", "key": "tls/node.key", "generate_cert": True}
    data: dict[str, Any] = {
        "node": {"name": name, "hostname": f"{name}.lab.test"},
        "listeners": [listener],
        "accepted_domains": domains or [],
        "inbound_connectors": connectors or [],
        "routes": routes or [],
        "limits": limits or {},
        "delivery": {
            "source_address": address,
            "retry_intervals": [0.3],
            "connect_timeout": 2,
            **(delivery or {}),
        },
        "server": server or {},
        **(extra or {}),
    }
    return parse_config(data, f"<{name}>", data_dir=data_dir)


def maildir_gateway(
    name: str, data_dir: Path, *, maildir: str = "maildir", **kwargs: Any
) -> NodeConfig:
    """A node for contoso.com (internal relay) delivering into a Maildir of its data dir."""
    return node_config(
        name,
        data_dir,
        domains=[{"domain": "contoso.com", "type": "internal_relay"}],
        routes=[{"domains": ["contoso.com"], "maildir": maildir}],
        **kwargs,
    )


def relay_gateway_toml(
    name: str,
    data_dir: Path,
    sink: str,
    *,
    address: str,
    route_name: str = "",
    extra: str = "",
) -> str:
    """The TOML of a gateway for contoso.com (internal relay) on `address` (any port),
    relaying in plain SMTP to `sink` (HOST:PORT); `extra` appends tables (`[filter]`, ...)."""
    route = f'name = "{route_name}"\n' if route_name else ""
    return f"""
[node]
name = "{name}"
hostname = "{name}.lab.test"
data_dir = "{data_dir}"

[[listeners]]
address = "{address}"
port = 0
tls = "none"

[[accepted_domains]]
domain = "contoso.com"
type = "internal_relay"

[[routes]]
{route}domains = ["contoso.com"]
smart_hosts = ["{sink}"]
tls = "none"

[delivery]
source_address = "{address}"
retry_intervals = ["1s"]
{extra}"""


def gateway_config(
    data_dir: Path,
    sink_address: str,
    sink_port: int,
    *,
    name: str = "gateway",
    tls: str = "opportunistic",
    listen_tls: str = "none",
    delivery: dict[str, Any] | None = None,
    domains: list[str] | None = None,
    route: dict[str, Any] | None = None,
) -> NodeConfig:
    """A gateway for contoso.com relaying `domains` to one smart host; `route` adds keys."""
    return node_config(
        name,
        data_dir,
        tls=listen_tls,
        domains=[{"domain": "contoso.com", "type": "internal_relay"}],
        routes=[
            {
                "name": "downstream",
                "domains": domains or ["contoso.com", "fabrikam.test"],
                "smart_hosts": [f"{sink_address}:{sink_port}"],
                "tls": tls,
                **(route or {}),
            }
        ],
        delivery=delivery,
    )


def sink_config(
    data_dir: Path,
    *,
    domains: tuple[str, ...] = ("contoso.com",),
    recipients: Any = "any",
    tls: str = "none",
    address: str | None = None,
    port: int = 0,
    require_tls: bool = False,
) -> NodeConfig:
    """A downstream that stores what it accepts in Maildirs under data_dir/maildir."""
    address = address or unique_loopback()
    if port == 0:
        port = free_port(address)
    connectors = []
    if require_tls:
        connectors = [{"name": "tls-only", "from": ["0.0.0.0/0"], "require_tls": True}]
    return node_config(
        "sink",
        data_dir,
        address=address,
        port=port,
        tls=tls,
        domains=[{"domain": d, "type": "authoritative", "recipients": recipients} for d in domains],
        connectors=connectors,
        routes=[{"name": "local", "domains": ["*"], "maildir": "maildir"}],
    )


def maildir_messages(config: NodeConfig, rcpt: str) -> list[bytes]:
    return read_maildir(config.data_dir / "maildir", rcpt)


async def wait_for(
    predicate: Callable[[], bool] | Callable[[], Awaitable[bool]],
    within: float = 15.0,
    interval: float = 0.05,
) -> None:
    """Poll `predicate` until it is true; fail the test after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = predicate()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(interval)


class RawSmtp:
    """A minimal SMTP client over asyncio streams that sends bytes exactly as given."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, host: str, port: int, *, source: str | None = None) -> RawSmtp:
        reader, writer = await asyncio.open_connection(
            host, port, local_addr=(source, 0) if source else None
        )
        client = cls(reader, writer)
        code, _ = await client.read_reply()
        assert code == 220
        return client

    async def read_reply(self) -> tuple[int, str]:
        lines = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), 10)
            if not line:
                return 0, "connection closed"
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            lines.append(text[4:])
            if text[3:4] != "-":
                return int(text[:3]), "\n".join(lines)

    async def cmd(self, line: str) -> tuple[int, str]:
        self.writer.write(line.encode() + b"\r\n")
        return await self.read_reply()

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def mail(self, mail_from: str, rcpts: list[str], body: bytes) -> tuple[int, str]:
        """A whole transaction; `body` is sent as-is and must end with CRLF.CRLF."""
        code, text = await self.cmd(f"MAIL FROM:<{mail_from}>")
        if code != 250:
            return code, text
        ok = 0
        for r in rcpts:
            code, text = await self.cmd(f"RCPT TO:<{r}>")
            ok += code == 250
        if not ok:
            return code, text
        code, text = await self.cmd("DATA")
        if code != 354:
            return code, text
        await self.send_raw(body)
        return await self.read_reply()

    async def close(self) -> None:
        with contextlib.suppress(ConnectionError, TimeoutError):
            await self.cmd("QUIT")
        self.writer.close()


def message(
    subject: str = "hello",
    *,
    sender: str = "alice@fabrikam.test",
    to: str = "bob@contoso.com",
    body: str = "Hello Bob.\r\n",
    message_id: str | None = None,
) -> bytes:
    """A small RFC 5322 message with CRLF line ends (not dot-stuffed, no terminator)."""
    mid = message_id or f"<{subject.replace(' ', '-')}.{time.time_ns()}@fabrikam.test>"
    return (
        f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: {mid}\r\n"
        f"Date: Fri, 27 Nov 2026 06:00:00 +0000\r\n\r\n{body}"
    ).encode()


def stuffed(raw: bytes) -> bytes:
    """`raw` dot-stuffed and terminated, ready to follow DATA."""
    data = (b"\r\n" + raw).replace(b"\r\n.", b"\r\n..")[2:]
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


def strip_received(raw: bytes, count: int) -> bytes:
    """`raw` without its first `count` Received headers (each may be folded)."""
    for _ in range(count):
        assert raw.startswith(b"Received: "), raw[:200]
        end = raw.index(b"\r\n")
        while raw[end + 2 : end + 3] in (b" ", b"\t"):
            end = raw.index(b"\r\n", end + 2)
        raw = raw[end + 2 :]
    return raw
