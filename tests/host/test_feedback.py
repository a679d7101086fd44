"""Junk-folder moves teach the host's filter (issue 16): a message moved out of Junk is
learnt as ham, one moved into Junk as spam, one moved to Trash not at all; a second pass
learns nothing again."""

from __future__ import annotations

import os
from pathlib import Path

from mxflow.delivery.feedback import learn_for_node
from mxflow.delivery.mailbox import JUNK, folder_dir, mailbox_dir
from mxflow.roles.build import build_node
from tests.conftest import unique_loopback
from tests.engine.helpers import message, wait_for
from tests.host.test_host_role import box, host_config, send

RULE = {
    "name": "gateway-spam-flag",
    "priority": 10,
    "conditions": {"connector": ["from-gateway"], "header": "X-Spam-Flag", "matches": "YES"},
    "actions": {"set_scl": 6},
}


def _move(src_folder: Path, dst_folder: Path) -> None:
    (src,) = [
        p
        for sub in ("new", "cur")
        if (src_folder / sub).is_dir()
        for p in (src_folder / sub).iterdir()
    ]
    (dst_folder / "cur").mkdir(parents=True, exist_ok=True)
    os.replace(src, dst_folder / "cur" / f"{src.name.split(':')[0]}:2,S")


async def test_moves_in_and_out_of_junk_train_the_filter(tmp_path: Path) -> None:
    gateway = unique_loopback()
    policy = {"checks": ["headers"], "quarantine_score": 50, "reject_score": 60}
    cfg = host_config(tmp_path / "host", gateway, mail_flow_rules=[RULE], filter=policy)
    async with build_node(cfg) as host:
        flagged = b"X-Spam-Flag: YES\r\n" + message("quarterly figures attached")
        for raw in (flagged, message("lunch on friday")):
            assert (await send(host, gateway, "x@fabrikam.test", ["bob@contoso.com"], raw))[
                0
            ] == 250
        assert (await send(host, gateway, "x@fabrikam.test", ["alice@contoso.com"], raw))[0] == 250
        await wait_for(lambda: len(box(cfg, "bob@contoso.com", JUNK)) == 1)
        await wait_for(lambda: len(box(cfg, "bob@contoso.com")) == 1)
        await wait_for(lambda: len(box(cfg, "alice@contoso.com")) == 1)
    root = cfg.data_dir / "maildir"
    bob, alice = mailbox_dir(root, "bob@contoso.com"), mailbox_dir(root, "alice@contoso.com")
    inbox, junk = folder_dir(bob), folder_dir(bob, JUNK)
    moved_out = bob / "moved-out"  # a holding folder: both moves at once, as a client would
    _move(junk, moved_out)  # the user: "not junk"
    _move(inbox, junk)  # the user: "junk"
    _move(moved_out, inbox)
    _move(folder_dir(alice), folder_dir(alice, "Trash"))  # unwanted is not spam
    first = learn_for_node(cfg)
    assert (first.ham, first.spam) == (1, 1)
    again = learn_for_node(cfg)
    assert (again.ham, again.spam, again.seen) == (0, 0, 0)
    assert len(list((junk / "cur").iterdir())) == 1  # learning moves nothing


async def test_a_damaged_feedback_list_means_judging_again(tmp_path: Path) -> None:
    gateway = unique_loopback()
    policy = {"checks": ["headers"], "quarantine_score": 50, "reject_score": 60}
    cfg = host_config(tmp_path / "host", gateway, filter=policy)
    (cfg.data_dir / "maildir").mkdir(parents=True)
    for damaged in (b"\x00\xff not json", b'{"a": 1}', b"[1, 2"):
        (cfg.data_dir / "folder-feedback.json").write_bytes(damaged)
        assert learn_for_node(cfg).seen == 0  # nothing to judge, and no traceback
