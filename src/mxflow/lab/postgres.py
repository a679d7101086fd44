"""A private PostgreSQL cluster on a loopback port, for the lab, the tests and the benches.

The shared store of several nodes runs on a real PostgreSQL server (Debian's `postgresql`
package), never a stand-in. This starts one the way an administrator would (`initdb`,
`pg_ctl`), in a temporary folder, on 127.0.0.1 and a free port, with `trust` auth for
one superuser and no Unix socket, and stops it again. The server refuses to run as root,
so under root (CI, this lab machine) it runs as the `postgres` system user the package
creates, in a folder that user owns.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from mxflow.errors import Unavailable

PACKAGE = "postgresql"  # what to install when the binaries are missing (Debian)
USER = "mxflow"
DATABASE = "mxflow"


class PostgresUnavailable(Unavailable):
    """PostgreSQL's server binaries are not installed, or the cluster would not start
    (exit status 3 when it reaches the command line: `mxflow lab run --nodes 2`)."""


def server_binaries() -> Path | None:
    """The folder with `initdb` and `pg_ctl`: Debian's newest version, else the PATH."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    for folder in reversed(versions):
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl:
        return Path(initdb).resolve().parent
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    """One running server: its folder, address and the URL a node's `[store] url` takes."""

    root: Path
    host: str
    port: int
    bin: Path

    @property
    def url(self) -> str:
        return f"postgresql://{USER}@{self.host}:{self.port}/{DATABASE}"

    def database_url(self, name: str) -> str:
        """The URL of another database on this server (see `create_database`)."""
        return f"postgresql://{USER}@{self.host}:{self.port}/{name}"

    def create_database(self, name: str) -> str:
        """A new empty database (one per test keeps tests apart); returns its URL."""
        _run(self, ["createdb", "-h", self.host, "-p", str(self.port), "-U", USER, name])
        return self.database_url(name)

    def stop(self, *, mode: str = "fast") -> None:
        """Stop the server (`immediate` is a crash: PostgreSQL recovers at the next start)."""
        with contextlib.suppress(subprocess.CalledProcessError, OSError):
            _run(self, ["pg_ctl", "-D", str(self.root / "data"), "-m", mode, "-w", "stop"])

    def start(self) -> None:
        """Start the server again on the same port and folder (after `stop`)."""
        options = (
            f"-c listen_addresses={self.host} -p {self.port} "
            "-c unix_socket_directories='' -c max_connections=200"
        )
        log = str(self.root / "server.log")
        data = str(self.root / "data")
        _run(self, ["pg_ctl", "-D", data, "-l", log, "-o", options, "-w", "-t", "30", "start"])

    def promote(self) -> None:
        """Make this replica (see `start_replica`) a primary that accepts writes."""
        _run(self, ["pg_ctl", "-D", str(self.root / "data"), "-w", "promote"])

    def remove(self) -> None:
        """Stop the server and delete its folder."""
        self.stop(mode="immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def _as_server_user() -> list[str]:
    """`runuser -u postgres --` under root (the server refuses root), else nothing."""
    if os.geteuid() != 0:
        return []
    return ["runuser", "-u", "postgres", "--"]


def _run(cluster: Cluster, argv: list[str]) -> None:
    command = [*_as_server_user(), str(cluster.bin / argv[0]), *argv[1:]]
    subprocess.run(command, check=True, capture_output=True, timeout=60)


def start_cluster(host: str = "127.0.0.1", port: int = 0, *, fsync: bool = True) -> Cluster:
    """initdb + start a new cluster in a temporary folder; `PostgresUnavailable` if it can't.

    `fsync = False` is for tests only: a crash of the machine could lose what it wrote.
    """
    binaries = _binaries()
    cluster = Cluster(_server_folder(), host, port or free_port(host), binaries)
    try:
        _initdb(cluster, fsync=fsync)
        cluster.start()
        cluster.create_database(DATABASE)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError, KeyError) as e:
        detail = getattr(e, "stderr", b"") or b""
        cluster.remove()
        raise PostgresUnavailable(
            f"could not start PostgreSQL in {cluster.root}: {e} {detail.decode(errors='replace')}"
        ) from e
    return cluster


def _binaries() -> Path:
    binaries = server_binaries()
    if binaries is None:
        raise PostgresUnavailable(
            f"PostgreSQL's server is not installed: install Debian's {PACKAGE} package "
            f"(apt-get install {PACKAGE})"
        )
    return binaries


def _server_folder() -> Path:
    """A new temporary folder the server's user owns."""
    root = Path(tempfile.mkdtemp(prefix="mxflow-pg-"))
    os.chmod(root, 0o755)
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root, ignore_errors=True)
            raise PostgresUnavailable(
                f"no `postgres` user to run the server as (root may not): install Debian's"
                f" {PACKAGE} package (apt-get install {PACKAGE})"
            ) from None
        os.chown(root, owner.pw_uid, owner.pw_gid)
    return root


def start_replica(primary: Cluster, host: str = "127.0.0.1") -> Cluster:
    """A streaming replica of `primary`, started: `pg_basebackup -R` as an administrator
    sets one up (docs/cluster.md). It serves reads and follows the primary until
    `promote()`; the primary's initdb allows replication from loopback."""
    replica = Cluster(_server_folder(), host, free_port(host), _binaries())
    data = str(replica.root / "data")
    source = ["-h", primary.host, "-p", str(primary.port), "-U", USER]
    try:
        _run(replica, ["pg_basebackup", *source, "-D", data, "-R", "-X", "stream", "-c", "fast"])
        replica.start()
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
        detail = getattr(e, "stderr", b"") or b""
        replica.remove()
        raise PostgresUnavailable(
            f"could not start a replica in {replica.root}: {e} {detail.decode(errors='replace')}"
        ) from e
    return replica


def _initdb(cluster: Cluster, *, fsync: bool) -> None:
    data = cluster.root / "data"
    _run(cluster, ["initdb", "-D", str(data), "-U", USER, "--auth=trust", "-E", "UTF8"])
    if not fsync:
        with (data / "postgresql.conf").open("a") as conf:
            conf.write("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n")


def wait_until_ready(cluster: Cluster, timeout: float = 30.0) -> None:
    """Block until the server accepts TCP connections (after a restart)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with (
            contextlib.suppress(OSError),
            socket.create_connection((cluster.host, cluster.port), timeout=1.0),
        ):
            return
        time.sleep(0.05)
    raise PostgresUnavailable(f"PostgreSQL on {cluster.host}:{cluster.port} did not come up")
