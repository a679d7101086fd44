"""The archiver role over real sockets: it relays without altering the message (the
sender's DKIM signature still verifies after it), journals a copy before its 250, and
carries outbound mail from the host's relay connector to the Internet."""

from __future__ import annotations

from pathlib import Path

import pytest

from mxflow.auth.dkim import sign_sync, verify_dkim
from mxflow.auth.keys import generate_key, load_signing_key
from mxflow.auth.txt import ResolverTxtLookup
from mxflow.config import parse_config
from mxflow.errors import ConfigError
from mxflow.roles.build import build_node
from mxflow.store.archive import Archive
from tests.conftest import unique_loopback
from tests.dnsserver import serve_zone_text
from tests.engine.helpers import (
    RawSmtp,
    maildir_messages,
    message,
    node_config,
    sink_config,
    strip_received,
    stuffed,
    wait_for,
)


async def test_the_archiver_relays_unaltered_and_journals(tmp_path: Path) -> None:
    pem, record = generate_key("ed25519")
    original = message("signed report", sender="alice@fabrikam.test")
    name, value = sign_sync(original, "fabrikam.test", "s1", load_signing_key(pem))
    signed = f"{name}: {value}\r\n".encode() + original
    zone = f'$ORIGIN fabrikam.test.\ns1._domainkey IN TXT "{record}"\n'
    sink = sink_config(tmp_path / "sink")
    async with serve_zone_text(zone) as dns_server, build_node(sink) as host:
        archiver_cfg = node_config(
            "archiver",
            tmp_path / "archiver",
            domains=[{"domain": "contoso.com", "type": "internal_relay"}],
            routes=[{"domains": ["contoso.com"], "tls": "none",
                     "smart_hosts": [f"{host.address}:{host.port}"]}],
            extra={"node": {"name": "archiver", "role": "archiver"},
                   "archive": {"dir": "journal", "retention": "30d"}},
        )  # fmt: skip
        async with build_node(archiver_cfg) as archiver:
            client = await RawSmtp.open(archiver.address, archiver.port, source=unique_loopback())
            await client.cmd("EHLO mail.fabrikam.test")
            code, _ = await client.mail("alice@fabrikam.test", ["bob@contoso.com"], stuffed(signed))
            await client.close()
            assert code == 250
            await wait_for(lambda: len(maildir_messages(sink, "bob@contoso.com")) == 1)
        (delivered,) = maildir_messages(sink, "bob@contoso.com")
        # what the sink added, then the archiver's Received line, then exactly what the
        # sender sent
        relayed = delivered[delivered.index(b"Received: from mail.fabrikam.test") :]
        assert strip_received(relayed, 1) == signed
        results = await verify_dkim(delivered, ResolverTxtLookup(dns_server.resolver()))
        assert [r.result for r in results] == ["pass"]
    archive = Archive(tmp_path / "archiver" / "journal")
    (entry,) = list(archive.entries())
    assert entry.mail_from == "alice@fabrikam.test" and entry.rcpt_tos == ("bob@contoso.com",)
    assert strip_received(archive.read(entry), 1) == signed
    assert archive.verify() == []


async def test_an_archive_that_cannot_write_answers_451(tmp_path: Path) -> None:
    """Nothing is relayed that is not in the archive: a failed journal write is a 451."""
    sink = sink_config(tmp_path / "sink")
    async with build_node(sink) as host:
        cfg = node_config(
            "archiver",
            tmp_path / "archiver",
            domains=[{"domain": "contoso.com", "type": "internal_relay"}],
            routes=[{"domains": ["contoso.com"], "tls": "none",
                     "smart_hosts": [f"{host.address}:{host.port}"]}],
            extra={"node": {"name": "archiver", "role": "archiver"}},
        )  # fmt: skip
        async with build_node(cfg) as archiver:
            messages = tmp_path / "archiver" / "archive" / "messages"
            messages.rmdir()
            messages.write_text("not a directory")  # every journal write now fails
            client = await RawSmtp.open(archiver.address, archiver.port, source=unique_loopback())
            await client.cmd("EHLO mail.fabrikam.test")
            code, text = await client.mail(
                "a@fabrikam.test", ["bob@contoso.com"], stuffed(message())
            )
            await client.close()
            assert (code, text[:5]) == (451, "4.3.0"), text
            assert archiver.spool.ids() == []


def test_the_archive_table_is_checked() -> None:
    base = {
        "node": {"name": "a", "role": "archiver"},
        "listeners": [{"address": "127.0.0.1", "port": 0, "tls": "none"}],
    }
    cfg = parse_config(base | {"archive": {"retention": "30d"}}, "<a>", data_dir="/tmp/a")
    assert cfg.archive is not None and cfg.archive.retention == 30 * 86400
    assert cfg.archive.dir == Path("/tmp/a/archive")
    with pytest.raises(ConfigError, match=r"archive\.keep"):
        parse_config(base | {"archive": {"keep": 1}}, "<a>", data_dir="/tmp/a")
    with pytest.raises(ConfigError, match=r"archive\.retention"):
        parse_config(base | {"archive": {"retention": "forever"}}, "<a>", data_dir="/tmp/a")
