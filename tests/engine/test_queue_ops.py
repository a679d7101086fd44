"""`mxflow queue` without a config file, and hold / release / flush on a running node."""

from __future__ import annotations

import json
from pathlib import Path

from mxflow.config import NodeConfig
from mxflow.roles.build import build_node
from tests.clirun import mxflow
from tests.engine.helpers import (
    RawSmtp,
    maildir_messages,
    message,
    node_config,
    sink_config,
    stuffed,
    wait_for,
)


def gateway(tmp_path: Path, sink: NodeConfig, retry: str) -> NodeConfig:
    down = f"{sink.listeners[0].address}:{sink.listeners[0].port}"
    return node_config(
        "gateway",
        tmp_path / "gw",
        domains=[{"domain": "contoso.com", "type": "internal_relay"}],
        routes=[{"domains": ["contoso.com"], "smart_hosts": [down], "tls": "none"}],
        delivery={"retry_intervals": [retry]},
    )


async def submit(address: str, port: int, subject: str, rcpts: list[str]) -> str:
    client = await RawSmtp.open(address, port)
    await client.cmd("EHLO c.fabrikam.test")
    code, text = await client.mail("alice@fabrikam.test", rcpts, stuffed(message(subject)))
    await client.close()
    assert code == 250, text
    return text.rsplit(" ", 1)[1]


def fixed_sink(tmp_path: Path) -> NodeConfig:
    return sink_config(tmp_path / "sink")  # a fixed port: it can be started later


async def test_list_with_data_dir_alone_header_sizes_and_json(tmp_path: Path) -> None:
    sink = fixed_sink(tmp_path)  # not running: everything stays deferred
    cfg = gateway(tmp_path, sink, "1h")
    async with build_node(cfg) as gw:
        one = await submit(gw.address, gw.port, "one", ["bob@contoso.com"])
        two = await submit(gw.address, gw.port, "two", ["bob@contoso.com", "eve@contoso.com"])
        await wait_for(lambda: all(gw.spool.load_state(q).attempts == 1 for q in (one, two)))
    data_dir = str(cfg.data_dir)

    code, out, err = await mxflow("queue", "--data-dir", data_dir, "list")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["QUEUE-ID", "SIZE", "RECEIVED"]
    assert lines[-1].startswith("2 message(s) in ")
    for queue_id in (one, two):
        (line,) = [x for x in lines if x.startswith(queue_id)]
        assert int(line.split()[1]) == (cfg.spool_dir / "queue" / queue_id).stat().st_size
    assert "pending 2/2: bob@contoso.com eve@contoso.com" in out

    code, out, err = await mxflow("queue", "--data-dir", data_dir, "list", "--json")
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["queue_id"] for r in records] == [one, two]
    assert records[1]["recipients"] == {
        "bob@contoso.com": "deferred",
        "eve@contoso.com": "deferred",
    }
    assert records[0]["size"] == (cfg.spool_dir / "queue" / one).stat().st_size
    assert records[0]["held"] is None

    code, _, err = await mxflow("queue", "list")
    assert code == 2 and "--data-dir" in err


async def test_hold_survives_a_restart_then_release_delivers(tmp_path: Path) -> None:
    sink = fixed_sink(tmp_path)
    cfg = gateway(tmp_path, sink, "0.3s")  # the sink is down: retried every 0.3 s
    spool = str(cfg.spool_dir)
    async with build_node(cfg) as gw:
        held = await submit(gw.address, gw.port, "held", ["bob@contoso.com"])
        await wait_for(lambda: gw.spool.load_state(held).attempts >= 1)
        code, out, err = await mxflow(
            "queue", "--spool", spool, "hold", held, "--reason", "legal asked"
        )
        assert code == 0 and "hold requested" in out, err
        await wait_for(lambda: gw.spool.load_state(held).held == "legal asked")
        attempts = gw.spool.load_state(held).attempts
        code, out, _ = await mxflow("queue", "--spool", spool, "list")
        assert "held: legal asked" in out and "1 held" in out
        code, _, err = await mxflow("queue", "--spool", spool, "retry", held)
        assert code == 2 and "is held" in err

    async with build_node(sink), build_node(cfg) as gw:  # restart: still held, not tried
        await wait_for(lambda: len(gw.scheduler._timers) == 0 and not gw.scheduler._active)
        state = gw.spool.load_state(held)
        assert state.held == "legal asked" and state.attempts == attempts
        assert maildir_messages(sink, "bob@contoso.com") == []
        code, out, _ = await mxflow("queue", "--spool", spool, "release", held)
        assert code == 0 and "release requested" in out
        await wait_for(lambda: len(maildir_messages(sink, "bob@contoso.com")) == 1)
        await wait_for(lambda: not gw.spool.exists(held))


async def test_flush_tries_deferred_messages_now(tmp_path: Path) -> None:
    sink = fixed_sink(tmp_path)
    cfg = gateway(tmp_path, sink, "1h")
    async with build_node(cfg) as gw:
        ids = [await submit(gw.address, gw.port, s, ["bob@contoso.com"]) for s in ("a", "b")]
        await wait_for(lambda: all(gw.spool.load_state(q).attempts == 1 for q in ids))
        async with build_node(sink):
            code, out, err = await mxflow("queue", "--data-dir", str(cfg.data_dir), "flush")
            assert code == 0 and "flush requested for 2 message(s)" in out, err
            await wait_for(lambda: len(maildir_messages(sink, "bob@contoso.com")) == 2)
