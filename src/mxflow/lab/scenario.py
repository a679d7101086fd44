"""One scenario of the lab, end to end: DNS, nodes, peers, traffic, wait, and the outcome of
every message read back from where it ended up.

Where a message ends up is looked up, not assumed: the sender's reply (a refusal is
`rejected`), the host's Maildirs (Inbox or Junk), the quarantines of the gateway and the
host, and the bounces at the senders' MX (a relay accepted it, the next hop refused it:
also `rejected`). Each message carries an `X-Lab-Id`; one found twice or nowhere is
reported as such (`duplicate`, `lost`), never silently counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from mxflow.delivery.mailbox import INBOX, JUNK, read_maildir
from mxflow.dns.resolver import resolver_from_endpoint
from mxflow.dns.server import EmbeddedDnsServer
from mxflow.lab import nodes
from mxflow.lab.corpus import LabMessage
from mxflow.lab.peers import LAB_ID, Arrival, RecipientMx, deliver
from mxflow.lab.traffic import inbound, outbound
from mxflow.lab.world import (
    CONTOSO_MAILBOXES,
    CONTOSO_USERS_IP,
    DNS_IP,
    RECIPIENT_MX_IP,
    SENDER_MX_IP,
    World,
    host_outbound_ip,
)
from mxflow.roles.build import build_node
from mxflow.roles.node import Node
from mxflow.store.archive import Archive

SEND_CONCURRENCY = 8
SETTLE_TIMEOUT = 60.0
AR_PART = re.compile(rb"\b(spf|dmarc)=(\w+)")


@dataclass
class Outcome:
    """Where one message ended up, and what the filtering node's authentication said."""

    message: LabMessage
    reply: str = ""
    where: str = "lost"  # inbox | junk | quarantine | rejected | tempfail | lost | duplicate
    spf: str = ""
    dmarc: str = ""


@dataclass
class ScenarioRun:
    scenario: str
    outcomes: list[Outcome] = field(default_factory=list)
    arrivals: list[Arrival] = field(default_factory=list)
    seconds: float = 0.0
    archive: dict[str, object] = field(default_factory=dict)  # the archiver's journal


def lab_port(ips: list[str]) -> int:
    """A port free on every listening lab address (each node binds its own address)."""
    for _ in range(50):
        port = random.randint(20000, 60000)
        try:
            for ip in ips:
                with socket.socket() as s:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind((ip, port))
        except OSError:
            continue
        return port
    raise OSError("no free port on the lab's addresses")


@contextlib.asynccontextmanager
async def topology(world: World, scenario: str, root: Path) -> AsyncIterator[dict[str, object]]:
    """DNS, the scenario's nodes and the recipient MX hosts, started; stopped on exit."""
    topo = world.topology
    third = topo.third_party(1 if scenario == "1" else 2)
    ips = [third.ips[0], topo.host.inbound_ips[0], RECIPIENT_MX_IP, SENDER_MX_IP]
    port = lab_port(ips)
    await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
    dns_server = EmbeddedDnsServer(world.zones(1 if scenario == "1" else 2), host=DNS_IP)
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(dns_server)
        endpoint = f"{DNS_IP}:{dns_server.port}"
        resolver = resolver_from_endpoint(endpoint)
        host_cfg = nodes.host_config(
            world, root, port, endpoint, scenario=scenario, outbound_ip=host_outbound_ip(topo)
        )
        make = nodes.gateway_config if scenario == "1" else nodes.archiver_config
        third_cfg = make(world, root, port, endpoint)
        host = await stack.enter_async_context(build_node(host_cfg))
        party = await stack.enter_async_context(build_node(third_cfg))
        mxs = [RecipientMx(ip, port, resolver) for ip in (RECIPIENT_MX_IP, SENDER_MX_IP)]
        for mx in mxs:
            await mx.start()
            stack.push_async_callback(mx.stop)
        yield {"host": host, "party": party, "mxs": mxs, "resolver": resolver, "port": port}


async def send_all(env: dict[str, object], messages: list[LabMessage], world: World) -> list[str]:
    """Every message, a few at a time; the final reply of each."""
    gate = asyncio.Semaphore(SEND_CONCURRENCY)
    resolver, port = env["resolver"], env["port"]
    host_name = world.topology.host.inbound

    async def one(m: LabMessage) -> str:
        async with gate:
            peer = m.peer
            return await deliver(
                resolver,  # type: ignore[arg-type]
                port,  # type: ignore[arg-type]
                source=peer.ip if peer else CONTOSO_USERS_IP,
                helo=peer.helo if peer else "workstation.contoso.com",
                mail_from=m.mail_from,
                rcpt=m.rcpt,
                raw=m.raw,
                host=host_name if peer is None or peer.to_host else None,
            )

    return list(await asyncio.gather(*(one(m) for m in messages)))


async def settle(env: dict[str, object], expected_outbound: int, label: str) -> None:
    """Wait until every queue is empty and the recipients have judged all they got."""
    host, party = env["host"], env["party"]
    mxs: list[RecipientMx] = env["mxs"]  # type: ignore[assignment]
    assert isinstance(host, Node) and isinstance(party, Node)
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while time.monotonic() < deadline:
        queued = len(host.spool.ids()) + len(party.spool.ids())
        judging = sum(mx.pending for mx in mxs)
        arrived = sum(1 for a in mxs[0].arrivals if a.lab_id.startswith("outbound/"))
        print(
            f"\r  {label}: {queued} queued, {judging} being judged, "
            f"{arrived}/{expected_outbound} outbound arrived   ",
            end="",
            file=sys.stderr,
            flush=True,
        )
        if not queued and not judging and arrived >= expected_outbound:
            break
        await asyncio.sleep(0.2)
    print(file=sys.stderr)


