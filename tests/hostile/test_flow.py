"""Attack 7, slow and greedy clients against the connection's flow control: a command line
trickled in gets no more time than the idle timeout, and a client that pipelines commands
without ever reading the replies is not read either, then dropped at the idle timeout —
where it once held its session (and the replies) for as long as it liked."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest

from mxflow.config import NodeConfig
from mxflow.roles.build import build_node
from tests.engine.helpers import RawSmtp, maildir_gateway, wait_for


@pytest.fixture
def cfg(tmp_path: Path) -> NodeConfig:
    return maildir_gateway(
        "gateway",
        tmp_path / "gw",
        limits={"timeout": 0.6, "data_timeout": 1.5},
    )


async def test_a_command_trickled_byte_by_byte_is_cut_at_the_idle_timeout(
    cfg: NodeConfig,
) -> None:
    async with build_node(cfg) as gw:
        client = await RawSmtp.open(gw.address, gw.port)
        started = time.monotonic()

        async def trickle() -> None:
            for byte in b"EHLO slowloris.example.test.and.on.and.on":
                client.writer.write(bytes([byte]))
                await asyncio.sleep(0.05)

        sending = asyncio.create_task(trickle())
        code, text = await client.read_reply()
        elapsed = time.monotonic() - started
        sending.cancel()
        assert (code, text[:5]) == (421, "4.4.2")
        assert elapsed < 1.5  # each byte did not buy more time
        client.writer.close()


async def test_a_client_that_never_reads_its_replies_is_dropped(cfg: NodeConfig) -> None:
    async with build_node(cfg) as gw:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # replies pile up soon
        sock.connect((gw.address, gw.port))
        sock.setblocking(False)
        batch = b"NOOP\r\n" * 10_000
        sent = 0
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # until the server stops reading
            try:
                sent += sock.send(batch)
            except BlockingIOError:
                await asyncio.sleep(0.05)
                try:
                    sent += sock.send(batch)
                except BlockingIOError:
                    break
            await asyncio.sleep(0)
        assert sent > 1_000_000  # far more than the replies the server may buffer for it
        server = gw.servers[0]
        assert server.budget.open == 1
        await wait_for(lambda: server.budget.open == 0, within=3)
        sock.close()
