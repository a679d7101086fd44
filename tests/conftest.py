"""Shared test helpers: loopback addresses, and required tools that fail in CI.

Every node in a test binds its own 127.x address with an ephemeral port, so tests run
in parallel (pytest-xdist) without colliding. Under CI=true a test that needs a tool or
service fails when it is missing; elsewhere it is skipped with the reason.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from mxflow.lab.postgres import Cluster

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

_worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
_worker_index = int(_worker[2:]) if _worker.startswith("gw") and _worker[2:].isdigit() else 0
_counter = itertools.count(1)


def unique_loopback() -> str:
    """A fresh 127.x.y.z address for this test process (127.200+worker.y.z)."""
    n = next(_counter)
    return f"127.{200 + _worker_index}.{(n // 250) % 250}.{n % 250 + 1}"


def free_port(host: str) -> int:
    """A TCP port free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def require(condition: bool, what: str) -> None:
    """Skip (or, under CI=true, fail) when `condition` is false."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{what} is required in CI (.ci/run installs it)")
    pytest.skip(f"{what} is not available")


def require_tool(name: str) -> str:
    path = shutil.which(name)
    require(path is not None, f"the tool {name!r}")
    assert path is not None
    return path


@pytest.fixture
def loopback() -> str:
    return unique_loopback()


_databases = itertools.count(1)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[Cluster]:
    """A real PostgreSQL server on a loopback port (Debian's postgresql; fails in CI without)."""
    from mxflow.lab.postgres import PostgresUnavailable, start_cluster

    try:
        cluster = start_cluster(fsync=False)
    except PostgresUnavailable as e:
        require(False, f"PostgreSQL ({e})")
        raise
    yield cluster
    cluster.remove()


@pytest.fixture
def pg_url(postgres_cluster: Cluster) -> str:
    """The URL of a new, empty database on the test server: one per test keeps tests apart."""
    return postgres_cluster.create_database(f"t{_worker_index}_{next(_databases)}")
