"""One TOML file per node -> a typed `NodeConfig`: the composition of every section.

Every error is reported, not only the first: a section that cannot be read at all is
skipped with its error, and `parse_config` raises one `ConfigErrors` listing them all
(one per key, in file order). Roles this build does not compose are refused
(`IMPLEMENTED_ROLES`). `config_warnings` lists what is allowed but risky (a relay
connector open to the whole Internet, a gateway filter without a malware scanner).

Relative paths (spool, trace, certificates, recipient files) are resolved against the
node's data directory (`[node] data_dir`, or `--data-dir` on the command line), which
itself is resolved against the directory of the config file.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mxflow.auth.policy import AuthPolicy, parse_auth_section
from mxflow.config.archive import ArchiveConfig, _archive_config
from mxflow.config.base import _domain, _Errors, _path, _Table
from mxflow.config.connectors import InboundConnector, _connector
from mxflow.config.domains import AcceptedDomain, _accepted_domain
from mxflow.config.engine import (
    DeliveryConfig,
    Limits,
    LogConfig,
    ServerConfig,
    _delivery,
    _limits,
    _log,
    _server,
)
from mxflow.config.filter import FilterPolicy, parse_filter_section
from mxflow.config.host import (
    HostConfig,
    _forget_host_keys,
    _host_config,
    _refuse_host_recipient_lists,
)
from mxflow.config.listeners import Listener, _listener
from mxflow.config.routes import Route, _route
from mxflow.config.web import WebConfig, _metrics_section, _store_section, _web_section
from mxflow.errors import ConfigError

ROLES = ("gateway", "archiver", "host", "sink")


# The roles `serve` can run (roles/build.py composes each); `config check` refuses a role
# listed in ROLES but not here, so a role that is named but not built fails loudly.
IMPLEMENTED_ROLES: frozenset[str] = frozenset({"gateway", "archiver", "host", "sink"})


@dataclass
class NodeConfig:
    """Everything one node needs; built by `load_config` / `parse_config`."""

    file: str
    name: str
    hostname: str
    role: str
    data_dir: Path
    spool_dir: Path
    trace_db: Path
    listeners: list[Listener]
    accepted_domains: list[AcceptedDomain]
    inbound_connectors: list[InboundConnector]
    routes: list[Route]
    limits: Limits = field(default_factory=Limits)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    dns_resolver: str | None = None  # [dns] resolver "IP[:PORT]": MX, filter, sender auth
    filter: FilterPolicy | None = None  # [filter]: no table, no filter
    auth: AuthPolicy | None = None  # [auth]: signing, sealing, DMARC actions
    log: LogConfig = field(default_factory=LogConfig)
    host: HostConfig = field(default_factory=lambda: HostConfig())  # noqa: PLW0108 (defined below)
    store_url: str | None = None  # [store] url: state shared with other nodes
    metrics_listen: tuple[str, int] | None = None  # [metrics] listen: /metrics, /healthz
    web: WebConfig = field(default_factory=WebConfig)
    archive: ArchiveConfig | None = None  # [archive]: the archiver's journal

    @property
    def shared_database(self) -> str | None:
        """The PostgreSQL URL every shared store uses, or None (SQLite files per node)."""
        url = self.store_url
        return url if url and url.startswith(("postgresql:", "postgres:")) else None

    def accepted_domain(self, domain: str) -> AcceptedDomain | None:
        domain = domain.lower()
        for accepted in self.accepted_domains:
            if accepted.domain == domain:
                return accepted
        return None

    def route_for(self, domain: str) -> Route | None:
        for route in self.routes:
            if route.matches(domain):
                return route
        return None


@dataclass
class _Node:
    """The [node] table, read first: the other sections need its data directory."""

    name: str
    hostname: str
    role: str
    data_dir: Path
    spool_dir: Path
    trace_db: Path


def _node(top: _Table, base: Path, data_dir: str | Path | None) -> _Node:
    node = top.table("node") or top.sub("node", {})
    name = node.text("name", required=True)
    hostname = node.text("hostname", f"{name}.localdomain")
    with top.errors.section():
        _domain(node, "hostname", hostname)
    role = node.choice("role", ROLES, "gateway")
    if role not in IMPLEMENTED_ROLES:
        runs = ", ".join(sorted(IMPLEMENTED_ROLES))
        node.record("role", role, f"a role this version implements ({runs}); {role!r} is not")
    dd_text = node.opt_text("data_dir")
    if data_dir is not None:  # from the command line: relative to the working directory
        dd = Path(data_dir).expanduser().resolve()
    elif dd_text is not None:  # from the file: relative to the file's directory
        dd = Path(dd_text).expanduser()
        dd = (dd if dd.is_absolute() else base / dd).resolve()
    else:
        dd = (Path("var") / (name or "node")).resolve()
    spool = _path(dd, node.text("spool_dir", "spool")) or dd / "spool"
    trace = _path(dd, node.text("trace_db", "trace.sqlite")) or dd / "trace.sqlite"
    node.done()
    return _Node(name, hostname, role, dd, spool, trace)


def _tables(
    top: _Table, dd: Path
) -> tuple[list[Listener], list[AcceptedDomain], list[InboundConnector], list[Route]]:
    """The arrays of tables; an entry with an error is left out (the error is recorded)."""
    listeners: list[Listener] = []
    for t in top.tables("listeners"):
        with top.errors.section():
            listeners.append(_listener(t, dd))
    accepted: list[AcceptedDomain] = []
    for t in top.tables("accepted_domains"):
        with top.errors.section():
            accepted.append(_accepted_domain(t, dd))
    connectors: list[InboundConnector] = []
    for i, t in enumerate(top.tables("inbound_connectors")):
        with top.errors.section():
            connectors.append(_connector(t, i))
    routes: list[Route] = []
    for i, t in enumerate(top.tables("routes")):
        with top.errors.section():
            routes.append(_route(t, i, dd))
    return listeners, accepted, connectors, routes


@dataclass
class _Policies:
    filter: FilterPolicy | None = None
    auth: AuthPolicy | None = None


def _policies(top: _Table) -> _Policies:
    """[filter] and [auth], each read by its own section parser."""
    found = _Policies()
    with top.errors.section():
        raw = top.raw("filter")
        if raw is not None:
            if not isinstance(raw, dict):
                raise top.error("filter", raw, "a table")
            found.filter = parse_filter_section(raw, top.file)
    with top.errors.section():
        raw = top.raw("auth")
        if raw is not None:
            if not isinstance(raw, dict):
                raise top.error("auth", raw, "a table")
            found.auth = parse_auth_section(raw, top.file)
    return found


def _host_and_tables(
    top: _Table, node: _Node
) -> tuple[HostConfig, list[Listener], list[AcceptedDomain], list[InboundConnector], list[Route]]:
    """The host's sections first (they take the connectors' enhanced-filtering keys), then
    the arrays of tables, and what a role allows of them."""
    host_config = HostConfig()
    try:
        host_config = _host_config(top)
    except ConfigError as err:
        top.errors.add(err)
        _forget_host_keys(top)
    listeners, accepted, connectors, routes = _tables(top, node.data_dir)
    for i, listener in enumerate(listeners):
        if listener.submission and node.role != "host":  # only a host has users who log in
            top.errors.add(
                ConfigError(top.file, f"listeners[{i}].submission", True, "role = 'host'")
            )
    if node.role == "host":
        with top.errors.section():
            _refuse_host_recipient_lists(top.file, accepted)
    if "listeners" not in top.data:
        top.errors.add(ConfigError(top.file, "listeners", None, "at least one [[listeners]] table"))
    return host_config, listeners, accepted, connectors, routes


def parse_config(
    data: dict[str, Any], file: str, *, data_dir: str | Path | None = None
) -> NodeConfig:
    """Build a NodeConfig from a parsed TOML document; `file` is used in error messages.

    Raises ConfigError for one error, ConfigErrors (a ConfigError naming the first) for
    several.
    """
    errors = _Errors()
    top = _Table(file, "", data, errors)
    base = Path(file).resolve().parent if file and file != "<string>" else Path.cwd()
    node = _node(top, base, data_dir)
    dd = node.data_dir

    host_config, listeners, accepted, connectors, routes = _host_and_tables(top, node)
    archive = None
    with errors.section():
        archive = _archive_config(top, dd)
    limits = _limits(top)
    delivery = _delivery(top)
    if any(r.mx for r in routes) and not delivery.dns:
        errors.add(
            ConfigError(
                file,
                "dns.resolver",
                None,
                'a [dns] table with resolver = "IP[:PORT]" for MX routes',
            )
        )
    server, log = _server(top), _log(top)
    policies = _policies(top)
    trace = node.trace_db
    store_url, metrics_listen, web = None, None, WebConfig()
    with errors.section():
        store_url, trace = _store_section(top, dd, trace)
        metrics_listen = _metrics_section(top)
        web = _web_section(top, dd)
    top.done()
    errors.raise_any()

    return NodeConfig(
        file=file,
        name=node.name,
        hostname=node.hostname,
        role=node.role,
        data_dir=dd,
        spool_dir=node.spool_dir,
        trace_db=trace,
        listeners=listeners,
        accepted_domains=accepted,
        inbound_connectors=connectors,
        routes=routes,
        limits=limits,
        delivery=delivery,
        server=server,
        dns_resolver=delivery.dns,
        filter=policies.filter,
        auth=policies.auth,
        log=log,
        host=host_config,
        store_url=store_url,
        metrics_listen=metrics_listen,
        web=web,
        archive=archive,
    )


def config_warnings(config: NodeConfig) -> list[str]:
    """What the config allows but an operator should look at twice: one line each."""
    warnings: list[str] = []
    for i, c in enumerate(config.inbound_connectors):
        open_nets = [str(n) for n in c.from_networks if n.prefixlen == 0]
        if c.relay and open_nets:
            warnings.append(
                f"{config.file}: inbound_connectors[{i}].from: {', '.join(open_nets)} with"
                f" relay = true lets any client on the Internet relay through {c.name!r}"
                " (an open relay); list the networks that may relay"
            )
    scanner = config.filter.clamd if config.filter is not None else None
    if config.role == "gateway" and config.filter is not None and scanner is None:
        warnings.append(
            f"{config.file}: filter.clamd: not set; this gateway filters without a"
            ' malware scanner (set clamd = "unix:/run/clamav/clamd.ctl" or "HOST:PORT")'
        )
    policy = config.filter
    for name in ("rspamd", "spamd"):
        if policy is not None and getattr(policy, name) is not None and not policy.enabled(name):
            warnings.append(
                f"{config.file}: filter.{name}: configured, but filter.checks does not list"
                f' "{name}", so it never runs (add "{name}" to checks, or remove [filter.{name}])'
            )
    return warnings


def load_config(path: str | Path, *, data_dir: str | Path | None = None) -> NodeConfig:
    """Read and validate a node's TOML file."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(file, "(file)", str(path), f"a readable file ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            file, "(file)", f"byte {exc.object[exc.start]:#04x} at offset {exc.start}", "UTF-8 text"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, "(syntax)", str(exc), "valid TOML") from None
    return parse_config(data, file, data_dir=data_dir)