def _auth_seen(raw: bytes, authserv_ids: tuple[str, ...]) -> tuple[str, str]:
    """spf= and dmarc= of the first Authentication-Results by one of `authserv_ids`."""
    head = raw.partition(b"\r\n\r\n")[0].replace(b"\r\n ", b" ").replace(b"\r\n\t", b" ")
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() != b"authentication-results":
            continue
        if value.strip().split(b";")[0].strip().decode() not in authserv_ids:
            continue
        parts = dict((k.decode(), v.decode()) for k, v in AR_PART.findall(value))
        if "spf" in parts:  # not a bare "none" (a node that did not check)
            return parts["spf"], parts.get("dmarc", "")
    return "", ""


def _stored(env: dict[str, object], world: World) -> dict[str, list[tuple[str, bytes]]]:
    """lab id -> every place it was found: (inbox|junk|quarantine, raw)."""
    host, party = env["host"], env["party"]
    assert isinstance(host, Node) and isinstance(party, Node)
    found: dict[str, list[tuple[str, bytes]]] = {}

    def note(where: str, raw: bytes) -> None:
        head = raw.partition(b"\r\n\r\n")[0]
        m = LAB_ID.search(head)
        if m:
            found.setdefault(m.group(1).decode(), []).append((where, raw))
        elif head.startswith(b"Return-Path: <>") and (m := LAB_ID.search(raw)):
            # a bounce to a contoso.com sender (a spoofer's envelope): the message it
            # reports was refused after a relay had accepted it
            found.setdefault(m.group(1).decode(), []).append(("bounced", raw))

    root = host.config.data_dir / "maildir"
    for box in CONTOSO_MAILBOXES:
        rcpt = f"{box}@{world.topology.domain}"
        for folder, where in ((INBOX, "inbox"), (JUNK, "junk")):
            for raw in read_maildir(root, rcpt, folder):
                note(where, raw)
    for node in (host, party):
        quarantine = node.quarantine
        if quarantine is None:
            continue
        for entry in quarantine.list():  # type: ignore[attr-defined]
            note("quarantine", quarantine.show(entry.id)[1])  # type: ignore[attr-defined]
    return found


def classify(
    messages: list[LabMessage],
    replies: list[str],
    stored: dict[str, list[tuple[str, bytes]]],
    bounced: set[str],
    authserv_ids: tuple[str, ...],
) -> list[Outcome]:
    outcomes = []
    for m, reply in zip(messages, replies, strict=True):
        out = Outcome(m, reply)
        places = [p for p in stored.get(m.lab_id, []) if p[0] != "bounced"]
        if len(places) < len(stored.get(m.lab_id, [])):
            bounced = bounced | {m.lab_id}
        if m.kind == "outbound":
            out.where = "sent" if reply.startswith("2") else "rejected"
        elif reply.startswith("5") or m.lab_id in bounced:
            out.where = "rejected" if not places else "duplicate"
        elif not reply.startswith("2"):
            out.where = "tempfail"
        elif len(places) == 1:
            out.where = places[0][0]
            out.spf, out.dmarc = _auth_seen(places[0][1], authserv_ids)
        elif places:
            out.where = "duplicate"
        outcomes.append(out)
    return outcomes


async def run_scenario(world: World, scenario: str, corpus: Path, root: Path) -> ScenarioRun:
    """Run `scenario` ("1", "2" or "2-ef") under `root`; every message's outcome."""
    started = time.monotonic()
    await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
    messages = inbound(world, corpus)
    out_messages = outbound(world)
    async with topology(world, scenario, root) as env:
        print(
            f"  scenario {scenario}: sending {len(messages)} inbound and "
            f"{len(out_messages)} outbound messages",
            file=sys.stderr,
            flush=True,
        )
        replies = await send_all(env, messages + out_messages, world)
        await settle(env, len(out_messages), f"scenario {scenario}")
        mxs: list[RecipientMx] = env["mxs"]  # type: ignore[assignment]
        stored = _stored(env, world)
        journal = await asyncio.to_thread(_journal, env)
    bounced = {a.lab_id for mx in mxs for a in mx.arrivals if a.bounce}
    topo = world.topology
    ids = (topo.host.inbound, *(p.mx[0] for p in (topo.gateway, topo.archiver) if p))
    run = ScenarioRun(scenario)
    run.outcomes = classify(messages + out_messages, replies, stored, bounced, ids)
    run.arrivals = [a for a in mxs[0].arrivals if not a.bounce]
    run.seconds = time.monotonic() - started
    run.archive = journal
    return run


def _journal(env: dict[str, object]) -> dict[str, object]:
    """The archiver's journal after the run: how many entries, and whether it verifies."""
    party = env["party"]
    assert isinstance(party, Node)
    if party.config.role != "archiver":
        return {}
    settings = party.config.archive
    archive = Archive(settings.dir if settings else party.config.data_dir / "archive")
    try:
        problems = archive.verify()
        return {"entries": sum(1 for _ in archive.entries()), "intact": not problems}
    finally:
        archive.close()
