"""`mxflow lab run --nodes 2`: scenario 1 with the filtering service as two gateway nodes
behind two MX records, one PostgreSQL between them, and one node killed mid-run.

What a third-party filtering service is in production, on loopback: contoso.com's MX
names two hosts (preferences 10 and 20, or 10 and 10 with `--equal-mx`), each a gateway
node of its own — own `[node] name`, data directory, spool, address and process — with the
rest of one configuration in common, including the `[store] url` of the PostgreSQL
database the lab starts (lab/postgres.py) and migrates as `mxflow store migrate` would.
The mailbox host runs in the lab's process as in the other scenarios.

The run: the corpus's legitimate mail and spam go out from the internet senders, which
walk the MX list like an MTA (lab/peers.py). Once a third of it is answered, the node at
the lowest preference (the one taking the traffic) gets SIGKILL right after its next 250,
so it dies holding acknowledged mail. The senders fall back to the other MX; what the dead
node had acknowledged waits on its disk. When the first three quarters of the traffic are
answered the node is started again on the same data directory; it delivers its spool and
takes the last quarter (it is the preferred MX again). Then both nodes leave with
`mxflow queue drain`, and every message is looked up where it must have ended: refused
at the sender, or in a mailbox (or a gateway's quarantine) exactly once — or counted
`lost` or `duplicate` (report: lab/cluster_report.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import random
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import dns.asyncresolver
import dns.name
import dns.rdatatype

from mxflow.config import load_config
from mxflow.delivery.mailbox import INBOX, JUNK, read_maildir
from mxflow.dns.resolver import resolver_from_endpoint
from mxflow.dns.server import EmbeddedDnsServer
from mxflow.dns.zone import Zone
from mxflow.errors import MxflowError
from mxflow.lab import nodes, tomlfile
from mxflow.lab.corpus import LabMessage
from mxflow.lab.peers import LAB_ID, Sent, send_mx
from mxflow.lab.processes import Drained, NodeProcess
from mxflow.lab.scenario import lab_port
from mxflow.lab.traffic import inbound
from mxflow.lab.world import CONTOSO_MAILBOXES, DNS_IP, World, host_outbound_ip
from mxflow.records.topology import Topology
from mxflow.roles.build import build_node
from mxflow.roles.node import Node
from mxflow.store.quarantine import Quarantine
from mxflow.store.sql import open_database
from mxflow.store.trace import TraceEvent, query_events
from mxflow.store.trace_query import group_events

SEND_CONCURRENCY = 8
RETRY_FOR = 60.0  # how long a sender keeps a message no MX took (an MTA: days)
SETTLE_TIMEOUT = 60.0
DRAIN_TIMEOUT = 30.0
KILL_AFTER = 1 / 3  # of the traffic answered: the preferred node's next 250 is its last
RESTART_AT = 3 / 4  # of the traffic answered: start it again; the rest follows


@dataclass
class Chaos:
    """The kill and the restart, as they happened."""

    node: str
    answered_before: int = 0  # messages answered when it was killed
    killed_at: float = 0.0  # wall clock
    spooled: dict[str, str] = field(default_factory=dict)  # lab id -> queue id, after the kill
    restarted_at: float = 0.0


@dataclass
class ClusterRun:
    """Everything the report needs from one run."""

    database: str
    mx: list[tuple[int, str, str]]  # (preference, host, address) as the DNS says
    nodes: list[str]
    messages: list[LabMessage]
    sent: list[Sent]
    chaos: Chaos
    drains: list[Drained]
    found: dict[str, list[str]]  # lab id -> every place it was found
    recovered: dict[str, list[int]]  # node -> what each start found in its spool
    traces: list[list[TraceEvent]]  # every message's events, joined across nodes
    trace_stores: list[str]  # where they were read from
    started_at: float
    seconds: float = 0.0


def cluster_topology(topo: Topology, count: int) -> Topology:
    """The gateway with one MX host and one address per node: the topology's own when it
    names enough, else numbered after its first (mx1 -> mx2, 127.10.10.1 -> .2)."""
    party = topo.third_party(1)
    first, _, parent = party.mx[0].partition(".")
    stem = first.rstrip("0123456789") or "mx"
    hosts = [party.mx[i] if i < len(party.mx) else f"{stem}{i + 1}.{parent}" for i in range(count)]
    base = ipaddress.ip_address(party.ips[0])
    ips = [party.ips[i] if i < len(party.ips) else str(base + i) for i in range(count)]
    gateway = dataclasses.replace(party, mx=tuple(hosts), ips=tuple(ips))
    return dataclasses.replace(topo, gateway=gateway)


def cluster_zones(world: World, *, equal: bool) -> list[Zone]:
    """Scenario 1's zones with each gateway MX host resolving to its own node alone; the
    plan's preferences (10, 20, ...) or, with `equal`, 10 for every host."""
    party = world.topology.third_party(1)
    apex = dns.name.from_text(world.topology.domain)
    zones = world.zones(1)
    for zone in zones:
        for host, ip in zip(party.mx, party.ips, strict=True):
            owner = dns.name.from_text(host)
            if owner in zone.records:
                zone.records[owner].pop(dns.rdatatype.A, None)
                zone.add(owner, "A", ip)
        if equal and zone.get(apex, dns.rdatatype.MX) is not None:
            zone.records[apex].pop(dns.rdatatype.MX)
            for host in party.mx:
                zone.add(apex, "MX", f"10 {host}.")
    return zones


