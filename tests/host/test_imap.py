"""Mailboxes a person can open: Dovecot (from Debian) serves the host's Maildirs over IMAP.

The host files a clean message in bob's Inbox and a spam (the gateway's verdict, through
the shipped mail flow rule) in his Junk folder; a private Dovecot reads those Maildirs and
imaplib logs in as bob and finds each where it belongs. Under CI=true the test fails when
dovecot is not installed (.ci/apt-packages lists dovecot-imapd).
"""

from __future__ import annotations

import asyncio
import imaplib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mxflow.delivery.mailbox import JUNK
from mxflow.roles.build import build_node
from tests.conftest import free_port, require, unique_loopback
from tests.engine.helpers import message, wait_for
from tests.host.dovecot import dovecot_binary, serve_dovecot
from tests.host.test_host_role import box, host_config, send

RULE = {
    "name": "gateway-spam-flag",
    "conditions": {"connector": ["from-gateway"], "header": "X-Spam-Flag", "matches": "YES"},
    "actions": {"set_scl": 6},
}


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory Dovecot's unprivileged mail user can traverse (pytest's is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="mxflow-imap-"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def read_folders(address: str, port: int) -> dict[str, list[bytes]]:
    """Log in as bob; the Subject lines of every message in INBOX and Junk."""
    imap = imaplib.IMAP4(address, port, timeout=10)
    try:
        imap.login("bob@contoso.com", "imap-secret")
        found: dict[str, list[bytes]] = {}
        for folder in ("INBOX", "Junk"):
            status, _ = imap.select(folder, readonly=True)
            assert status == "OK", folder
            _, ids = imap.search(None, "ALL")
            subjects = []
            for num in ids[0].split():
                _, data = imap.fetch(num, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
                part = data[0]
                assert isinstance(part, tuple)
                subjects.append(part[1].strip())
            found[folder] = subjects
        status, listing = imap.list()
        assert status == "OK" and any(b"Junk" in line for line in listing if line)
        return found
    finally:
        imap.logout()


async def test_dovecot_serves_inbox_and_junk_to_imap(shared_dir: Path) -> None:
    require(dovecot_binary() is not None, "dovecot (apt-get install dovecot-imapd)")
    gateway = unique_loopback()
    cfg = host_config(shared_dir / "host", gateway, mail_flow_rules=[RULE])
    async with build_node(cfg) as host:
        spam = b"X-Spam-Flag: YES\r\n" + message("cheap pills")
        assert (await send(host, gateway, "x@fabrikam.test", ["bob@contoso.com"], spam))[0] == 250
        ham = message("lunch on friday")
        assert (await send(host, gateway, "x@fabrikam.test", ["bob@contoso.com"], ham))[0] == 250
        await wait_for(lambda: len(box(cfg, "bob@contoso.com", JUNK)) == 1)
        await wait_for(lambda: len(box(cfg, "bob@contoso.com")) == 1)
    address = unique_loopback()
    port = free_port(address)
    users = {"bob@contoso.com": "imap-secret"}
    with serve_dovecot(shared_dir / "dovecot", cfg.data_dir / "maildir", users, address, port):
        folders = await asyncio.to_thread(read_folders, address, port)
    assert folders == {"INBOX": [b"Subject: lunch on friday"], "Junk": [b"Subject: cheap pills"]}
