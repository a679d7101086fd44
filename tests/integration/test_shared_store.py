"""Several nodes, one PostgreSQL: two gateways on loopback share the trace and the
quarantine (held on one, released from the other, delivered once); the admin UI of either
shows both; and when the database goes down a node answers 4xx instead of acknowledging
what it cannot record, and takes mail again by itself when the database is back."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from starlette.testclient import TestClient

from mxflow import metrics
from mxflow.config import NodeConfig, load_config
from mxflow.mail import MessageContext, Symbol, Verdict
from mxflow.roles.build import build_node
from mxflow.store.quarantine import Quarantine
from mxflow.store.registry import COMPONENTS
from mxflow.store.schema import migrate
from mxflow.store.sql import open_database
from mxflow.store.trace import TraceStore
from mxflow.store.trace_query import TraceQuery, search
from mxflow.web.accounts import Accounts
from mxflow.web.app import create_app
from tests.clirun import mxflow
from tests.conftest import unique_loopback
from tests.engine.helpers import (
    RawSmtp,
    maildir_messages,
    message,
    relay_gateway_toml,
    sink_config,
    stuffed,
    wait_for,
)
from tests.store.pg import private_cluster

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n"


def gateway_toml(tmp_path: Path, name: str, sink: str, url: str) -> Path:
    """A filtering gateway for contoso.com whose shared state is on `url`."""
    address = unique_loopback()
    path = tmp_path / f"{name}.toml"
    path.write_text(
        relay_gateway_toml(
            name,
            tmp_path / name,
            sink,
            address=address,
            extra=f"""
[filter]
reject_action = "quarantine"

[store]
url = "{url}"
""",
        )
    )
    return path


async def send(host: str, port: int, raw: bytes, rcpt: str = "bob@contoso.com") -> str:
    client = await RawSmtp.open(host, port)
    await client.cmd("EHLO c.fabrikam.test")
    code, text = await client.mail("a@fabrikam.test", [rcpt], stuffed(raw))
    await client.close()
    assert code == 250, text
    return text


def copies(sink_cfg: NodeConfig, message_id: str) -> int:
    wanted = f"Message-ID: {message_id}".encode()
    return sum(wanted in m for m in maildir_messages(sink_cfg, "bob@contoso.com"))


async def greets(host: str, port: int) -> bool:
    """Whether a new connection gets 220 (not a 421 from the trace or the counters)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        return (await asyncio.wait_for(reader.readline(), 10)).startswith(b"220")
    finally:
        writer.close()


def delivered(trace: TraceStore, message_id: str) -> bool:
    return any(e.event == "delivered" for e in trace.by_message_id(message_id))


async def test_two_gateways_share_the_quarantine_and_the_trace(tmp_path: Path, pg_url: str) -> None:
    sink_cfg = sink_config(tmp_path / "sink")
    async with build_node(sink_cfg) as sink:
        sink_at = f"{sink.address}:{sink.port}"
        a_toml = gateway_toml(tmp_path, "gw-a", sink_at, pg_url)
        b_toml = gateway_toml(tmp_path, "gw-b", sink_at, pg_url)
        code, _, err = await mxflow("store", "migrate", "--config", str(a_toml))
        assert code == 0, err
        async with build_node(load_config(a_toml)) as a, build_node(load_config(b_toml)) as b:
            # held on A, listed and released from B, delivered once
            held = message("pills", message_id="<held.1@fabrikam.test>", body=GTUBE)
            qid = (await send(a.address, a.port, held)).split()[-1]
            code, out, err = await mxflow("quarantine", "--config", str(b_toml), "list", "--json")
            assert code == 0 and [json.loads(x)["id"] for x in out.splitlines()] == [qid], err
            code, out, err = await mxflow(
                "quarantine", "--config", str(b_toml), "release", qid, "--no-learn"
            )
            assert code == 0 and "into the node's spool" in out, err
            await wait_for(lambda: copies(sink_cfg, "<held.1@fabrikam.test>") == 1)
            # held on B, released from both nodes at the same moment: once
            raced = message("more pills", message_id="<held.2@fabrikam.test>", body=GTUBE)
            qid2 = (await send(b.address, b.port, raced)).split()[-1]
            results = await asyncio.gather(
                *(
                    mxflow("quarantine", "--config", str(t), "release", qid2, "--no-learn")
                    for t in (a_toml, b_toml)
                )
            )
            assert sorted(code for code, _, _ in results) == [0, 2], results
            assert any("not held" in err for _, _, err in results), results
            await wait_for(lambda: copies(sink_cfg, "<held.2@fabrikam.test>") == 1)
            await asyncio.sleep(2.5)  # a second copy would be delivered by now (retry 1 s)
            assert copies(sink_cfg, "<held.2@fabrikam.test>") == 1
            assert copies(sink_cfg, "<held.1@fabrikam.test>") == 1
            a.trace.flush()
            b.trace.flush()
            # either node's trace: both nodes' events, one row
            for toml in (a_toml, b_toml):
                code, out, err = await mxflow(
                    "trace", "--config", str(toml), "search",
                    "--message-id", "held.1@fabrikam.test", "--json",
                )  # fmt: skip
                assert code == 0, err
                (row,) = [json.loads(x) for x in out.splitlines()]
                assert row["status"] == "Delivered" and row["nodes"] == ["gw-a", "gw-b"], row
            events = [(e.node, e.event) for e in a.trace.by_message_id("held.1@fabrikam.test")]
            assert events[0] == ("gw-a", "quarantined") and events[-1] == ("gw-b", "delivered")
            assert ("gw-b", "quarantine-released") in events, events


