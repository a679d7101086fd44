"""The host's directory in a shared database (a real PostgreSQL server): the same answers
as the SQLite file, one directory for every node, and the copy a node looks up in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mxflow.store.directory import DIRECTORY, Directory, DirectoryError, SharedDirectory
from mxflow.store.schema import SchemaMismatch, migrate
from mxflow.store.sql import Database, open_database

CONFIG = (
    [("contoso.com", "authoritative"), ("relay.contoso.com", "internal_relay")],
    [("bob@contoso.com", "Bob"), ("alice@contoso.com", "")],
    [("robert@contoso.com", "bob@contoso.com")],
    [("team@contoso.com", ["robert@contoso.com", "alice@contoso.com", "x@fabrikam.test"])],
)


@pytest.fixture
def db(pg_url: str) -> Iterator[Database]:
    database = open_database(pg_url)
    migrate(database, [DIRECTORY])
    yield database
    database.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def directory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Directory]:
    if request.param == "sqlite":
        found = Directory(tmp_path / "directory.sqlite")
    else:
        found = Directory(request.getfixturevalue("db"))
    found.sync_config(*CONFIG)
    yield found
    found.close()


def test_the_same_answers_on_both_databases(directory: Directory) -> None:
    d = directory
    d.add_group("all@contoso.com", ["team@contoso.com", "bob@contoso.com"])
    everyone = d.expand("all@contoso.com")
    assert sorted(everyone.mailboxes) == ["alice@contoso.com", "bob@contoso.com"]
    assert everyone.external == ("x@fabrikam.test",)
    assert d.expand("anyone@relay.contoso.com").status == "relay"
    assert d.expand("nobody@contoso.com").status == "unknown"
    pending = d.add_domain("fabrikam.test")
    assert d.accepted("fabrikam.test") is None
    assert d.verify_domain("fabrikam.test", [pending.token]).accepts_mail
    d.add_mailbox("carol@fabrikam.test", "Carol")
    d.add_alias("c@fabrikam.test", "carol@fabrikam.test")
    d.set_password("carol@fabrikam.test", "s3cret")
    assert d.password_hash("CAROL@fabrikam.test") is not None
    assert d.owned_addresses("carol@fabrikam.test") == {"carol@fabrikam.test", "c@fabrikam.test"}
    with pytest.raises(DirectoryError, match="config file"):
        d.remove("bob@contoso.com")
    d.remove("c@fabrikam.test")
    assert d.valid_recipients("fabrikam.test") == ["carol@fabrikam.test"]
    d.sync_config([("contoso.com", "authoritative")], [("bob@contoso.com", "Bob")])
    assert d.recipient("team@contoso.com") is None and d.recipient("carol@fabrikam.test")


def test_syncing_unchanged_config_entries_writes_nothing(db: Database) -> None:
    one = Directory(db)
    one.sync_config(*CONFIG)
    (before,) = db.query("SELECT generation FROM directory_state")
    Directory(db).sync_config(*CONFIG)  # a second node starts with the same TOML
    assert db.query("SELECT generation FROM directory_state") == [before]
    one.sync_config(CONFIG[0], CONFIG[1])
    assert db.query("SELECT generation FROM directory_state")[0][0] == before[0] + 1


async def test_a_node_sees_what_another_added_after_its_refresh(db: Database) -> None:
    node_a = SharedDirectory(db)
    node_b = SharedDirectory(db)
    node_a.sync_config(*CONFIG)
    assert node_a.recipient("bob@contoso.com") is not None  # its own change: at once
    assert node_b.expand("bob@contoso.com").status == "not_accepted"  # its copy is older
    await node_b.refresh()
    assert node_b.expand("bob@contoso.com").status == "mailbox"
    node_a.add_mailbox("dave@contoso.com")
    node_a.set_password("dave@contoso.com", "pw")
    await node_b.refresh()
    assert node_b.expand("dave@contoso.com").status == "mailbox"
    assert node_b.password_hash("dave@contoso.com") == node_a.password_hash("dave@contoso.com")
    assert node_b.owned_addresses("bob@contoso.com") == {"bob@contoso.com", "robert@contoso.com"}
    await db.aclose()


def test_a_directory_at_an_older_schema_is_refused_by_open_directory(
    pg_url: str, tmp_path: Path
) -> None:
    from mxflow.store.directory import open_directory
    from tests.engine.helpers import node_config

    config = node_config("host", tmp_path, extra={"store": {"url": pg_url}})
    with pytest.raises(SchemaMismatch, match="directory schema version 0"):
        open_directory(config)
    db = open_database(pg_url)
    migrate(db, [DIRECTORY])
    db.close()
    with open_directory(config) as directory:
        assert directory.domains() == []
