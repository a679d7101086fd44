"""Several nodes on one real PostgreSQL server (`[store] url`), over real SMTP on 127.x:
per-client limits hold across nodes and outlive no killed node for long, host nodes share
one directory, what one node learns changes another's verdict, and two archivers append
to one hash chain that `mxflow archive verify` passes."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from mxflow.config import NodeConfig, load_config
from mxflow.mail import MessageContext, Phase
from mxflow.roles.build import build_node
from mxflow.roles.node import Node
from mxflow.store.registry import COMPONENTS
from mxflow.store.schema import migrate
from mxflow.store.sql import open_database
from tests.clirun import mxflow
from tests.conftest import free_port, unique_loopback
from tests.engine.helpers import (
    RawSmtp,
    maildir_messages,
    message,
    sink_config,
    stuffed,
    wait_for,
)
from tests.filter.helpers import SA_NICE, read
from tests.host.helpers import HOST_TOML
from tests.test_serve import wait_listening

RATE = """
[filter]
checks = ["rate"]
max_connections_per_ip = {open}
max_connections_per_minute = {rate}
"""


@pytest.fixture
def url(pg_url: str) -> str:
    """The shared database, migrated as `mxflow store migrate` does."""
    db = open_database(pg_url)
    migrate(db, COMPONENTS)
    db.close()
    return pg_url


def write_node(
    tmp_path: Path, name: str, url: str, body: str = "", *, role: str = "gateway", port: int = 0
) -> Path:
    """A node's TOML file, as an administrator writes it, on its own 127.x address."""
    address = unique_loopback()
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f'[node]\nname = "{name}"\nhostname = "{name}.lab.test"\nrole = "{role}"\n\n'
        f'[[listeners]]\naddress = "{address}"\nport = {port}\ntls = "none"\n\n'
        f'[store]\nurl = "{url}"\n{body}'
    )
    return path


def config_of(path: Path) -> NodeConfig:
    return load_config(path, data_dir=path.with_suffix(""))


@asynccontextmanager
async def running(*paths: Path) -> AsyncIterator[list[Node]]:
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(build_node(config_of(p))) for p in paths]


async def first_reply(node: Node, source: str) -> tuple[int, str, RawSmtp]:
    """Connect from `source`: the first reply (220, or a refusal) and the connection."""
    reader, writer = await asyncio.open_connection(node.address, node.port, local_addr=(source, 0))
    client = RawSmtp(reader, writer)
    code, text = await client.read_reply()
    return code, text, client


async def admitted(node: Node, source: str) -> bool:
    code, _, client = await first_reply(node, source)
    await client.close()
    return code == 220


async def test_the_concurrency_limit_holds_across_two_nodes(url: str, tmp_path: Path) -> None:
    body = RATE.format(open=3, rate=100)
    a_toml, b_toml = (
        write_node(tmp_path, "gw-a", url, body),
        write_node(tmp_path, "gw-b", url, body),
    )
    src = unique_loopback()
    async with running(a_toml, b_toml) as (a, b):
        held = [(await first_reply(n, src))[2] for n in (a, a, b)]
        code, text, refused = await first_reply(b, src)
        assert (code, text) == (421, f"4.7.1 too many concurrent connections from {src}")
        await refused.close()
        assert not await admitted(a, src)
        assert await admitted(b, unique_loopback())  # another client is not limited
        await held[0].close()  # one of A's ends: B takes one more
        await wait_for(lambda: admitted(b, src), within=5)
        for client in held[1:]:
            await client.close()


async def test_the_servers_limit_holds_across_two_nodes(url: str, tmp_path: Path) -> None:
    body = "[limits]\nmax_connections_per_ip = 2\n"  # no filter: the server's own limit
    paths = [write_node(tmp_path, n, url, body) for n in ("gw-a", "gw-b")]
    src = unique_loopback()
    async with running(*paths) as (a, b):
        held = [(await first_reply(n, src))[2] for n in (a, b)]
        code, text, refused = await first_reply(a, src)
        assert (code, text) == (421, "4.7.0 Too many connections from your address")
        await refused.close()
        for client in held:
            await client.close()