def mx_records(world: World, zones: list[Zone]) -> list[tuple[int, str, str]]:
    party = world.topology.third_party(1)
    address = dict(zip(party.mx, party.ips, strict=True))
    apex = dns.name.from_text(world.topology.domain)
    found = []
    for zone in zones:
        for rdata in zone.get(apex, dns.rdatatype.MX) or []:
            host = rdata.exchange.to_text().rstrip(".")
            found.append((int(rdata.preference), host, address.get(host, "")))
    return sorted(found)


@dataclass
class ClusterEnv:
    resolver: dns.asyncresolver.Resolver
    port: int
    host: Node
    gateways: list[NodeProcess]


def _gateway_process(
    world: World, root: Path, i: int, *, port: int, dns_endpoint: str, database: str | None
) -> NodeProcess:
    """Node i's files: the gateway's configuration with its own name, MX host name and
    address (the rest shared), and its own data directory."""
    party = world.topology.third_party(1)
    name = f"gateway-{i + 1}"
    data = nodes.gateway_table(
        world, root, port, dns_endpoint, node=(name, party.mx[i], party.ips[i]), store_url=database
    )
    config = root / f"{name}.toml"
    tomlfile.write(
        config,
        data,
        f"lab gateway node {i + 1} of {len(party.mx)} (mxflow lab run --nodes):\n"
        "only [node] name and hostname and the addresses differ between the nodes",
    )
    return NodeProcess(name, party.ips[i], port, config, root / name)


@contextlib.asynccontextmanager
async def cluster(
    world: World, root: Path, database: str | None, *, equal: bool
) -> AsyncIterator[tuple[ClusterEnv, list[Zone]]]:
    """DNS, the mailbox host (in this process) and the gateway node processes, started."""
    topo = world.topology
    party = topo.third_party(1)
    port = lab_port([*party.ips, topo.host.inbound_ips[0]])
    zones = cluster_zones(world, equal=equal)
    await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
    async with contextlib.AsyncExitStack() as stack:
        dns_server = EmbeddedDnsServer(zones, host=DNS_IP)
        await stack.enter_async_context(dns_server)
        endpoint = f"{DNS_IP}:{dns_server.port}"
        host_cfg = nodes.host_config(
            world, root, port, endpoint, scenario="1", outbound_ip=host_outbound_ip(topo),
            store_url=database,
        )  # fmt: skip
        host = await stack.enter_async_context(build_node(host_cfg))
        gateways = [
            _gateway_process(world, root, i, port=port, dns_endpoint=endpoint, database=database)
            for i in range(len(party.mx))
        ]
        for gateway in gateways:
            stack.push_async_callback(gateway.stop)
        await asyncio.gather(*(g.start() for g in gateways))
        yield ClusterEnv(resolver_from_endpoint(endpoint), port, host, gateways), zones


