"""The host's directory: config entries in force at start, CLI entries, expansion, export."""

from __future__ import annotations

from pathlib import Path

import pytest

from mxflow.store.directory import Directory, DirectoryError, record_expansion
from mxflow.store.trace import TraceStore


def seeded(tmp_path: Path) -> Directory:
    directory = Directory(tmp_path / "directory.sqlite")
    directory.sync_config(
        [("contoso.com", "authoritative"), ("relay.contoso.com", "internal_relay")],
        [("bob@contoso.com", "Bob"), ("alice@contoso.com", "")],
        [("robert@contoso.com", "bob@contoso.com")],
        [("team@contoso.com", ["robert@contoso.com", "alice@contoso.com", "x@fabrikam.test"])],
    )
    return directory


def test_config_entries_are_in_force_and_read_only(tmp_path: Path) -> None:
    with seeded(tmp_path) as d:
        assert d.accepted("contoso.com") is not None
        assert d.recipient("BOB@contoso.com") is not None
        with pytest.raises(DirectoryError, match="config file"):
            d.remove("bob@contoso.com")
        with pytest.raises(DirectoryError, match="config file"):
            d.change_members("team@contoso.com", add=["carol@contoso.com"])
        # the config changes: what it no longer declares goes away at the next start
        d.sync_config([("contoso.com", "authoritative")], [("bob@contoso.com", "Bob")])
        assert d.recipient("alice@contoso.com") is None
        assert d.recipient("team@contoso.com") is None
        assert d.domain("relay.contoso.com") is None


def test_expansion_of_alias_and_nested_group(tmp_path: Path) -> None:
    with seeded(tmp_path) as d:
        d.add_group("all@contoso.com", ["team@contoso.com", "bob@contoso.com"])
        d.change_members("all@contoso.com", add=["all@contoso.com"])  # a loop is harmless
        alias = d.expand("robert@contoso.com")
        assert (alias.status, alias.mailboxes) == ("alias", ("bob@contoso.com",))
        assert alias.expanded == (("robert@contoso.com", ("bob@contoso.com",)),)
        everyone = d.expand("all@contoso.com")
        assert everyone.status == "group"
        assert sorted(everyone.mailboxes) == ["alice@contoso.com", "bob@contoso.com"]
        assert everyone.external == ("x@fabrikam.test",)
        assert [e[0] for e in everyone.expanded] == [
            "all@contoso.com",
            "team@contoso.com",
            "robert@contoso.com",
        ]
        assert d.expand("nobody@contoso.com").status == "unknown"
        assert d.expand("anyone@relay.contoso.com").status == "relay"
        assert d.expand("a@fabrikam.test").status == "not_accepted"


def test_added_domain_is_pending_until_its_token_is_found(tmp_path: Path) -> None:
    with seeded(tmp_path) as d:
        entry = d.add_domain("Fabrikam.COM")
        assert entry.state == "pending" and entry.token.startswith("MS=ms")
        assert len(entry.token) == len("MS=ms12345678") and entry.token[5:].isdigit()
        d.add_mailbox("eve@fabrikam.com")
        assert d.accepted("fabrikam.com") is None
        assert d.expand("eve@fabrikam.com").status == "not_accepted"
        assert "eve@fabrikam.com" not in d.valid_recipients()
        assert d.verify_domain("fabrikam.com", ["v=spf1 -all", "MS=ms00000000"]).state == "pending"
        assert d.verify_domain("fabrikam.com", ["v=spf1 -all", entry.token]).accepts_mail
        assert "eve@fabrikam.com" in d.valid_recipients()
        with pytest.raises(DirectoryError, match="already"):
            d.add_domain("fabrikam.com")


@pytest.mark.parametrize(
    "bad",
    ["bob", "a b@contoso.com", "bob@contoso", "x@contoso.com\r\nRCPT", "\x00@c.com", "@c.com"],
)
def test_bad_addresses_are_refused(tmp_path: Path, bad: str) -> None:
    with seeded(tmp_path) as d, pytest.raises(DirectoryError):
        d.add_mailbox(bad)


def test_mailbox_needs_an_accepted_domain_and_a_free_address(tmp_path: Path) -> None:
    with seeded(tmp_path) as d:
        with pytest.raises(DirectoryError, match="not an accepted domain"):
            d.add_mailbox("a@fabrikam.test")
        with pytest.raises(DirectoryError, match="already exists"):
            d.add_alias("bob@contoso.com", "alice@contoso.com")
        d.add_mailbox("carol@contoso.com", "Carol")
        assert d.remove("carol@contoso.com", "mailbox").display_name == "Carol"
        with pytest.raises(DirectoryError, match="no group"):
            d.remove("bob@contoso.com", "group")


def test_export_lists_valid_recipients_of_accepting_authoritative_domains(tmp_path: Path) -> None:
    with seeded(tmp_path) as d:
        out = tmp_path / "export" / "recipients.txt"
        assert d.export(out) == 4
        lines = [x for x in out.read_text().splitlines() if not x.startswith("#")]
        assert lines == [
            "alice@contoso.com",
            "bob@contoso.com",
            "robert@contoso.com",
            "team@contoso.com",
        ]


def test_expansion_is_traced_as_expanded(tmp_path: Path) -> None:
    with seeded(tmp_path) as d, TraceStore(tmp_path / "trace.sqlite", node="host") as trace:
        record_expansion(trace, "Q1", d.expand("team@contoso.com"), message_id="<m@x>")
        record_expansion(trace, "Q1", d.expand("bob@contoso.com"))  # a mailbox: no row
        trace.flush()
        rows = [(e.recipient, e.status, e.detail) for e in trace.by_queue_id("Q1")]
    assert rows == [
        (
            "team@contoso.com",
            "Expanded",
            "expanded to alice@contoso.com, robert@contoso.com, x@fabrikam.test",
        ),
        ("robert@contoso.com", "Expanded", "expanded to bob@contoso.com"),
    ]


def test_an_unusable_directory_file_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "directory.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(DirectoryError, match="cannot open the directory"):
        Directory(bad)
