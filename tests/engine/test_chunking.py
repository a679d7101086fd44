"""CHUNKING / BDAT (RFC 3030) over a real socket: chunks are read exactly, pipelined,
answered one by one, and a refused chunk's octets are still consumed so the session
stays in step."""

from __future__ import annotations

from pathlib import Path

import pytest

from mxflow.config import NodeConfig
from mxflow.roles.build import build_node
from tests.engine.helpers import (
    RawSmtp,
    maildir_gateway,
    maildir_messages,
    message,
    strip_received,
    wait_for,
)


@pytest.fixture
def cfg(tmp_path: Path) -> NodeConfig:
    return maildir_gateway(
        "gateway",
        tmp_path / "gw",
        limits={"max_message_size": 4096},
    )


async def test_pipelined_chunks_make_one_message(cfg: NodeConfig) -> None:
    raw = message("chunked")
    first, rest = raw[:37], raw[37:]
    async with build_node(cfg) as gw:
        client = await RawSmtp.open(gw.address, gw.port)
        _, text = await client.cmd("EHLO c.fabrikam.test")
        assert "CHUNKING" in text.split("\n")
        await client.send_raw(
            b"MAIL FROM:<a@fabrikam.test>\r\nRCPT TO:<bob@contoso.com>\r\n"
            + f"BDAT {len(first)}\r\n".encode() + first
            + f"BDAT {len(rest)} LAST\r\n".encode() + rest
        )  # fmt: skip
        replies = [await client.read_reply() for _ in range(4)]
        assert [c for c, _ in replies] == [250, 250, 250, 250]
        assert replies[2][1] == f"2.0.0 {len(first)} octets received"
        assert "queued as" in replies[3][1]
        # DATA may not follow BDAT in one transaction
        await client.cmd("MAIL FROM:<a@fabrikam.test>")
        await client.cmd("RCPT TO:<bob@contoso.com>")
        await client.send_raw(b"BDAT 3\r\nabc")
        assert (await client.read_reply())[0] == 250
        assert (await client.cmd("DATA"))[0] == 503
        await client.close()
        await wait_for(lambda: len(maildir_messages(cfg, "bob@contoso.com")) == 1)
    assert strip_received(maildir_messages(cfg, "bob@contoso.com")[0], 1) == raw


async def test_refused_and_oversized_chunks_keep_the_session_in_step(cfg: NodeConfig) -> None:
    async with build_node(cfg) as gw:
        client = await RawSmtp.open(gw.address, gw.port)
        await client.cmd("EHLO c.fabrikam.test")
        # no transaction: refused, yet its octets are read (they are not commands)
        await client.send_raw(b"BDAT 6 LAST\r\nQUIT\r\n")
        assert (await client.read_reply())[0] == 503
        assert (await client.cmd("NOOP"))[0] == 250
        # past max_message_size (4096): every chunk read, the last one answers 552
        await client.cmd("MAIL FROM:<a@fabrikam.test>")
        await client.cmd("RCPT TO:<bob@contoso.com>")
        await client.send_raw(b"BDAT 3000\r\n" + b"x" * 3000)
        assert (await client.read_reply())[0] == 250
        await client.send_raw(b"BDAT 3000 LAST\r\n" + b"y" * 3000)
        code, text = await client.read_reply()
        assert (code, text[:5]) == (552, "5.3.4")
        # bare LF in a chunk is refused like in DATA (BINARYMIME is not offered)
        await client.cmd("MAIL FROM:<a@fabrikam.test>")
        await client.cmd("RCPT TO:<bob@contoso.com>")
        await client.send_raw(b"BDAT 12 LAST\r\nSubject: x\n\n")
        code, text = await client.read_reply()
        assert (code, text[:5]) == (550, "5.6.0")
        # a size that is not a number cannot be skipped: 501 and the connection ends
        await client.send_raw(b"BDAT lots\r\n")
        assert (await client.read_reply())[0] == 501
        assert (await client.read_reply())[0] == 0
        assert gw.spool.ids() == []
