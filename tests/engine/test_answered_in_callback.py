"""A node without a filter or shared counters answers the greeting and DATA within the
connection's callback (no task); its refusals there are the same as on the task path: 421
before anything while the trace cannot record, 451 to DATA."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mxflow.roles.build import build_node
from tests.engine.helpers import RawSmtp, maildir_gateway


async def test_greeting_and_data_refused_while_the_trace_cannot_record(tmp_path: Path) -> None:
    cfg = maildir_gateway("gateway", tmp_path / "gw")
    async with build_node(cfg) as gw:
        client = await RawSmtp.open(gw.address, gw.port)  # 220: the trace records
        await client.cmd("EHLO c.fabrikam.test")
        assert (await client.cmd("MAIL FROM:<a@fabrikam.test>"))[0] == 250
        assert (await client.cmd("RCPT TO:<bob@contoso.com>"))[0] == 250
        refuse_at = gw.trace._refuse_at
        gw.trace._refuse_at = 0  # as if the trace's database were far behind
        try:
            code, text = await client.cmd("DATA")
            assert code == 451 and text.startswith("4.3.0 ")
            reader, writer = await asyncio.open_connection(gw.address, gw.port)
            greeting = await asyncio.wait_for(reader.readline(), 10)
            assert greeting.startswith(b"421 4.3.0 Service temporarily unavailable")
            assert await asyncio.wait_for(reader.read(), 10) == b""  # and closed
            writer.close()
        finally:
            gw.trace._refuse_at = refuse_at
        assert (await client.cmd("MAIL FROM:<a@fabrikam.test>"))[0] == 250
        assert (await client.cmd("RCPT TO:<bob@contoso.com>"))[0] == 250
        assert (await client.cmd("DATA"))[0] == 354
        await client.send_raw(b"Subject: after\r\n\r\nThe trace records again.\r\n.\r\n")
        code, text = await client.read_reply()
        assert code == 250 and "queued as" in text
        await client.close()
