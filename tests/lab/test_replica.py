"""What docs/cluster.md says about PostgreSQL with a streaming replica, on real servers:
a `[store] url` naming the primary and the replica with `target_session_attrs=read-write`
reaches whichever is the primary, so after a failover (the replica promoted) nodes start
against the promoted one without a config change."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mxflow.lab.postgres import Cluster, PostgresUnavailable, start_cluster, start_replica
from mxflow.roles.build import build_node
from mxflow.store.registry import COMPONENTS
from mxflow.store.schema import current_versions, migrate
from mxflow.store.sql import Database, open_database
from tests.clirun import mxflow
from tests.conftest import require
from tests.engine.helpers import node_config

pytestmark = pytest.mark.slow


def _pair() -> tuple[Cluster, Cluster]:
    try:
        primary = start_cluster(fsync=False)
    except PostgresUnavailable as e:
        require(False, f"PostgreSQL ({e})")
        raise
    try:
        return primary, start_replica(primary)
    except BaseException:
        primary.remove()
        raise


def _port_of_primary(url: str) -> int:
    db = open_database(url)
    try:
        with db.transaction() as tx:
            rows = tx.query("SELECT inet_server_port(), pg_is_in_recovery()")
    finally:
        db.close()
    port, in_recovery = rows[0]
    assert not in_recovery
    return int(port)


def _wait_for_replay(replica: Cluster, timeout: float = 20.0) -> None:
    """Until the replica has every component's schema row (it replays the primary's WAL
    a moment after the primary commits)."""
    deadline = time.monotonic() + timeout
    db = open_database(replica.url)
    try:
        while set(current_versions_readonly(db)) < {c.name for c in COMPONENTS}:
            assert time.monotonic() < deadline, "the replica did not catch up"
            time.sleep(0.1)
    finally:
        db.close()


def current_versions_readonly(db: Database) -> set[str]:
    """The components the replica has (none before it replays the table's creation)."""
    import psycopg

    try:
        with db.transaction() as tx:
            return {str(r[0]) for r in tx.query("SELECT component FROM schema_versions")}
    except psycopg.errors.UndefinedTable:
        return set()


async def test_a_multi_host_store_url_follows_the_promoted_replica(tmp_path: Path) -> None:
    primary, replica = _pair()
    try:
        url = (
            f"postgresql://mxflow@{primary.host}:{primary.port},{replica.host}:{replica.port}"
            "/mxflow?target_session_attrs=read-write&connect_timeout=5"
        )
        config = node_config("gw-a", tmp_path / "gw-a", extra={"store": {"url": url}})
        listener = config.listeners[0]
        (tmp_path / "node.toml").write_text(
            f'[node]\nname = "gw-a"\n\n[[listeners]]\naddress = "{listener.address}"\n'
            f'port = {listener.port}\ntls = "none"\n\n[store]\nurl = "{url}"\n'
        )
        code, out, err = await mxflow("store", "migrate", "--config", str(tmp_path / "node.toml"))
        assert code == 0, out + err
        assert _port_of_primary(url) == primary.port
        _wait_for_replay(replica)  # streaming replication is asynchronous
        primary.stop(mode="immediate")  # the primary's machine dies
        replica.promote()  # the administrator (or the HA manager) fails over
        assert _port_of_primary(url) == replica.port
        db = open_database(url)
        try:
            assert set(current_versions(db)) >= {c.name for c in COMPONENTS}
            migrate(db, COMPONENTS)  # nothing left to apply: the replica had it all
        finally:
            db.close()
        async with build_node(config) as node:  # a node starts against the new primary
            assert node.port > 0
        code, out, err = await mxflow("store", "status", "--config", str(tmp_path / "node.toml"))
        assert code == 0, out + err
    finally:
        replica.remove()
        primary.remove()
