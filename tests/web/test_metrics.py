"""`[metrics] listen`: Prometheus /metrics and /healthz of a real node over loopback."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from mxflow.config.filter import FilterPolicy
from mxflow.roles.build import build_node
from mxflow.store.trace_query import TraceQuery, search
from tests.conftest import free_port, unique_loopback
from tests.engine.helpers import (
    RawSmtp,
    gateway_config,
    maildir_messages,
    message,
    sink_config,
    stuffed,
    wait_for,
)


async def _get(url: str) -> tuple[int, str]:
    def fetch() -> tuple[int, str]:
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    return await asyncio.to_thread(fetch)


def _value(text: str, prefix: str) -> float:
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{prefix} not in metrics:\n{text}")


async def test_metrics_healthz_and_a_hostile_ehlo(tmp_path: Path) -> None:
    sink_cfg = sink_config(tmp_path / "sink")
    async with build_node(sink_cfg) as sink:
        name = f"gw-metrics-{unique_loopback()}"  # registries live per node name, per process
        cfg = gateway_config(tmp_path / "gw", sink.address, sink.port, tls="none", name=name)
        address = cfg.listeners[0].address
        cfg.metrics_listen = (address, free_port(address))
        base = f"http://{address}:{cfg.metrics_listen[1]}"
        async with build_node(cfg) as gw:
            code, body = await _get(f"{base}/healthz")
            assert code == 200 and '"accepting": true' in body
            client = await RawSmtp.open(gw.address, gw.port)
            await client.send_raw(b"EHLO \xff\xfe.example\r\n")  # killed the trace writer once
            await client.read_reply()
            raw = message("metrics", message_id="<metrics.1@fabrikam.test>")
            code_, text = await client.mail("a@fabrikam.test", ["bob@contoso.com"], stuffed(raw))
            assert code_ == 250, text
            code_, _ = await client.cmd("RCPT TO:<x@elsewhere.test>")  # out of order: 503
            await client.close()
            await wait_for(lambda: len(maildir_messages(sink_cfg, "bob@contoso.com")) == 1)
            gw.trace.flush()
            rows = search(gw.config.trace_db, TraceQuery(message_id="metrics.1@fabrikam.test"))
            assert [(r.recipient, r.status) for r in rows] == [("bob@contoso.com", "Delivered")]
            assert rows[0].to_ip == sink.address and rows[0].from_ip == "127.0.0.1"
            assert gw.trace.health().ok
            code, text = await _get(f"{base}/metrics")
            assert code == 200
            node = f'node="{name}"'
            assert _value(text, f'mxflow_messages_received_total{{{node},verdict="accepted"}}') == 1
            assert (
                _value(
                    text,
                    f'mxflow_messages_sent_total{{{node},result="delivered",status="Delivered"}}',
                )
                == 1
            )
            assert _value(text, f'mxflow_smtp_replies_total{{code="250",{node}}}') >= 4
            assert _value(text, f"mxflow_delivery_duration_seconds_count{{{node}}}") >= 1
            assert _value(text, f"mxflow_queue_messages{{{node}}}") >= 0
            assert _value(text, f"mxflow_trace_events_lost_total{{{node}}}") == 0
            assert "# TYPE mxflow_dns_lookups_total counter" in text
            code, _ = await _get(f"{base}/nothing")
            assert code == 404
        with pytest.raises(urllib.error.URLError):
            await _get(f"{base}/healthz")  # the node stopped: a balancer takes it out


def test_metrics_listen_config(tmp_path: Path) -> None:
    from mxflow.errors import ConfigError
    from tests.engine.helpers import node_config

    ip = unique_loopback()
    cfg = node_config("gw", tmp_path, extra={"metrics": {"listen": f"{ip}:9125"}})
    assert cfg.metrics_listen == (ip, 9125)
    assert node_config("gw", tmp_path).metrics_listen is None
    with pytest.raises(ConfigError, match=r"metrics\.listen"):
        node_config("gw", tmp_path, extra={"metrics": {"listen": "localhost"}})


async def test_healthz_shows_an_unreachable_malware_scanner(tmp_path: Path) -> None:
    """Issue 10 attack 1: a scanner that cannot be reached is logged and shown by /healthz
    (mail with content to scan is tempfailed meanwhile, never passed unscanned)."""
    name = f"gw-scanner-{unique_loopback()}"
    cfg = gateway_config(tmp_path / "gw", "127.0.0.1", 9, tls="none", name=name)
    cfg.filter = FilterPolicy(checks=("clamav",), clamd="unix:/nonexistent/clamd.sock")
    address = cfg.listeners[0].address
    cfg.metrics_listen = (address, free_port(address))
    base = f"http://{address}:{cfg.metrics_listen[1]}"
    async with build_node(cfg) as gw:
        _, body = await _get(f"{base}/healthz")
        assert '"malware_scanner": "ok"' in body
        client = await RawSmtp.open(gw.address, gw.port)
        await client.cmd("EHLO c.fabrikam.test")
        code, _ = await client.mail("a@fabrikam.test", ["bob@contoso.com"], stuffed(message()))
        await client.close()
        assert code == 451
        code, body = await _get(f"{base}/healthz")
        assert code == 200 and '"malware_scanner": "unreachable"' in body
