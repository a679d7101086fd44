"""A PostgreSQL server of a test's own, for the tests that stop it.

The session's server (`postgres_cluster`) runs without fsync for speed, so a crash of it
loses its last commits, and other tests use it: a test that takes the database down
starts its own, with fsync on, and crashes that one (`stop(mode="immediate")`) as a
machine or a killed server would.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from mxflow.lab.postgres import Cluster, PostgresUnavailable, start_cluster
from tests.conftest import require


@contextlib.contextmanager
def private_cluster() -> Iterator[Cluster]:
    """A new server with fsync on (skipped without PostgreSQL; a failure under CI=true)."""
    try:
        cluster = start_cluster(fsync=True)
    except PostgresUnavailable as e:
        require(False, f"PostgreSQL ({e})")
        raise
    try:
        yield cluster
    finally:
        cluster.remove()
