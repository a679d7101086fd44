"""Prometheus metrics and a health check for one node: `/metrics` and `/healthz`.

Each node has its own registry (`for_node(name)`), so several nodes in one process (the
lab, the tests) never mix their numbers. The engine feeds it with as few hooks as
possible, because smtp/, queue/ and checks/ belong to others:

* the trace: every trace event passes `observe_trace` (messages received by verdict, sent
  by result) through `TraceStore.observers` — no hook at all;
* SMTP replies by code: `smtp_reply(node, text)`, the listeners' `on_reply` callback;
* delivery and check latency, DNS lookups: `attach()` wraps the node's router, its
  filter's checks and its resolver, instance by instance, when the node starts;
* queue depth and trace health are read when scraped.

The HTTP side is a tiny asyncio server on the node's own loop (`[metrics] listen`), only in
worker 0 of a multi-worker node: the numbers are that process's, and a load balancer's
`/healthz` asks whether that node accepts mail (200) or not (503).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger("mxflow.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
# trace event (and status) -> the verdict / result label
_RECEIVED = {"received": "accepted", "quarantined": "quarantined"}
_SENT = {"delivered": "delivered", "deferred": "deferred", "bounced": "bounced"}


class NodeMetrics:
    """The metrics of one node, in its own registry."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.received = Counter(
            "mxflow_messages_received_total",
            "Messages received, by verdict (accepted, junk, quarantined, rejected, tempfailed)",
            ["node", "verdict"],
            registry=r,
        )
        self.sent = Counter(
            "mxflow_messages_sent_total",
            "Delivery attempts per recipient, by result (delivered, deferred, bounced)",
            ["node", "result", "status"],
            registry=r,
        )
        self.replies = Counter(
            "mxflow_smtp_replies_total", "SMTP replies sent, by code", ["node", "code"], registry=r
        )
        self.dns = Counter(
            "mxflow_dns_lookups_total",
            "DNS lookups by record type and result",
            ["node", "type", "result"],
            registry=r,
        )
        self.delivery_seconds = Histogram(
            "mxflow_delivery_duration_seconds",
            "Time of one delivery attempt to one next hop",
            ["node"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.check_seconds = Histogram(
            "mxflow_check_duration_seconds",
            "Time of one filter check",
            ["node", "check"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.state: _NodeState | None = None
        r.register(_StateCollector(self))

    def observe_trace(self, row: tuple[object, ...]) -> None:
        """Count a trace event (a row in `TraceStore.record`'s order)."""
        event, status, detail, scl = str(row[4]), str(row[6]), str(row[7]), row[13]
        if event == "received":
            if detail.startswith(("DSN for", "released from quarantine")):
                return  # made here, not received
            junk = isinstance(scl, int) and scl >= 5
            self.received.labels(self.node, "junk" if junk else "accepted").inc()
        elif event == "quarantined":
            self.received.labels(self.node, "quarantined").inc()
        elif event == "rejected":
            verdict = "rejected" if status == "Failed" else "tempfailed"
            self.received.labels(self.node, verdict).inc()
        elif event in _SENT:
            self.sent.labels(self.node, _SENT[event], status).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _NodeState:
    """What a scrape reads from the running node: queue depth, listeners, trace health."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.started = time.time()

    def queue_depth(self) -> int:
        try:
            return len(self.node.spool.ids())
        except OSError:
            return 0

    def accepting(self) -> bool:
        """Every listener serves, and the trace can record (a node whose trace database is
        down answers new mail with 4xx: for a load balancer it is not accepting)."""
        servers = getattr(self.node, "servers", [])
        live = [getattr(s, "_server", None) for s in servers]
        serving = bool(live) and all(s is not None and s.is_serving() for s in live)
        refusal = getattr(self.node.trace, "refusal", None)
        return serving and (refusal is None or refusal() is None)

    def health(self) -> dict[str, Any]:
        trace = self.node.trace.health()
        return {
            "node": self.node.config.name,
            "accepting": self.accepting(),
            "queue": self.queue_depth(),
            "trace": trace.to_json(),
            "malware_scanner": self.scanner(),
            "uptime_seconds": round(time.time() - self.started, 1),
        }

    def scanner(self) -> str:
        """ "none" (no clamd configured), "ok", or "unreachable" (its last scans failed:
        mail with content to scan is tempfailed until it answers again)."""
        checks = getattr(self.node.filter, "checks", [])
        scanners = [c for c in checks if getattr(c, "name", "") == "clamav"]
        if not scanners:
            return "none"
        return "unreachable" if any(getattr(c, "failures", 0) for c in scanners) else "ok"


class _StateCollector(Collector):
    def __init__(self, metrics: NodeMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        state = self.metrics.state
        if state is None:
            return
        node = self.metrics.node
        depth = GaugeMetricFamily("mxflow_queue_messages", "Messages in the spool", labels=["node"])
        depth.add_metric([node], state.queue_depth())
        yield depth
        up = GaugeMetricFamily(
            "mxflow_accepting_mail", "1 while every listener accepts connections", labels=["node"]
        )
        up.add_metric([node], 1.0 if state.accepting() else 0.0)
        yield up
        trace = state.node.trace.health()
        lost = CounterMetricFamily(
            "mxflow_trace_events_lost", "Trace events that could not be stored", labels=["node"]
        )
        lost.add_metric([node], trace.dropped)
        yield lost
        written = CounterMetricFamily(
            "mxflow_trace_events_written", "Trace events stored", labels=["node"]
        )
        written.add_metric([node], trace.written)
        yield written


_NODES: dict[str, NodeMetrics] = {}


def for_node(node: str) -> NodeMetrics:
    """The node's metrics (created on first use)."""
    metrics = _NODES.get(node)
    if metrics is None:
        metrics = _NODES[node] = NodeMetrics(node)
    return metrics


def smtp_reply(node: str, text: str) -> None:
    """Count one SMTP reply the server sends (the hook in its `reply()`)."""
    for_node(node).replies.labels(node, text[:3]).inc()


# ------------------------------------------------------------------ wiring a node


def _timed(method: Callable[..., Awaitable[Any]], observe: Callable[[float], None]) -> Any:
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await method(*args, **kwargs)
        finally:
            observe(time.perf_counter() - started)

    return wrapper


def _instrument_resolver(resolver: Any, metrics: NodeMetrics) -> None:
    if resolver is None or getattr(resolver, "_mxflow_metrics", False):
        return
    resolve = resolver.resolve

    async def counted(qname: Any, rdtype: Any = "A", *args: Any, **kwargs: Any) -> Any:
        kind = str(getattr(rdtype, "name", rdtype))
        try:
            answer = await resolve(qname, rdtype, *args, **kwargs)
        except Exception as exc:
            metrics.dns.labels(metrics.node, kind, type(exc).__name__).inc()
            raise
        metrics.dns.labels(metrics.node, kind, "answer").inc()
        return answer

    resolver.resolve = counted
    resolver._mxflow_metrics = True


def attach(node: Any) -> NodeMetrics:
    """Wire a `roles.node.Node` to its metrics: the trace observer, latency of deliveries
    and checks, DNS lookups, and what a scrape reads. Idempotent per node object."""
    metrics = for_node(node.config.name)
    if metrics.state is not None and metrics.state.node is node:
        return metrics
    metrics.state = _NodeState(node)
    node.trace.observers.append(metrics.observe_trace)
    delivery = metrics.delivery_seconds.labels(metrics.node)
    router = node.scheduler.router
    router.deliver = _timed(router.deliver, delivery.observe)
    _instrument_resolver(getattr(router, "resolver", None), metrics)
    filter_ = node.filter
    for check in getattr(filter_, "checks", []):
        hist = metrics.check_seconds.labels(metrics.node, str(getattr(check, "name", "?")))
        check.check = _timed(check.check, hist.observe)
    _instrument_resolver(getattr(filter_, "resolver", None), metrics)
    return metrics


class MetricsServer:
    """GET /metrics and /healthz over HTTP/1.0 on the node's loop (nothing else)."""

    def __init__(self, metrics: NodeMetrics, host: str, port: int) -> None:
        self.metrics = metrics
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)

    def _answer(self, path: str) -> tuple[str, str, bytes]:
        state = self.metrics.state
        if path == "/metrics":
            return "200 OK", CONTENT_TYPE, self.metrics.exposition()
        if path == "/healthz":
            health = state.health() if state is not None else {"accepting": False}
            status = "200 OK" if health.get("accepting") else "503 Service Unavailable"
            return status, "application/json", json.dumps(health).encode() + b"\n"
        return "404 Not Found", "text/plain", b"try /metrics or /healthz\n"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                request = await reader.readuntil(b"\r\n\r\n")
            method, _, rest = request.decode("latin-1").partition(" ")
            path = rest.split(" ", 1)[0].split("?", 1)[0]
            if method not in ("GET", "HEAD"):
                status, kind, body = "405 Method Not Allowed", "text/plain", b"GET only\n"
            else:
                status, kind, body = self._answer(path)
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
                "Cache-Control: no-store\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + (b"" if method == "HEAD" else body))
            await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()


async def start(node: Any) -> MetricsServer | None:
    """The hook in `Node.start()`: attach the metrics; serve them when `[metrics] listen`
    is set (worker 0 only). Returns the server for `stop()`, or None."""
    metrics = attach(node)
    listen = getattr(node.config, "metrics_listen", None)
    if listen is None or getattr(node, "worker", 0) != 0:
        return None
    server = MetricsServer(metrics, *listen)
    await server.start()
    return server


async def stop(server: MetricsServer | None) -> None:
    """The hook in `Node.stop()`."""
    if server is not None:
        await server.stop()
