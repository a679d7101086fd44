"""The trace store: events by queue id and Message-ID, shared by processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mxflow.store.trace import TraceStore


def test_record_and_query(tmp_path: Path) -> None:
    with TraceStore(tmp_path / "t.sqlite", node="gw") as store:
        store.record("Q1", "received", message_id="<m1@x>", recipient="a@y", status="Pending")
        store.record(
            "Q1",
            "delivered",
            message_id="<m1@x>",
            recipient="a@y",
            status="Delivered",
            detail="250 ok",
        )
        store.record("Q2", "received", message_id="<m2@x>", recipient="b@y", status="Pending")
        store.flush()
        assert [e.event for e in store.by_queue_id("Q1")] == ["received", "delivered"]
        assert [e.queue_id for e in store.by_message_id("m2@x")] == ["Q2"]
        assert store.by_message_id("<m1@x>")[1].detail == "250 ok"
        assert {e.node for e in store.all()} == {"gw"}


def test_another_process_records_into_the_same_store(tmp_path: Path) -> None:
    db = tmp_path / "t.sqlite"
    with TraceStore(db, node="gw") as store:
        store.record("Q1", "received", recipient="a@y", status="Pending")
        code = (
            "from mxflow.store.trace import TraceStore\n"
            f"with TraceStore({str(db)!r}, node='cli') as s:\n"
            "    s.record('Q1', 'released', status='Delivered', detail='from quarantine')\n"
        )
        subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
        store.flush()
        assert [(e.node, e.event) for e in store.by_queue_id("Q1")] == [
            ("gw", "received"),
            ("cli", "released"),
        ]


# --------------------------------------------------------------- issue 14: trace


def test_writer_survives_any_input_and_reports_health(tmp_path: Path) -> None:
    """A 0xFF byte in EHLO (kept by surrogateescape) used to kill the writer thread."""
    with TraceStore(tmp_path / "t.sqlite", node="gw") as store:
        helo = b"\xff\xfe evil".decode("utf-8", "surrogateescape")
        store.record("Q1", "received", recipient="a@y", detail=f"from 127.0.0.9 helo={helo}")
        store.record("Q2", "received", recipient="\udcff@y", size="x", scl="nan?")  # type: ignore[arg-type]
        store.record("Q3", "delivered", recipient="b@y", status="Delivered", symbols=[object()])
        store.flush()
        assert {e.queue_id for e in store.all()} == {"Q1", "Q2", "Q3"}
        assert "\\udcff" in store.by_queue_id("Q1")[0].detail
        health = store.health()
        assert health.ok and health.writer_alive and health.dropped == 0
        assert health.written == 3


def test_a_row_the_database_refuses_is_counted_and_logged_not_silent(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "t.sqlite"
    with TraceStore(db, node="gw", flush_interval=0.3) as store:
        with sqlite3.connect(db) as other:  # a database that refuses one row
            other.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.queue_id = 'BAD'"
                " BEGIN SELECT RAISE(ABORT, 'refused by test'); END"
            )
        store.record("GOOD", "received", recipient="a@y")
        store.record("BAD", "received", recipient="a@y")
        store.record("GOOD2", "received", recipient="a@y")
        store.flush()
        health = store.health()
        assert not health.ok and health.dropped == 1 and health.writer_alive
        assert "refused by test" in health.last_error
        assert {e.queue_id for e in store.all()} == {"GOOD", "GOOD2"}
        store.record("LATER", "received")
        store.flush()
        assert store.by_queue_id("LATER")


def _hop(store: TraceStore, node: str, qid: str, mid: str, rcpt: str, **kw: object) -> None:
    store.record(
        qid,
        "received",
        node=node,
        message_id=mid,
        recipient=rcpt,
        status="Pending",
        detail=f"from {kw.pop('client')} helo=x sender=<a@fabrikam.test> size=321",
        subject="Quarterly report",
    )
    store.record(qid, "delivered", node=node, message_id=mid, recipient=rcpt, **kw)  # type: ignore[arg-type]


def test_rows_join_hops_by_message_id_and_queued_as(tmp_path: Path) -> None:
    from mxflow.store.trace_query import TraceQuery, search, show

    db = tmp_path / "shared.sqlite"
    with TraceStore(db) as store:
        for rcpt in ("bob@contoso.com", "carol@contoso.com"):
            _hop(
                store, "gateway", "GQ1", "<r1@fabrikam.test>", rcpt, client="127.9.0.5",
                status="Delivered", reply="250 2.0.0 Ok: queued as HQ7 (127.20.0.1:25)",
                scl=1, score=0.4, symbols=[("SPF_PASS", -0.1, "pass")],
            )  # fmt: skip
        # the host has no Message-ID for it (say it was stripped): joined by "queued as"
        _hop(
            store, "host", "HQ7", "", "bob@contoso.com", client="127.10.10.1",
            status="Delivered", reply="250 delivered to mailbox",
        )  # fmt: skip
        store.record("HQ7", "bounced", node="host", recipient="carol@contoso.com", status="Failed")
        store.record("OTHER", "received", node="gateway", message_id="<x@y>", recipient="z@y")
        store.flush()
    rows = search(db, TraceQuery(message_id="r1@fabrikam.test"))
    assert {(r.recipient, r.status) for r in rows} == {
        ("bob@contoso.com", "Delivered"),
        ("carol@contoso.com", "Failed"),
    }
    bob = next(r for r in rows if r.recipient == "bob@contoso.com")
    assert (bob.from_ip, bob.size, bob.subject) == ("127.9.0.5", 321, "Quarterly report")
    assert bob.sender == "a@fabrikam.test" and bob.nodes == ["gateway", "host"]
    assert [r.recipient for r in search(db, TraceQuery(status="Failed"))] == ["carol@contoso.com"]
    assert search(db, TraceQuery(sender="nobody")) == []
    trace = show(db, "<r1@fabrikam.test>")
    assert trace is not None
    assert [(h.node, h.queue_id) for h in trace.hops] == [("gateway", "GQ1"), ("host", "HQ7")]
    first = trace.hops[0].events[1]
    assert first.scl == 1 and first.symbols == (("SPF_PASS", -0.1, "pass"),)
    assert first.to_ip == "127.20.0.1"
    assert show(db, "HQ7") is not None and show(db, "nope") is None
    only_fabrikam = search(db, TraceQuery(), domains={"fabrikam.test"})
    assert {r.id for r in only_fabrikam} == {"r1@fabrikam.test"}


async def test_cli_search_and_show(tmp_path: Path) -> None:
    import json

    from tests.clirun import mxflow

    data = tmp_path / "node"
    with TraceStore(data / "trace.sqlite", node="gw") as store:
        _hop(
            store, "gw", "Q1", "<c1@fabrikam.test>", "bob@contoso.com", client="127.9.0.5",
            status="Delivered", reply="250 ok (127.20.0.1:25)",
        )  # fmt: skip
    for mid in ("c1@fabrikam.test", "<c1@fabrikam.test>"):
        code, out, err = await mxflow(
            "trace", "--data-dir", str(data), "search", "--message-id", mid, "--json"
        )
        assert code == 0, err
        rows = [json.loads(line) for line in out.splitlines()]
        assert len(rows) == 1 and rows[0]["status"] == "Delivered"
        assert rows[0]["to_ip"] == "127.20.0.1" and rows[0]["recipient"] == "bob@contoso.com"
    code, out, _ = await mxflow(
        "trace", "--data-dir", str(data), "search", "--status", "failed", "--since", "1h"
    )
    assert code == 0 and "no messages match" in out
    code, out, err = await mxflow("trace", "--data-dir", str(data), "show", "Q1")
    assert code == 0, err
    assert "queue id Q1" in out and "250 ok" in out
    code, _, err = await mxflow("trace", "--data-dir", str(tmp_path / "none"), "search")
    assert code == 2 and "no trace store" in err


def test_store_url_config(tmp_path: Path) -> None:
    import pytest

    from mxflow.errors import ConfigError
    from tests.engine.helpers import node_config

    shared = tmp_path / "shared" / "trace.sqlite"
    for url in (f"sqlite://{shared}", str(shared)):
        cfg = node_config("gw", tmp_path / "gw", extra={"store": {"url": url}})
        assert cfg.trace_db == shared and cfg.store_url == url
    assert node_config("gw", tmp_path / "gw").trace_db == tmp_path / "gw" / "trace.sqlite"
    pg = "postgresql://mxflow@127.0.0.1:5432/mx"
    cfg = node_config("gw", tmp_path / "gw", extra={"store": {"url": pg}})
    assert cfg.shared_database == pg and cfg.trace_db == tmp_path / "gw" / "trace.sqlite"
    for bad in ("mysql://db/mx", "postgresql:/nohost"):
        with pytest.raises(ConfigError, match=r"store\.url"):
            node_config("gw", tmp_path / "gw", extra={"store": {"url": bad}})


async def test_two_nodes_share_one_store_and_a_message_is_one_trace(tmp_path: Path) -> None:
    """A gateway and its mailbox host with one `[store] url`: one row, two hops."""
    from mxflow.roles.build import build_node
    from mxflow.store.trace_query import TraceQuery, search, show
    from tests.conftest import free_port, unique_loopback
    from tests.engine.helpers import (
        RawSmtp,
        maildir_messages,
        message,
        node_config,
        stuffed,
        wait_for,
    )

    shared = {"store": {"url": f"sqlite://{tmp_path / 'shared.sqlite'}"}}
    host_ip = unique_loopback()
    host_cfg = node_config(
        "host", tmp_path / "host", address=host_ip, port=free_port(host_ip),
        domains=[{"domain": "contoso.com", "recipients": "any"}],
        routes=[{"name": "local", "domains": ["*"], "maildir": "maildir"}], extra=shared,
    )  # fmt: skip
    async with build_node(host_cfg) as host:
        gw_cfg = node_config(
            "gateway", tmp_path / "gw",
            domains=[{"domain": "contoso.com", "type": "internal_relay"}],
            routes=[{"domains": ["contoso.com"], "smart_hosts": [f"{host.address}:{host.port}"],
                     "tls": "none"}], extra=shared,
        )  # fmt: skip
        async with build_node(gw_cfg) as gw:
            client = await RawSmtp.open(gw.address, gw.port)
            await client.cmd("EHLO c.fabrikam.test")
            raw = message("two hops", message_id="<hops.1@fabrikam.test>")
            code, text = await client.mail("a@fabrikam.test", ["bob@contoso.com"], stuffed(raw))
            await client.close()
            assert code == 250, text
            await wait_for(lambda: len(maildir_messages(host_cfg, "bob@contoso.com")) == 1)
            gw.trace.flush()
            host.trace.flush()
    assert gw_cfg.trace_db == host_cfg.trace_db == tmp_path / "shared.sqlite"
    rows = search(gw_cfg.trace_db, TraceQuery(message_id="hops.1@fabrikam.test"))
    assert len(rows) == 1
    assert (rows[0].status, rows[0].nodes) == ("Delivered", ["gateway", "host"])
    assert rows[0].from_ip == "127.0.0.1" and rows[0].sender == "a@fabrikam.test"
    trace = show(gw_cfg.trace_db, "<hops.1@fabrikam.test>")
    assert trace is not None and [h.node for h in trace.hops] == ["gateway", "host"]
    assert trace.hops[0].events[-1].to_ip == host_ip


def _open_and_record(path: str) -> None:
    store = TraceStore(path, node="worker")
    store.record("Q1", "received")
    store.close()


def test_workers_opening_a_new_trace_at_once_all_succeed(tmp_path: Path) -> None:
    """`serve` with `workers = 2` once lost a worker to "database is locked": the workers
    create the trace's schema at the same moment, and the WAL switch does not wait."""
    import multiprocessing

    for round_ in range(5):
        path = str(tmp_path / f"trace{round_}.sqlite")
        workers = [
            multiprocessing.get_context("fork").Process(target=_open_and_record, args=(path,))
            for _ in range(4)
        ]
        for w in workers:
            w.start()
        for w in workers:
            w.join(30)
        assert [w.exitcode for w in workers] == [0, 0, 0, 0]
