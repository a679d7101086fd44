"""Maildir++ delivery: Inbox and Junk, final-delivery headers, and the shipped host example."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mxflow.config import load_config
from mxflow.delivery.mailbox import (
    JUNK,
    deliver_maildir,
    folder_for_scl,
    mailbox_dir,
    read_maildir,
)
from mxflow.intake.rules import RuleInput, evaluate_rules
from mxflow.roles.build import build_node
from tests.clirun import ROOT
from tests.engine.helpers import RawSmtp, message, stuffed, wait_for

RAW = b"From: a@fabrikam.test\r\nSubject: hi\r\n\r\nHello.\r\n"


async def test_inbox_and_junk_in_maildir_plus_plus_layout(tmp_path: Path) -> None:
    replies = await deliver_maildir(
        tmp_path, ["Bob@contoso.com"], "Q1", RAW, folder=JUNK, mail_from="a@fabrikam.test"
    )
    assert replies["Bob@contoso.com"].code == 250
    box = mailbox_dir(tmp_path, "bob@contoso.com")
    for sub in ("new", "cur", "tmp", ".Junk/new", ".Junk/cur", ".Junk/tmp"):
        assert (box / sub).is_dir(), sub
    assert (box / ".Junk" / "maildirfolder").exists()
    assert read_maildir(tmp_path, "bob@contoso.com") == []
    [stored] = read_maildir(tmp_path, "bob@contoso.com", JUNK)
    assert stored == (b"Return-Path: <a@fabrikam.test>\r\nDelivered-To: Bob@contoso.com\r\n" + RAW)
    assert list((box / ".Junk" / "tmp").iterdir()) == []


async def test_existing_callers_get_the_message_unchanged_in_the_inbox(tmp_path: Path) -> None:
    await deliver_maildir(tmp_path, ["bob@contoso.com"], "Q2", RAW)
    assert read_maildir(tmp_path, "bob@contoso.com") == [RAW]
    await deliver_maildir(tmp_path, ["bob@contoso.com"], "Q3", RAW, mail_from="")
    assert read_maildir(tmp_path, "bob@contoso.com")[1].startswith(b"Return-Path: <>\r\n")


def test_scl_decides_the_folder_and_bad_folder_names_are_refused(tmp_path: Path) -> None:
    assert [folder_for_scl(s) for s in (-1, 0, 1, 5, 6, 9)] == [
        "INBOX", "INBOX", "INBOX", "Junk", "Junk", "Junk"
    ]  # fmt: skip
    with pytest.raises(ValueError):
        read_maildir(tmp_path, "bob@contoso.com", "../../etc")


async def test_a_rule_moves_a_gateway_junked_message_to_junk(tmp_path: Path) -> None:
    config = load_config(ROOT / "examples" / "host.toml", data_dir=tmp_path)
    raw = b"X-Spam-Flag: YES\r\n" + RAW
    decision = evaluate_rules(
        config.host.mail_flow_rules, RuleInput(raw, "127.10.10.1", connector="from-gateway")
    )
    scl = decision.scl if decision.scl is not None else 1
    await deliver_maildir(
        tmp_path, ["bob@contoso.com"], "Q4", raw, folder=folder_for_scl(scl), mail_from="a@f.test"
    )
    assert scl == 6 and len(read_maildir(tmp_path, "bob@contoso.com", JUNK)) == 1


async def test_the_example_host_stands_alone_and_takes_the_gateways_mail(tmp_path: Path) -> None:
    config = load_config(ROOT / "examples" / "host.toml", data_dir=tmp_path / "host")
    assert config.dns_resolver is None and config.filter is None
    config.listeners = [dataclasses.replace(x, port=0) for x in config.listeners]
    async with build_node(config) as host:
        client = await RawSmtp.open("127.40.0.1", host.port, source="127.10.10.1")
        await client.cmd("EHLO gateway.contoso.test")
        code, text = await client.mail(
            "alice@fabrikam.test", ["bob@contoso.com"], stuffed(message("via gateway"))
        )
        assert code == 250, text
        await client.close()
        new = tmp_path / "host" / "maildir" / "bob@contoso.com" / "new"
        await wait_for(lambda: new.exists() and any(new.iterdir()))
    assert (new.parent / "cur").is_dir()
