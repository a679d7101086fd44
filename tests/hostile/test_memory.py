"""Attack 7: unfinished DATA transfers must not hold the node's memory.

Forty clients that each sent 24 MB and never finished once held 1 GB. Past 512 KB, DATA
still arriving is parked in an unlinked temporary file; the message that does finish is
read back whole and relayed byte for byte.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from mxflow.roles.build import build_node
from tests.engine.helpers import (
    RawSmtp,
    maildir_gateway,
    maildir_messages,
    strip_received,
    wait_for,
)


def big_message(size: int) -> bytes:
    line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n"
    body = line * (size // len(line))
    return b"From: a@fabrikam.test\r\nSubject: big\r\n\r\n" + body


async def test_a_transfer_that_never_ends_is_parked_on_disk(tmp_path: Path) -> None:
    cfg = maildir_gateway("gateway", tmp_path / "gw")
    raw = big_message(3 * 1024 * 1024)
    async with build_node(cfg) as gw:
        server = gw.servers[0]
        stalled = [await RawSmtp.open(gw.address, gw.port) for _ in range(3)]
        for client in stalled:
            await client.cmd("EHLO slow.fabrikam.test")
            await client.cmd("MAIL FROM:<a@fabrikam.test>")
            await client.cmd("RCPT TO:<bob@contoso.com>")
            assert (await client.cmd("DATA"))[0] == 354
            await client.send_raw(raw[: 2 * 1024 * 1024])  # and never the end
        spill = server._spill
        assert spill is not None
        await wait_for(lambda: spill.parked_bytes >= 3 * (2 * 1024 * 1024 - 600 * 1024))
        # parked in unlinked files: nothing is left in the directory to clean up
        assert os.listdir(cfg.data_dir / "incoming") == []
        honest = await RawSmtp.open(gw.address, gw.port)
        await honest.cmd("EHLO c.fabrikam.test")
        code, text = await honest.mail("a@fabrikam.test", ["bob@contoso.com"], raw + b".\r\n")
        assert code == 250, text
        await wait_for(lambda: len(maildir_messages(cfg, "bob@contoso.com")) == 1)
        for client in [*stalled, honest]:
            client.writer.close()
        await asyncio.sleep(0.05)
    assert strip_received(maildir_messages(cfg, "bob@contoso.com")[0], 1) == raw
