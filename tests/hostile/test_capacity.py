"""Attack 7: idle connections must not exhaust the node (a global cap, answered 421 4.7.0)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mxflow.roles.build import build_node
from mxflow.smtp.capacity import RESERVE, ConnectionBudget
from tests.engine.helpers import RawSmtp, maildir_gateway


def test_the_cap_stays_under_the_descriptor_limit() -> None:
    assert ConnectionBudget(10_000, nofile=1024).capacity == (1024 - RESERVE) * 3 // 4
    assert ConnectionBudget(5, nofile=1024).capacity == 5


async def test_idle_connections_past_the_cap_get_421_and_fresh_ones_get_in_later(
    tmp_path: Path,
) -> None:
    cfg = maildir_gateway(
        "gateway",
        tmp_path / "gw",
        limits={"max_connections": 5},
    )
    async with build_node(cfg) as gw:
        idle = [await RawSmtp.open(gw.address, gw.port) for _ in range(5)]
        reader, writer = await asyncio.open_connection(gw.address, gw.port)
        line = await asyncio.wait_for(reader.readline(), 5)
        assert line.startswith(b"421 4.7.0")
        assert await asyncio.wait_for(reader.read(), 5) == b""  # and closed
        writer.close()
        await idle.pop().close()
        await asyncio.sleep(0.1)
        fresh = await RawSmtp.open(gw.address, gw.port)  # asserts the 220
        assert (await fresh.cmd("NOOP"))[0] == 250
        for client in [*idle, fresh]:
            await client.close()