async def test_the_rate_per_minute_holds_across_two_nodes(url: str, tmp_path: Path) -> None:
    body = RATE.format(open=10, rate=3)
    paths = [write_node(tmp_path, n, url, body) for n in ("gw-a", "gw-b")]
    src = unique_loopback()
    async with running(*paths) as (a, b):
        for node in (a, b, a):
            assert await admitted(node, src)
        code, text, refused = await first_reply(b, src)
        assert (code, text) == (421, f"4.7.1 too many connections from {src}, try again later")
        await refused.close()


def serve_with_short_lease(config: Path, data_dir: Path) -> subprocess.Popen[str]:
    """`mxflow serve` as a real process, with a 2 s lease so the test need not wait 30 s."""
    launcher = (
        "import sys, mxflow.store.counters as c; c.LEASE = 2.0; c.HEARTBEAT = 0.3\n"
        "from mxflow.cli import main\nsys.exit(main(sys.argv[1:]))"
    )
    return subprocess.Popen(
        [sys.executable, "-c", launcher, "serve", "--config", str(config),
         "--data-dir", str(data_dir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def kill(proc: subprocess.Popen[str]) -> None:
    """SIGKILL: no stop, no release, no goodbye to the database."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(10)


async def test_a_killed_nodes_sessions_expire_with_its_lease(url: str, tmp_path: Path) -> None:
    body = RATE.format(open=2, rate=100)
    port = free_port("127.0.0.1")
    dead_toml = write_node(tmp_path, "gw-dead", url, body, port=port)
    dead_cfg = config_of(dead_toml)
    proc = serve_with_short_lease(dead_toml, dead_cfg.data_dir)
    src = unique_loopback()
    try:
        address = dead_cfg.listeners[0].address
        await asyncio.to_thread(wait_listening, address, port, proc)
        async with running(write_node(tmp_path, "gw-live", url, body)) as (live,):
            held = []
            for _ in range(2):
                reader, writer = await asyncio.open_connection(address, port, local_addr=(src, 0))
                held.append(RawSmtp(reader, writer))
                assert (await held[-1].read_reply())[0] == 220
            await asyncio.to_thread(kill, proc)  # its two sessions stay counted
            code, text, refused = await first_reply(live, src)
            assert code == 421 and "too many concurrent connections" in text
            await refused.close()
            await wait_for(lambda: admitted(live, src), within=10, interval=0.3)
            for client in held:
                client.writer.close()
    finally:
        await asyncio.to_thread(kill, proc)


async def test_two_host_nodes_share_one_directory(url: str, tmp_path: Path) -> None:
    host = HOST_TOML.split("[[listeners]]", 1)[1].split("\n", 5)[-1]  # domains, mailboxes, routes
    a_toml = write_node(tmp_path, "host-a", url, host, role="host")
    b_toml = write_node(tmp_path, "host-b", url, host, role="host")
    async with running(a_toml, b_toml) as (_, b):

        async def accepted(address: str) -> bool:
            client = await RawSmtp.open(b.address, b.port, source=unique_loopback())
            await client.cmd("EHLO mail.fabrikam.test")
            await client.cmd("MAIL FROM:<partner@fabrikam.test>")
            code, _ = await client.cmd(f"RCPT TO:<{address}>")
            await client.close()
            return code == 250

        assert await accepted("bob@contoso.com")  # from the TOML both nodes share
        assert not await accepted("carol@contoso.com")
        code, _, err = await mxflow(
            "host", "mailbox", "add", "carol@contoso.com", "--no-password",
            "--config", str(a_toml), "--data-dir", str(a_toml.with_suffix("")),
        )  # fmt: skip
        assert code == 0, err
        await wait_for(lambda: accepted("carol@contoso.com"), within=10, interval=0.3)


async def test_what_one_node_learns_changes_the_others_verdict(url: str, tmp_path: Path) -> None:
    body = '[filter]\nchecks = ["bayes"]\n'
    a_toml, b_toml = (
        write_node(tmp_path, "gw-a", url, body),
        write_node(tmp_path, "gw-b", url, body),
    )
    ham = tmp_path / "ham.eml"
    ham.write_bytes(read(SA_NICE / "001"))
    async with running(a_toml, b_toml) as (_, b):
        assert b.filter is not None

        async def verdict() -> tuple[str, float]:
            ctx = MessageContext(client_ip="192.0.2.1", raw=ham.read_bytes())
            found = await b.filter.evaluate(ctx, Phase.DATA)  # type: ignore[union-attr]
            return found.action.value, found.score

        action, score = await verdict()
        assert action == "deliver" and score < 0
        code, out, err = await mxflow(
            "filter", "learn", "--spam", "--config", str(a_toml), str(ham)
        )
        assert code == 0 and "learnt 1 message(s) as spam" in out, err

        async def junked() -> bool:
            return (await verdict())[0] != "deliver"

        await wait_for(junked, within=12, interval=0.5)


async def test_two_archivers_append_to_one_chain(url: str, tmp_path: Path) -> None:
    sink = sink_config(tmp_path / "sink")
    async with build_node(sink) as host:
        body = (
            '[[accepted_domains]]\ndomain = "contoso.com"\ntype = "internal_relay"\n\n'
            f'[[routes]]\ndomains = ["contoso.com"]\ntls = "none"\n'
            f'smart_hosts = ["{host.address}:{host.port}"]\n\n[archive]\ndir = "journal"\n'
        )
        paths = [write_node(tmp_path, n, url, body, role="archiver") for n in ("arch-a", "arch-b")]
        async with running(*paths) as nodes:

            async def send(node: Node, i: int) -> int:
                client = await RawSmtp.open(node.address, node.port, source=unique_loopback())
                await client.cmd("EHLO mail.fabrikam.test")
                raw = stuffed(message(f"report {node.config.name} {i}"))
                code, _ = await client.mail("alice@fabrikam.test", ["bob@contoso.com"], raw)
                await client.close()
                return code

            codes = await asyncio.gather(*(send(nodes[i % 2], i) for i in range(20)))
            assert codes == [250] * 20
            await wait_for(lambda: len(maildir_messages(sink, "bob@contoso.com")) == 20)
    for path in paths:
        code, out, err = await mxflow(
            "archive", "--config", str(path), "--data-dir", str(path.with_suffix("")), "verify"
        )
        assert code == 0, out + err
        assert "20 entries, chain intact; 10 message file(s) on other archivers" in out


class Proxy:
    """A TCP relay between a node and PostgreSQL, on its own thread and event loop (the
    node's start reads the database synchronously): stopping it is the database going
    away for that node (connections cut, new ones refused), without stopping the server
    the other tests use."""

    def __init__(self, target: tuple[str, int], address: str) -> None:
        self.target, self.address, self.port = target, address, 0
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def start(self) -> None:
        self._call(self._start())

    def stop(self) -> None:
        self._call(self._stop())

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    async def _start(self) -> None:
        self.server = await asyncio.start_server(self._relay, self.address, self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self.writers):
            writer.transport.abort()
        await self.server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.writers -= {writer, up_writer}


async def test_a_node_that_cannot_count_answers_421(url: str, tmp_path: Path) -> None:
    server = url.split("@", 1)[1].split("/", 1)[0]
    host, port = server.rsplit(":", 1)
    proxy = Proxy((host, int(port)), unique_loopback())
    proxy.start()
    via_proxy = url.replace(f"@{server}/", f"@{proxy.address}:{proxy.port}/")
    src = unique_loopback()
    node_toml = write_node(tmp_path, "gw-a", via_proxy, RATE.format(open=5, rate=100))
    try:
        async with running(node_toml) as (a,):
            assert await admitted(a, src)
            await asyncio.to_thread(proxy.stop)  # the database is gone for this node
            code, text, refused = await first_reply(a, src)
            await refused.close()
            assert (code, text) == (421, "4.3.0 Service temporarily unavailable, try again later")
            await asyncio.to_thread(proxy.start)  # back: the node counts again
            await wait_for(lambda: admitted(a, src), within=15, interval=0.5)
            await asyncio.to_thread(proxy.stop)  # the node stops without it, in bounded time
    finally:
        proxy.close()


async def test_without_a_shared_database_nothing_changes(tmp_path: Path) -> None:
    """No `[store] url`: in-memory limits per process, the classifier's model file, SQLite."""
    from mxflow.checks.bayes import BayesCheck
    from mxflow.checks.learning import SharedBayesCheck
    from tests.engine.helpers import node_config

    config = node_config("gw", tmp_path, extra={"filter": {"checks": ["rate", "bayes"]}})
    async with build_node(config) as node:
        assert node.wiring.intake.limits is None and node.services == []
        checks = getattr(node.filter, "checks", [])
        assert [type(c) for c in checks] == [BayesCheck]
        assert not any(isinstance(c, SharedBayesCheck) for c in checks)
        src = unique_loopback()
        assert await admitted(node, src)