@dataclass
class Traffic:
    """The senders' progress, which the kill and the restart wait on."""

    total: int
    hold_from: int  # messages from this index on wait for `resume` (the restart)
    victim: NodeProcess
    victim_mx: str
    resume: asyncio.Event = field(default_factory=asyncio.Event)
    first_part: asyncio.Event = field(default_factory=asyncio.Event)  # answered up to hold_from
    killed: asyncio.Event = field(default_factory=asyncio.Event)
    killed_at: tuple[float, int] = (0.0, 0)  # wall clock, messages answered by then
    answered: int = 0

    def note(self) -> None:
        """A message was answered."""
        self.answered += 1
        if self.answered >= self.hold_from:
            self.first_part.set()

    def accepted_by(self, mx: str) -> None:
        """A 250 was just read. The first from the victim's MX host once a third of the
        traffic is answered is its last: SIGKILL now, before the session's QUIT and with no
        await between, so the node dies holding that message, acknowledged and most likely
        not yet handed on — the moment that tests the promise of its 250."""
        if mx != self.victim_mx or self.killed.is_set():
            return
        if self.answered >= self.total * KILL_AFTER:
            self.kill()

    def kill(self) -> None:
        self.victim.kill_now()
        self.killed_at = (time.time(), self.answered)
        self.killed.set()


async def send_all(env: ClusterEnv, messages: list[LabMessage], traffic: Traffic) -> list[Sent]:
    """Every message from its sender, a few at a time, each by the MX list."""
    gate = asyncio.Semaphore(SEND_CONCURRENCY)

    async def one(i: int, m: LabMessage) -> Sent:
        assert m.peer is not None
        if i >= traffic.hold_from:
            await traffic.resume.wait()
        async with gate:
            sent = await send_mx(
                env.resolver, env.port, source=m.peer.ip, helo=m.peer.helo,
                mail_from=m.mail_from, rcpt=m.rcpt, raw=m.raw, retry_for=RETRY_FOR,
                on_accept=traffic.accepted_by,
            )  # fmt: skip
        traffic.note()
        return sent

    return list(await asyncio.gather(*(one(i, m) for i, m in enumerate(messages))))


async def kill_and_restart(traffic: Traffic) -> Chaos:
    """Wait for the kill (Traffic.note), read what the dead node holds, and start it
    again once the first part of the traffic is answered (by the other node)."""
    victim = traffic.victim
    chaos = Chaos(victim.name)
    try:
        waiters = [asyncio.ensure_future(e.wait()) for e in (traffic.killed, traffic.first_part)]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
        if not traffic.killed.is_set():  # it took nothing more: kill it anyway
            traffic.kill()
        chaos.killed_at, chaos.answered_before = traffic.killed_at
        await victim.kill()  # reaps it
        chaos.spooled = await asyncio.to_thread(victim.spooled)
        _progress(f"killed {victim.name} (kill -9) holding {len(chaos.spooled)} message(s)")
        await traffic.first_part.wait()
        chaos.restarted_at = time.time()
        await victim.start()
        _progress(f"restarted {victim.name}")
    finally:
        traffic.resume.set()  # never leave the last senders waiting
    return chaos


def _progress(text: str) -> None:
    print(f"  --nodes: {text}", file=sys.stderr, flush=True)


async def _settle(host: Node) -> None:
    """Wait until the mailbox host has delivered everything it accepted."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while host.spool.ids() and time.monotonic() < deadline:  # noqa: ASYNC110 (files)
        await asyncio.sleep(0.1)


def _found(env: ClusterEnv) -> dict[str, list[str]]:
    """lab id -> every place it is: inbox or junk at the host, a gateway's quarantine."""
    found: dict[str, list[str]] = {}

    def note(where: str, raw: bytes) -> None:
        if m := LAB_ID.search(raw.partition(b"\r\n\r\n")[0]):
            found.setdefault(m.group(1).decode(), []).append(where)

    root = env.host.config.data_dir / "maildir"
    domain = env.host.config.accepted_domains[0].domain
    for box in CONTOSO_MAILBOXES:
        for folder, where in ((INBOX, "inbox"), (JUNK, "junk")):
            for raw in read_maildir(root, f"{box}@{domain}", folder):
                note(where, raw)
    for quarantine in dict.fromkeys(_quarantines(env)):
        for raw in _held(quarantine):
            note("quarantine", raw)
    return found