def test_the_admin_ui_of_any_node_shows_the_shared_state(tmp_path: Path, pg_url: str) -> None:
    """Node B's UI lists, previews and deletes what node A held, and its trace and
    dashboard count both nodes' mail."""
    db = open_database(pg_url)
    migrate(db, COMPONENTS)
    ctx = MessageContext(client_ip="127.9.9.9", mail_from="x@spam.test", rcpt_tos=["b@contoso.com"])
    ctx.raw = b"Subject: offer\r\nMessage-ID: <w@spam.test>\r\n\r\n<p>cheap</p>\r\n"
    verdict = Verdict(score=20, scl=9, reason="spam", symbols=[Symbol("BAYES_SPAM", 20.0, "")])
    qid = Quarantine(tmp_path / "unused", database=db).store(ctx, verdict)
    with TraceStore(db, node="gw-a") as a, TraceStore(db, node="gw-b") as b:
        a.record("AQ1", "received", message_id="<w1@x>", recipient="c@contoso.com", sender="s@x")
        b.record("BQ1", "received", message_id="<w2@x>", recipient="d@contoso.com", sender="s@x")
    db.close()
    b_cfg = load_config(gateway_toml(tmp_path, "gw-b", "127.0.0.1:25", pg_url))
    assert b_cfg.web.users_db is not None
    Accounts(b_cfg.web.users_db).add_user("admin", "correct horse battery", "admin", [])
    with TestClient(create_app(b_cfg), base_url="https://testserver") as client:
        page = client.get("/login")
        token = page.text.split('name="login_token" value="', 1)[1].split('"', 1)[0]
        form = {"username": "admin", "password": "correct horse battery", "login_token": token}
        form["next"] = "/"
        assert client.post("/login", data=form, follow_redirects=False).status_code == 303
        board = client.get("/")
        assert board.status_code == 200 and "s@x" in board.text
        listed = client.get("/trace")
        assert "c@contoso.com" in listed.text and "d@contoso.com" in listed.text
        assert qid in client.get("/quarantine").text
        item = client.get(f"/quarantine/{qid}")
        assert item.status_code == 200 and "cheap" in item.text
        csrf = item.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        client.post(f"/quarantine/{qid}/delete", data={"csrf": csrf})
        assert qid not in client.get("/quarantine?all=1").text


async def test_postgresql_down_4xx_then_recovery(tmp_path: Path) -> None:
    """What was acknowledged before the node saw the outage is traced when the database
    is back; what it cannot record meanwhile gets 4xx (the quarantine's 451 at once, the
    trace's 421 / 451 once its writer has seen the outage; a new connection is refused by
    the shared connection counters, too); then mail is taken again."""
    sink_cfg = sink_config(tmp_path / "sink")
    with private_cluster() as cluster:
        db = open_database(cluster.url)
        migrate(db, COMPONENTS)
        db.close()
        async with build_node(sink_cfg) as sink:
            toml = gateway_toml(tmp_path, "gw", f"{sink.address}:{sink.port}", cluster.url)
            async with build_node(load_config(toml)) as gw:
                await send(gw.address, gw.port, message("one", message_id="<down.1@f.test>"))
                await wait_for(lambda: delivered(gw.trace, "down.1@f.test"))
                await asyncio.to_thread(gw.trace.flush)  # the writer is idle: it sees no outage
                client = await RawSmtp.open(gw.address, gw.port)  # counted while the db is up
                await client.cmd("EHLO c.fabrikam.test")
                cluster.stop(mode="immediate")
                # the trace does not know yet: the spool is local, the 250 is honest
                two = stuffed(message("two", message_id="<down.2@f.test>"))
                code, text = await client.mail("a@fabrikam.test", ["bob@contoso.com"], two)
                assert code == 250, text
                spam = stuffed(message("held", message_id="<down.3@f.test>", body=GTUBE))
                code, text = await client.mail("a@fabrikam.test", ["bob@contoso.com"], spam)
                assert (code, text) == (
                    451,
                    "4.3.0 Local error: quarantine unavailable, try again later",
                )
                await wait_for(lambda: gw.trace.refusal() is not None, within=30)
                health = metrics.attach(gw).state
                assert health is not None and not health.accepting()  # /healthz: 503
                assert health.health()["trace"]["database_down"] is True
                refused = await asyncio.open_connection(gw.address, gw.port)
                greeting = await asyncio.wait_for(refused[0].readline(), 10)
                assert greeting.startswith(
                    b"421 4.3.0 Service temporarily unavailable: the message trace"
                )
                refused[1].close()
                code, text = await client.mail("a@fabrikam.test", ["bob@contoso.com"], two)
                assert code == 451 and "message trace cannot be written" in text, text
                await client.close()
                await wait_for(lambda: copies(sink_cfg, "<down.2@f.test>") == 1)  # delivery goes on
                cluster.start()
                await wait_for(lambda: gw.trace.refusal() is None, within=60)
                assert health.accepting()
                await wait_for(lambda: greets(gw.address, gw.port), within=30)  # counters too
                await send(gw.address, gw.port, message("four", message_id="<down.4@f.test>"))
                text = await send(gw.address, gw.port, spam[: -len(b".\r\n")] + b".\r\n")
                assert "quarantined as" in text
                await wait_for(lambda: copies(sink_cfg, "<down.4@f.test>") == 1)
                await asyncio.to_thread(gw.trace.flush, 30)
                health = gw.trace.health()
                assert health.ok and health.dropped == 0, health
                rows = await asyncio.to_thread(search, gw.trace.database, TraceQuery())
    by_id = {r.message_id: r.status for r in rows}
    assert by_id["<down.1@f.test>"] == by_id["<down.2@f.test>"] == "Delivered", by_id
    assert by_id["<down.4@f.test>"] == "Delivered" and by_id["<down.3@f.test>"] == "Quarantined"
