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
