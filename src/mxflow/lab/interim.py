"""The interim lab: a gateway and a downstream mailbox host on loopback, a few messages
through, and what happened to each, read back from the nodes' trace stores.

It runs the real engine (the same Node as `mxflow serve`) in one process: the gateway
(the reference's third-party service, 10.10.10.1 -> 127.10.10.1) relays contoso.com to
the downstream host (127.40.0.1), which stores mail in Maildirs. The lab issue replaces
this with the whole topology; this keeps `make lab` meaningful until then.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mxflow.config import NodeConfig, parse_config
from mxflow.delivery.mailbox import mailbox_dir
from mxflow.lab.client import LabClient, dot_stuff
from mxflow.roles.build import build_node
from mxflow.roles.node import Node
from mxflow.store.trace import TraceEvent, TraceStore

GATEWAY_IP = "127.10.10.1"
HOST_IP = "127.40.0.1"
SENDER_IP = "127.66.0.10"  # a legitimate internet sender
SPAMMER_IP = "127.66.6.6"


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _gateway_config(root: Path, host_port: int) -> NodeConfig:
    data: dict[str, Any] = {
        "node": {"name": "gateway", "hostname": "gateway.thirdparty.test", "role": "gateway"},
        "listeners": [
            {
                "address": GATEWAY_IP,
                "port": 0,
                "tls": "starttls",
                "cert": "tls/gateway.crt",
                "key": "tls/gateway.key",
                "generate_cert": True,
            }
        ],
        "limits": {"max_message_size": "64k"},
        "accepted_domains": [{"domain": "contoso.com", "type": "internal_relay"}],
        "routes": [
            {
                "name": "contoso-host",
                "domains": ["contoso.com", "fabrikam.test"],
                "smart_hosts": [f"{HOST_IP}:{host_port}"],
                "tls": "opportunistic",
            }
        ],
        "delivery": {"source_address": GATEWAY_IP, "retry_intervals": ["1s"], "lifetime": "1h"},
    }
    return parse_config(data, "<lab gateway>", data_dir=root / "gateway")


def _host_config(root: Path, port: int) -> NodeConfig:
    data: dict[str, Any] = {
        "node": {"name": "host", "hostname": "mail.contoso.test", "role": "sink"},
        "listeners": [
            {
                "address": HOST_IP,
                "port": port,
                "tls": "starttls",
                "cert": "tls/host.crt",
                "key": "tls/host.key",
                "generate_cert": True,
            }
        ],
        "accepted_domains": [
            {
                "domain": "contoso.com",
                "type": "authoritative",
                "recipients": ["bob@contoso.com", "carol@contoso.com"],
            },
            # stands in for the senders' own mailboxes, so DSNs have somewhere to go
            {"domain": "fabrikam.test", "type": "internal_relay"},
        ],
        "routes": [{"name": "mailboxes", "domains": ["*"], "maildir": "maildir"}],
    }
    return parse_config(data, "<lab host>", data_dir=root / "host")


@dataclass
class Case:
    title: str
    mail_from: str
    rcpts: list[str]
    data: bytes
    source: str = SENDER_IP
    reply: str = ""
    queue_id: str = ""
    message_id: str = ""
    notes: list[str] = field(default_factory=list)


def _message(subject: str, to: str, mid: str, body: str = "Hello.\r\n") -> bytes:
    return (
        f"From: Alice <alice@fabrikam.test>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
        f"Message-ID: {mid}\r\nDate: Fri, 27 Nov 2026 08:00:00 +0000\r\n\r\n{body}"
    ).encode()


def _cases(stamp: str) -> list[Case]:
    def mid(n: str) -> str:
        return f"<lab-{n}-{stamp}@fabrikam.test>"

    smuggled = (
        _message("carrier", "bob@contoso.com", mid("smuggle")).rstrip(b"\r\n")
        + b"\n.\r\nMAIL FROM:<ceo@contoso.com>\r\nRCPT TO:<bob@contoso.com>\r\nDATA\r\n"
        + b"Subject: pay this invoice\r\n\r\nsmuggled\r\n.\r\n"
    )
    return [
        Case(
            "a normal message",
            "alice@fabrikam.test",
            ["bob@contoso.com"],
            dot_stuff(_message("Lunch?", "bob@contoso.com", mid("normal"))),
            message_id=mid("normal"),
        ),
        Case(
            "to a domain the gateway does not serve (relay attempt)",
            "ceo@contoso.com",
            ["victim@elsewhere.example"],
            dot_stuff(_message("relay", "victim@elsewhere.example", mid("relay"))),
            source=SPAMMER_IP,
        ),
        Case(
            "too large (100 KB, the gateway's limit is 64 KB)",
            "alice@fabrikam.test",
            ["bob@contoso.com"],
            dot_stuff(_message("big", "bob@contoso.com", mid("big"), ("x" * 98 + "\r\n") * 1000)),
        ),
        Case(
            "an SMTP smuggling attempt (<LF>.<CR><LF> inside DATA)",
            "alice@fabrikam.test",
            ["bob@contoso.com"],
            smuggled,
            source=SPAMMER_IP,
        ),
        Case(
            "to an unknown mailbox of contoso.com (the host rejects it)",
            "alice@fabrikam.test",
            ["nobody@contoso.com"],
            dot_stuff(_message("hello?", "nobody@contoso.com", mid("unknown"))),
            message_id=mid("unknown"),
        ),
        Case(
            "while the downstream host is unreachable",
            "alice@fabrikam.test",
            ["carol@contoso.com"],
            dot_stuff(_message("are you there?", "carol@contoso.com", mid("down"))),
            message_id=mid("down"),
        ),
    ]


async def _send(gateway: Node, case: Case) -> None:
    client = await LabClient.open(gateway.address, gateway.port, source=case.source)
    await client.cmd(f"EHLO {'sender' if case.source == SENDER_IP else 'spammer'}.example")
    case.reply = await client.transaction(case.mail_from, case.rcpts, case.data)
    await client.close()
    if case.reply.startswith("250") and "queued as" in case.reply:
        case.queue_id = case.reply.rsplit(" ", 1)[1]


async def _wait(predicate: Any, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.1)
    return bool(predicate())


def _events(store: TraceStore, queue_id: str) -> list[TraceEvent]:
    store.flush()
    return store.by_queue_id(queue_id)


def _fresh_dir(root: Path) -> None:
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)


async def run(root: Path, *, out: Any = print) -> int:
    """Run the interim lab under `root` (emptied first); 0 when every case came out right."""
    _fresh_dir(root)
    stamp = str(time.time_ns())
    host_port = _free_port(HOST_IP)
    host_cfg = _host_config(root, host_port)
    gw_cfg = _gateway_config(root, host_port)
    cases = _cases(stamp)
    ok = True
    host = build_node(host_cfg)
    await host.start()
    gateway = build_node(gw_cfg)
    await gateway.start()
    out(
        f"mxflow lab (interim): gateway {gateway.address}:{gateway.port} -> "
        f"host {HOST_IP}:{host_port}; files under {root}/"
    )
    try:
        for case in cases[:-1]:
            await _send(gateway, case)
        await _wait(lambda: not gateway.spool.ids(), 10)
        # take the host down, send one more, bring the host back
        await host.stop(grace=1)
        down = cases[-1]
        await _send(gateway, down)
        await _wait(
            lambda: any(e.event == "deferred" for e in _events(gateway.trace, down.queue_id)), 10
        )
        down.notes.append("the host was stopped before this message, and restarted a second later")
        await asyncio.sleep(1.0)
        host = build_node(host_cfg)
        await host.start()
        await _wait(lambda: not gateway.spool.ids(), 15)
        await asyncio.sleep(0.3)
    finally:
        await gateway.stop(grace=2)
        await host.stop(grace=2)

    gw_trace = TraceStore(gw_cfg.trace_db)
    expected = ["delivered", "550 5.7.1", "552 5.3.4", "550 5.6.0", "bounced", "delivered"]
    for n, (case, want) in enumerate(zip(cases, expected, strict=True), 1):
        out("")
        out(f"{n}. {case.title}")
        out(f"   {case.mail_from} -> {', '.join(case.rcpts)} from {case.source}")
        out(f"   SMTP reply: {case.reply}")
        for note in case.notes:
            out(f"   ({note})")
        events = gw_trace.by_queue_id(case.queue_id) if case.queue_id else []
        for e in events:
            out(f"   gateway trace: {e.event:<10} {e.status:<10} {e.recipient} {e.detail}".rstrip())
        outcome = "refused at SMTP" if not case.queue_id else events[-1].event if events else "?"
        if case.queue_id and outcome == "dsn":
            outcome = "bounced"
        for rcpt in case.rcpts if outcome == "delivered" else []:
            box = mailbox_dir(host_cfg.data_dir / "maildir", rcpt) / "new"
            if box.exists() and any(box.iterdir()):
                out(f"   mailbox: {box}")
        if case.queue_id and outcome == "bounced":
            dsn_box = mailbox_dir(host_cfg.data_dir / "maildir", case.mail_from) / "new"
            if dsn_box.exists():
                out(f"   DSN delivered to the sender's mailbox: {dsn_box}")
        good = want in case.reply if not want.isalpha() else any(e.event == want for e in events)
        ok &= good
        out(f"   => {outcome}{'' if good else f'  (UNEXPECTED: wanted {want})'}")
    gw_trace.close()
    out("")
    out(
        "Every step above is an event in the gateway's trace store "
        f"({gw_cfg.trace_db}); try: mxflow queue --spool {gw_cfg.spool_dir} list"
    )
    out("lab: all cases as expected" if ok else "lab: SOME CASES DID NOT COME OUT AS EXPECTED")
    return 0 if ok else 1
