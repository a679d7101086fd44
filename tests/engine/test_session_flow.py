"""The order of things on one connection (smtp/connection.py): input that arrives while the
node works (the spool's fsync before a 250) waits, in order, and is answered after it; a
stopping node closes sessions between transactions at once and lets one in a transaction
finish its message."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mxflow.config import NodeConfig
from mxflow.roles.build import build_node
from tests.engine.helpers import (
    RawSmtp,
    maildir_gateway,
    maildir_messages,
    message,
    stuffed,
    wait_for,
)


@pytest.fixture
def cfg(tmp_path: Path) -> NodeConfig:
    return maildir_gateway("gateway", tmp_path / "gw")


async def test_a_transaction_pipelined_behind_the_final_dot_is_answered_in_order(
    cfg: NodeConfig,
) -> None:
    async with build_node(cfg) as gw:
        client = await RawSmtp.open(gw.address, gw.port)
        await client.cmd("EHLO c.fabrikam.test")
        await client.send_raw(
            b"MAIL FROM:<a@fabrikam.test>\r\nRCPT TO:<bob@contoso.com>\r\nDATA\r\n"
        )
        assert [(await client.read_reply())[0] for _ in range(3)] == [250, 250, 354]
        # the next transaction arrives while the first message is being spooled
        await client.send_raw(
            stuffed(message("first"))
            + b"MAIL FROM:<a@fabrikam.test>\r\nRCPT TO:<bob@contoso.com>\r\nDATA\r\n"
        )
        first = await client.read_reply()
        assert first[0] == 250 and "queued as" in first[1]
        assert [(await client.read_reply())[0] for _ in range(3)] == [250, 250, 354]
        await client.send_raw(stuffed(message("second")) + b"QUIT\r\n")
        second = await client.read_reply()
        assert second[0] == 250 and second[1] != first[1]
        assert (await client.read_reply())[0] == 221
        await wait_for(lambda: len(maildir_messages(cfg, "bob@contoso.com")) == 2)
    delivered = maildir_messages(cfg, "bob@contoso.com")
    assert sorted(m.split(b"Subject: ")[1].split(b"\r\n")[0] for m in delivered) == [
        b"first",
        b"second",
    ]


async def test_stopping_closes_idle_sessions_and_lets_a_transaction_finish(
    cfg: NodeConfig,
) -> None:
    async with build_node(cfg) as gw:
        idle = await RawSmtp.open(gw.address, gw.port)
        await idle.cmd("EHLO idle.fabrikam.test")
        busy = await RawSmtp.open(gw.address, gw.port)
        await busy.cmd("EHLO busy.fabrikam.test")
        assert (await busy.cmd("MAIL FROM:<a@fabrikam.test>"))[0] == 250
        assert (await busy.cmd("RCPT TO:<bob@contoso.com>"))[0] == 250
        server = gw.servers[0]
        stopping = asyncio.create_task(server.stop(grace=10))
        code, text = await idle.read_reply()
        assert (code, text[:5]) == (421, "4.3.2")
        assert not stopping.done()  # the transaction in progress may finish
        assert (await busy.cmd("DATA"))[0] == 354
        await busy.send_raw(stuffed(message("last one")))
        code, text = await busy.read_reply()
        assert code == 250, text
        code, text = await busy.read_reply()
        assert (code, text[:5]) == (421, "4.3.2")  # and then the session ends
        await asyncio.wait_for(stopping, 5)
        assert server.budget.open == 0
        for client in (idle, busy):
            client.writer.close()
        assert gw.spool.ids() or maildir_messages(cfg, "bob@contoso.com")
