"""The run-time block list: addresses and @domains, comments skipped, changes picked up
within a second without a reload."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mxflow.checks.lists import SenderListCheck, add_blocked_sender
from mxflow.config.filter import FilterPolicy
from mxflow.mail import Action, MessageContext


async def test_the_block_file_blocks_and_follows_changes(tmp_path: Path) -> None:
    path = tmp_path / "blocked_senders.txt"
    check = SenderListCheck(FilterPolicy(block_file=path))
    ctx = MessageContext(client_ip="127.9.9.9", mail_from="eve@fabrikam.test")
    assert (await check.check(ctx)).action is None  # no file yet: nothing blocked
    add_blocked_sender(path, "@fabrikam.test")
    add_blocked_sender(path, "@fabrikam.test")  # once is enough
    assert path.read_text().count("@fabrikam.test") == 1
    assert path.read_text().startswith("#")
    await asyncio.sleep(1.05)
    assert (await check.check(ctx)).action is Action.REJECT
    path.write_text("# emptied by the administrator\n")
    await asyncio.sleep(1.05)
    assert (await check.check(ctx)).action is None