def _quarantines(env: ClusterEnv) -> list[Path | str]:
    """Each gateway's quarantine: its folder, or the PostgreSQL database they share."""
    found: list[Path | str] = []
    for gateway in env.gateways:
        config = load_config(gateway.config, data_dir=gateway.data_dir)
        found.append(config.shared_database or gateway.data_dir / "quarantine")
    return found


def _held(where: Path | str) -> list[bytes]:
    """Every message a quarantine holds, read through the store (files or rows)."""
    if isinstance(where, Path):
        return [path.read_bytes() for path in sorted(where.rglob("*.eml"))]
    db = open_database(where)
    try:
        quarantine = Quarantine(".", database=db)
        return [quarantine.show(e.id)[1] for e in quarantine.list(state=None)]
    finally:
        db.close()


def read_traces(sources: list[Path | str]) -> tuple[list[list[TraceEvent]], list[str]]:
    """Every message's trace events, joined across nodes (trace_query.group_events).

    Each source is a node's trace: the PostgreSQL URL every node with that `[store] url`
    writes to (read once), or a SQLite file. Returns the messages' events and the stores
    read (a URL without its password)."""
    events: list[TraceEvent] = []
    stores = []
    for source in dict.fromkeys(sources):
        if isinstance(source, Path):
            if source.exists():
                events += query_events(source, "1 = 1", ())
                stores.append(str(source))
            continue
        db = open_database(source)
        try:
            events += query_events(db, "1 = 1", ())
            stores.append(str(getattr(db, "display", source)))
        finally:
            db.close()
    return group_events(events), stores


async def run_cluster(
    world: World, corpus: Path, root: Path, database: str | None, *, equal: bool = False
) -> ClusterRun:
    """The whole `--nodes` run under `root`, against `database` (a `[store] url`)."""
    started, wall = time.monotonic(), time.time()
    world = World(cluster_topology(world.topology, 2))
    messages = [m for m in inbound(world, corpus) if m.kind in ("legitimate", "spam")]
    random.Random(len(messages)).shuffle(messages)  # ham and spam mixed, the same each run
    if len(messages) < 4:
        raise MxflowError(f"{corpus}: --nodes needs at least 4 messages in ham/ and spam/")
    victim_mx = world.topology.third_party(1).mx[0]
    async with cluster(world, root, database, equal=equal) as (env, zones):
        _progress(f"sending {len(messages)} messages to {len(env.gateways)} gateway nodes")
        hold_from = int(len(messages) * RESTART_AT)
        traffic = Traffic(len(messages), hold_from, env.gateways[0], victim_mx)
        chaos_task = asyncio.create_task(kill_and_restart(traffic))
        sent = await send_all(env, messages, traffic)
        chaos = await chaos_task
        drains = list(await asyncio.gather(*(g.drain(DRAIN_TIMEOUT) for g in env.gateways)))
        await _settle(env.host)
        found = await asyncio.to_thread(_found, env)
        configs = [load_config(g.config, data_dir=g.data_dir) for g in env.gateways]
        configs.append(env.host.config)
        sources: list[Path | str] = [c.shared_database or c.trace_db for c in configs]
    traces, stores = await asyncio.to_thread(read_traces, sources)
    return ClusterRun(
        database=database or "",
        mx=mx_records(world, zones),
        nodes=[g.name for g in env.gateways],
        messages=messages,
        sent=sent,
        chaos=chaos,
        drains=drains,
        found=found,
        recovered={g.name: g.recovered() for g in env.gateways},
        traces=traces,
        trace_stores=stores,
        started_at=wall,
        seconds=round(time.monotonic() - started, 1),
    )
