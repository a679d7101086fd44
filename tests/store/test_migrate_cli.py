"""`mxflow store migrate`, `serve` and `config check` against a real PostgreSQL: a node
refuses a database it does not know (empty, or at the previous schema version) naming
the command to run; after `mxflow store migrate` it serves, and rows an older version
wrote are still there."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from mxflow.store.registry import COMPONENTS
from mxflow.store.schema import migrate
from mxflow.store.sql import open_database
from tests.conftest import free_port, unique_loopback
from tests.test_serve import MXFLOW, node_toml, one_line, serve, serve_fails, wait_listening


def run(*args: str) -> tuple[int, str, str]:
    done = subprocess.run(
        [*MXFLOW, *args], check=False, capture_output=True, text=True, timeout=120
    )
    return done.returncode, done.stdout, done.stderr


def node(tmp_path: Path, url: str) -> tuple[Path, str, int]:
    address = unique_loopback()
    port = free_port(address)
    config = tmp_path / "node.toml"
    config.write_text(node_toml(address, port, extra=f'[store]\nurl = "{url}"\n'))
    return config, address, port


def serves(config: Path, data: Path, address: str, port: int) -> None:
    """The node starts, listens, and stops cleanly on SIGTERM."""
    proc = serve(config, data)
    try:
        wait_listening(address, port, proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err


def test_an_empty_database_is_refused_until_migrated(tmp_path: Path, pg_url: str) -> None:
    config, address, port = node(tmp_path, pg_url)
    code, out, err = run("config", "check", str(config))
    assert code == 0, err
    assert "shared store (trace, quarantine): postgresql://mxflow@" in out
    assert "trace schema version 0" in err and "mxflow store migrate" in err
    status, err = serve_fails(config, tmp_path / "data")
    line = one_line(err)
    assert status == 2 and "trace schema version 0, this mxflow needs 2" in line, line
    assert "run `mxflow store migrate --config NODE.toml`" in line
    code, out, _ = run("store", "status", "--config", str(config))
    assert code == 1 and "trace          0 (needed 2)" in out
    code, out, err = run("store", "migrate", "--config", str(config))
    assert code == 0, err
    assert out.splitlines()[:3] == [
        "applied trace 1: events: one row per event and recipient",
        "applied trace 2: events.uid: a batch retried after a lost COMMIT is written once",
        "applied quarantine 1: quarantine: held messages and their verdicts",
    ]
    assert len(out.splitlines()) == sum(c.latest for c in COMPONENTS)
    assert run("store", "migrate", "--config", str(config))[1] == "the schema is up to date\n"
    code, _, err = run("config", "check", str(config))
    assert code == 0 and "warning" not in err, err
    serves(config, tmp_path / "data", address, port)


def test_a_database_at_the_previous_version_is_migrated_keeping_its_rows(
    tmp_path: Path, pg_url: str
) -> None:
    """Trace version 1 (before `events.uid`), with an event an older node wrote."""
    db = open_database(pg_url)
    try:
        migrate(db, COMPONENTS, upto=1)
        db.execute(
            "INSERT INTO events (ts, node, queue_id, message_id, event, recipient, status)"
            " VALUES (?, 'old-node', 'OLDQ1', '<old.1@fabrikam.test>', 'delivered',"
            " 'bob@contoso.com', 'Delivered')",
            (time.time() - 60,),
        )
    finally:
        db.close()
    config, address, port = node(tmp_path, pg_url)
    status, err = serve_fails(config, tmp_path / "data")
    assert status == 2 and "trace schema version 1, this mxflow needs 2" in one_line(err)
    code, out, err = run("store", "migrate", "--config", str(config))
    assert code == 0, err
    assert out.splitlines() == [
        f"applied {c.name} {m.version}: {m.summary}"
        for c in COMPONENTS
        for m in c.migrations[1:]  # what version 1 lacked: trace's events.uid among them
    ]
    assert "applied trace 2: events.uid" in out
    code, out, err = run(
        "trace", "--config", str(config), "search", "--message-id", "old.1@fabrikam.test"
    )
    assert code == 0 and "Delivered" in out and "bob@contoso.com" in out, err
    serves(config, tmp_path / "data", address, port)


def test_a_database_that_cannot_be_reached_is_one_line_and_status_3(tmp_path: Path) -> None:
    nobody = free_port("127.0.0.1")
    config, _, _ = node(tmp_path, f"postgresql://mxflow@127.0.0.1:{nobody}/mxflow")
    status, err = serve_fails(config, tmp_path / "data")
    assert status == 3 and f"PostgreSQL at postgresql://mxflow@127.0.0.1:{nobody}" in one_line(err)
