"""`[limits]`, `[delivery]`, `[dns]`, `[server]`, `[log]`: how the engine runs.

Retry intervals under `MIN_RETRY_INTERVAL` are refused (`["0s"]` once made 3,437
attempts in 4 s).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

from mxflow.config.base import _endpoint, _ip, _parse_duration, _Table
from mxflow.errors import ConfigError

# The shortest retry interval: below it a failing next hop is hammered (a schedule of
# ["0s"] made 3,437 attempts in 4 s). Tests and the lab use fractions of a second.
MIN_RETRY_INTERVAL = 0.25


@dataclass(frozen=True)
class Limits:
    max_message_size: int = 25 * 1024 * 1024
    max_recipients: int = 100
    max_connections_per_ip: int = 50
    max_connections: int = 1000  # the node's inbound connections, all listeners together
    timeout: float = 300.0  # idle: the longest wait for a command or data (RFC 5321 4.5.3.2.7)
    data_timeout: float = 1800.0  # the whole of one message's data, however it trickles in
    max_errors: int = 20  # 4xx/5xx replies before the session is dropped (harvesting)


@dataclass(frozen=True)
class DeliveryConfig:
    """Outbound behaviour: source address, retry schedule, lifetime, DNS, concurrency."""

    source_address: str | None = None
    lifetime: float = 2 * 86400.0
    delay_warning: float = 4 * 3600.0  # tell the sender once a message waited this long; 0: never
    retry_intervals: tuple[float, ...] = (60.0, 300.0, 900.0, 1800.0, 3600.0)
    connect_timeout: float = 30.0
    command_timeout: float = 120.0
    concurrency: int = 50
    connections_per_host: int = 20
    dns: str | None = None  # nameserver as IP[:PORT]; required for MX delivery


@dataclass(frozen=True)
class ServerConfig:
    workers: int = 1
    fsync: bool = True
    # uvloop (libuv): a tenth less CPU per message for a lone sender, and one connection at
    # Postfix's rate (bench/README.md); "asyncio", the standard library's loop, for diagnosis
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"


@dataclass(frozen=True)
class LogConfig:
    """`[log]`: `format = "text"` (for people, the default) or `"json"` (one object a line)."""

    format: Literal["text", "json"] = "text"


def _limits(top: _Table) -> Limits:
    lt = top.table("limits") or top.sub("limits", {})
    limits = Limits(
        max_message_size=lt.size("max_message_size", Limits.max_message_size),
        max_recipients=lt.integer("max_recipients", Limits.max_recipients, minimum=1),
        max_connections=lt.integer("max_connections", Limits.max_connections, minimum=1),
        max_connections_per_ip=lt.integer(
            "max_connections_per_ip", Limits.max_connections_per_ip, minimum=1
        ),
        timeout=lt.duration("timeout", Limits.timeout, positive=True),
        data_timeout=lt.duration("data_timeout", Limits.data_timeout, positive=True),
        max_errors=lt.integer("max_errors", Limits.max_errors, minimum=1),
    )
    lt.done()
    return limits


def _retry_intervals(dt: _Table) -> tuple[float, ...]:
    intervals: list[float] = []
    for i, v in enumerate(dt.items("retry_intervals")):
        with dt.errors.section():
            intervals.append(
                _parse_duration(dt, f"retry_intervals[{i}]", v, minimum=MIN_RETRY_INTERVAL)
            )
    return tuple(intervals) or DeliveryConfig.retry_intervals


def _dns_resolver(top: _Table, dt: _Table) -> str | None:
    """[dns] resolver, or its old place [delivery] dns; both an IP[:PORT]."""
    dns_text = dt.opt_text("dns")
    nt = top.table("dns") or top.sub("dns", {})
    resolver_text = nt.opt_text("resolver")
    nt.done()
    for key, value in (("dns.resolver", resolver_text), ("delivery.dns", dns_text)):
        if value is not None:
            with top.errors.section():
                hop = _endpoint(top.sub("", {}), key, value, 53)
                try:
                    ipaddress.ip_address(hop.host)
                except ValueError:
                    raise ConfigError(top.file, key, value, "IP[:PORT] of a nameserver") from None
    if resolver_text and dns_text and resolver_text != dns_text:
        top.errors.add(
            ConfigError(
                top.file,
                "delivery.dns",
                dns_text,
                f"no value, or the same as dns.resolver ({resolver_text})",
            )
        )
    return resolver_text or dns_text


def _delivery(top: _Table) -> DeliveryConfig:
    dt = top.table("delivery") or top.sub("delivery", {})
    src = dt.opt_text("source_address")
    source: str | None = None
    if src:
        with dt.errors.section():
            source = _ip(dt, "source_address", src)
    delivery = DeliveryConfig(
        source_address=source,
        lifetime=dt.duration("lifetime", DeliveryConfig.lifetime, positive=True),
        delay_warning=dt.duration("delay_warning", DeliveryConfig.delay_warning),
        retry_intervals=_retry_intervals(dt),
        connect_timeout=dt.duration(
            "connect_timeout", DeliveryConfig.connect_timeout, positive=True
        ),
        command_timeout=dt.duration(
            "command_timeout", DeliveryConfig.command_timeout, positive=True
        ),
        concurrency=dt.integer("concurrency", DeliveryConfig.concurrency, minimum=1),
        connections_per_host=dt.integer(
            "connections_per_host", DeliveryConfig.connections_per_host, minimum=1
        ),
        dns=_dns_resolver(top, dt),
    )
    dt.done()
    return delivery


def _server(top: _Table) -> ServerConfig:
    st = top.table("server") or top.sub("server", {})
    loop = st.choice("event_loop", ("uvloop", "asyncio"), ServerConfig.event_loop)
    server = ServerConfig(
        workers=st.integer("workers", 1, minimum=1, maximum=64),
        fsync=st.flag("fsync", True),
        event_loop="asyncio" if loop == "asyncio" else "uvloop",
    )
    st.done()
    return server


def _log(top: _Table) -> LogConfig:
    lg = top.table("log") or top.sub("log", {})
    log = LogConfig(lg.choice("format", ("text", "json"), "text"))  # type: ignore[arg-type]
    lg.done()
    return log
