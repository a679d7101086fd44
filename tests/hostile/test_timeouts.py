"""Attack 7, slow clients (RFC 5321 4.5.3.2): every wait for a command or for more data
is bounded by the idle `timeout`, and one message's data by `data_timeout` however it
trickles in — while a slow but steady client still gets its message through."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mxflow.config import NodeConfig
from mxflow.roles.build import build_node
from tests.engine.helpers import RawSmtp, maildir_gateway, message, stuffed


@pytest.fixture
def cfg(tmp_path: Path) -> NodeConfig:
    return maildir_gateway(
        "gateway",
        tmp_path / "gw",
        limits={"timeout": 0.6, "data_timeout": 1.5},
    )


async def _trickle(client: RawSmtp, data: bytes, pieces: int, pause: float) -> None:
    step = len(data) // pieces + 1
    for i in range(0, len(data), step):
        await client.send_raw(data[i : i + step])
        await asyncio.sleep(pause)


async def _start_data(cfg: NodeConfig, gw_address: str, port: int) -> RawSmtp:
    client = await RawSmtp.open(gw_address, port)
    await client.cmd("EHLO slow.fabrikam.test")
    await client.cmd("MAIL FROM:<a@fabrikam.test>")
    await client.cmd("RCPT TO:<bob@contoso.com>")
    assert (await client.cmd("DATA"))[0] == 354
    return client


async def test_slow_but_steady_data_longer_than_the_idle_timeout_is_taken(cfg: NodeConfig) -> None:
    async with build_node(cfg) as gw:
        client = await _start_data(cfg, gw.address, gw.port)
        await _trickle(client, stuffed(message("steady")), pieces=4, pause=0.3)  # 1.2 s
        code, text = await client.read_reply()
        assert code == 250, text


async def test_a_pause_longer_than_the_idle_timeout_ends_the_session(cfg: NodeConfig) -> None:
    async with build_node(cfg) as gw:
        client = await _start_data(cfg, gw.address, gw.port)
        await client.send_raw(b"Subject: stalled\r\n")
        code, text = await client.read_reply()  # nothing more is sent
        assert (code, text[:5]) == (421, "4.4.2")


async def test_data_that_never_ends_is_cut_at_data_timeout(cfg: NodeConfig) -> None:
    async with build_node(cfg) as gw:
        client = await _start_data(cfg, gw.address, gw.port)
        trickle = asyncio.create_task(_trickle(client, b"x" * 4000 + b"\r\n", 40, 0.1))
        code, text = await asyncio.wait_for(client.read_reply(), 5)
        trickle.cancel()
        assert (code, text[:5]) == (421, "4.4.2")
        assert gw.spool.ids() == []
