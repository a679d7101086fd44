"""One TOML file per node -> typed, validated configuration.

Every error is a `ConfigError` naming the file, the key path (`listeners[0].port`), what was
found and what is expected; an unknown key is an error, never ignored, because a misspelt
security setting (say `relay = true` under the wrong table) must not silently do nothing.

Every error is reported, not only the first: getters record an error and go on with the
default, a section that cannot be read at all is skipped with its error, and
`parse_config` raises one `ConfigErrors` listing them all (one per key, in file order).
Values that would make the node misbehave are refused, not clamped: zero, negative, `nan`
and `inf` durations, retry intervals under `MIN_RETRY_INTERVAL` (`["0s"]` once made 3,437
attempts in 4 s), malformed domain names (one syntax check, `mxflow.dns.names`), and
roles this build does not implement (`IMPLEMENTED_ROLES`). `config_warnings` lists what
is allowed but risky (a relay connector open to the whole Internet, a gateway filter
without a malware scanner).

Relative paths (spool, trace, certificates, recipient files) are resolved against the
node's data directory (`[node] data_dir`, or `--data-dir` on the command line), which
itself is resolved against the directory of the config file.
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import re
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from mxflow.dns.names import is_domain_name
from mxflow.errors import ConfigError, ConfigErrors

TlsMode = Literal["none", "starttls", "implicit"]
TlsPolicy = Literal["none", "opportunistic", "required", "verify"]
DomainType = Literal["authoritative", "internal_relay"]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_T = TypeVar("_T")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+)\s*([kKmMgG]?)[bB]?\s*$")

ROLES = ("gateway", "archiver", "host", "sink")
# The roles `serve` can run today; `config check` refuses the others. (`host` joins when
# the host role stops building a gateway, `archiver` when it exists.)
IMPLEMENTED_ROLES: frozenset[str] = frozenset({"gateway", "sink"})
# The shortest retry interval: below it a failing next hop is hammered (a schedule of
# ["0s"] made 3,437 attempts in 4 s). Tests and the lab use fractions of a second.
MIN_RETRY_INTERVAL = 0.25


@dataclass(frozen=True)
class Listener:
    """One address:port the node accepts SMTP on, and its TLS mode."""

    address: str
    port: int
    tls: TlsMode = "starttls"
    cert: Path | None = None
    key: Path | None = None
    client_ca: Path | None = None  # ask clients for a certificate signed by this CA
    generate_cert: bool = False  # create a self-signed cert/key if missing


@dataclass(frozen=True)
class AcceptedDomain:
    """A domain the node accepts mail for: authoritative (known recipients only) or relay."""

    domain: str
    type: DomainType = "authoritative"
    any_recipient: bool = False
    recipients: frozenset[str] = frozenset()

    def knows(self, address: str) -> bool:
        return self.any_recipient or address.lower() in self.recipients


@dataclass(frozen=True)
class InboundConnector:
    """Who may send what: clients matched by IP/CIDR and/or TLS certificate name.

    A client matching `relay = true` may send to any domain; others only to accepted ones.
    """

    name: str
    from_networks: tuple[IPNetwork, ...] = ()
    tls_cert_names: tuple[str, ...] = ()
    relay: bool = False
    require_tls: bool = False

    def matches(self, ip: str, cert_names: tuple[str, ...]) -> bool:
        if self.from_networks:
            try:
                addr = ipaddress.ip_address(ip)
            except ValueError:
                return False
            if not any(addr in net for net in self.from_networks):
                return False
        if self.tls_cert_names:
            wanted = {n.lower() for n in self.tls_cert_names}
            if not wanted.intersection(n.lower() for n in cert_names):
                return False
        return bool(self.from_networks or self.tls_cert_names)


@dataclass(frozen=True)
class SmartHost:
    host: str
    port: int = 25


@dataclass(frozen=True)
class Route:
    """Recipient domains -> smart hosts (in order) or MX delivery, with a TLS policy."""

    name: str
    domains: tuple[str, ...]
    smart_hosts: tuple[SmartHost, ...] = ()
    mx: bool = False
    port: int = 25  # port used for MX delivery (25 on the Internet; the lab uses others)
    tls: TlsPolicy = "opportunistic"
    tls_name: str | None = None  # the name the certificate must carry (tls = "verify")
    ca_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    maildir: Path | None = None  # deliver locally into Maildirs under this directory

    def matches(self, domain: str) -> bool:
        domain = domain.lower()
        for pattern in self.domains:
            if pattern in ("*", domain):
                return True
            if pattern.startswith("*.") and domain.endswith(pattern[1:]):
                return True
        return False


@dataclass(frozen=True)
class Limits:
    max_message_size: int = 25 * 1024 * 1024
    max_recipients: int = 100
    max_connections_per_ip: int = 50
    timeout: float = 300.0  # idle timeout of an SMTP session, seconds
    max_errors: int = 20  # 4xx/5xx replies before the session is dropped (harvesting)


@dataclass(frozen=True)
class DeliveryConfig:
    """Outbound behaviour: source address, retry schedule, lifetime, DNS, concurrency."""

    source_address: str | None = None
    lifetime: float = 2 * 86400.0
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


@dataclass(frozen=True)
class LogConfig:
    """`[log]`: `format = "text"` (for people, the default) or `"json"` (one object a line)."""

    format: Literal["text", "json"] = "text"


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
    filter: Any = None  # FilterPolicy when mxflow.checks.pipeline exists, else the raw table
    auth: Any = None  # AuthPolicy when mxflow.auth provides it, else the raw table
    log: LogConfig = field(default_factory=LogConfig)

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


# --------------------------------------------------------------------------- helpers


class _Errors:
    """Every ConfigError of one file, the first per key (a bad key is reported once).

    With `at_once` (a table built outside `parse_config`'s collection), an error is raised
    as soon as it is found, so it can never be recorded and then forgotten.
    """

    def __init__(self, *, at_once: bool = False) -> None:
        self.items: list[ConfigError] = []
        self.at_once = at_once

    def add(self, err: ConfigError) -> None:
        if self.at_once:
            raise err
        for one in err.errors if isinstance(err, ConfigErrors) else [err]:
            if not any(e.key == one.key for e in self.items):
                self.items.append(one)

    @contextlib.contextmanager
    def section(self) -> Iterator[None]:
        """Run a part of the parse; its ConfigError is recorded and the parse goes on."""
        try:
            yield
        except ConfigError as err:
            self.add(err)

    def raise_any(self) -> None:
        if len(self.items) == 1:
            raise self.items[0]
        if self.items:
            raise ConfigErrors(self.items)


class _Table:
    """A TOML table being read: typed getters, and an error for every key nobody read.

    A getter that finds a wrong value records the error and returns the default, so one
    pass reports every wrong key.
    """

    def __init__(self, file: str, path: str, data: object, errors: _Errors | None = None) -> None:
        if not isinstance(data, dict):
            raise ConfigError(file, path or "(top level)", data, "a table")
        self.file = file
        self.path = path
        self.data: dict[str, Any] = data
        self.seen: set[str] = set()
        self.errors = errors if errors is not None else _Errors(at_once=True)

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str, found: object, expected: str) -> ConfigError:
        return ConfigError(self.file, self.key(name), found, expected)

    def record(self, name: str, found: object, expected: str) -> None:
        """Note a wrong value and go on (the caller uses its default)."""
        self.errors.add(self.error(name, found, expected))

    def _get(self, name: str, kind: type[_T] | tuple[type, ...], expected: str) -> Any:
        self.seen.add(name)
        value = self.data.get(name)
        if value is None:
            return None
        if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
            self.record(name, value, expected)
            return None
        return value

    def text(self, name: str, default: str | None = None, *, required: bool = False) -> str:
        value = self._get(name, str, "a string")
        if value is None:
            if required and name not in self.data:
                self.record(name, None, "a string (this key is required)")
            return default if default is not None else ""
        return str(value)

    def opt_text(self, name: str) -> str | None:
        value = self._get(name, str, "a string")
        return None if value is None else str(value)

    def flag(self, name: str, default: bool) -> bool:
        value = self._get(name, bool, "true or false")
        return default if value is None else bool(value)

    def integer(
        self, name: str, default: int, *, minimum: int = 0, maximum: int | None = None
    ) -> int:
        value = self._get(name, int, "an integer")
        if value is None:
            return default
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
            self.record(name, value, f"an integer {bound}")
            return default
        return int(value)

    def size(self, name: str, default: int) -> int:
        """A size in bytes: an integer, or a string like "10M", "512k"."""
        value = self._get(name, (int, str), 'a size in bytes (integer, or "10M", "512k")')
        if value is None:
            return default
        if isinstance(value, int):
            if value <= 0:
                self.record(name, value, "a positive size in bytes")
                return default
            return value
        m = _SIZE.match(value)
        if not m or int(m.group(1)) == 0:
            self.record(name, value, 'a positive size in bytes (integer, or "10M", "512k")')
            return default
        mult = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[m.group(2).lower()]
        return int(m.group(1)) * mult

    def duration(self, name: str, default: float, *, positive: bool = False) -> float:
        """A finite duration in seconds, >= 0; with `positive` (timeouts, lifetimes) > 0."""
        self.seen.add(name)
        value = self.data.get(name)
        if value is None:
            return default
        try:
            return _parse_duration(self, name, value, positive=positive)
        except ConfigError as err:
            self.errors.add(err)
            return default

    def items(self, name: str) -> list[Any]:
        value = self._get(name, list, "a list")
        return [] if value is None else list(value)

    def texts(self, name: str) -> list[str]:
        out: list[str] = []
        for i, item in enumerate(self.items(name)):
            if isinstance(item, str):
                out.append(item)
            else:
                self.errors.add(ConfigError(self.file, f"{self.key(name)}[{i}]", item, "a string"))
        return out

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        value = self.text(name, default)
        if value not in choices:
            self.record(name, value, "one of " + ", ".join(repr(c) for c in choices))
            return default
        return value

    def table(self, name: str) -> _Table | None:
        self.seen.add(name)
        value = self.data.get(name)
        if value is None:
            return None
        return _Table(self.file, self.key(name), value, self.errors)

    def tables(self, name: str) -> list[_Table]:
        """An array of tables (`[[name]]`); an entry that is not a table is recorded."""
        self.seen.add(name)
        value = self.data.get(name)
        if value is None:
            return []
        if not isinstance(value, list):
            self.record(name, value, f"an array of tables ([[{self.key(name)}]])")
            return []
        out: list[_Table] = []
        for i, v in enumerate(value):
            with self.errors.section():
                out.append(_Table(self.file, f"{self.key(name)}[{i}]", v, self.errors))
        return out

    def sub(self, path: str, data: object) -> _Table:
        """A table at `path` that is not one of this table's keys (an inline value)."""
        return _Table(self.file, path, data, self.errors)

    def raw(self, name: str) -> Any:
        self.seen.add(name)
        return self.data.get(name)

    def done(self) -> None:
        """Record every key that no getter asked for: unknown keys are errors."""
        for name in self.data:
            if name not in self.seen:
                known = ", ".join(sorted(self.seen)) or "none"
                self.record(name, self.data[name], f"no such key here (known keys: {known})")


def _parse_duration(
    t: _Table, name: str, value: object, *, positive: bool = False, minimum: float = 0.0
) -> float:
    """Seconds from a number or "30s"/"5m"/"2d": finite, not negative; with `positive` not
    zero either, and at least `minimum` when one is given."""
    expected = 'a duration (seconds, or "30s", "5m", "2d")'
    if isinstance(value, bool):
        raise t.error(name, value, expected)
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        m = _DURATION.match(str(value))
        if not m:
            raise t.error(name, value, expected)
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    if not math.isfinite(seconds):
        raise t.error(name, value, "a finite duration (not nan or inf)")
    if minimum and seconds < minimum:
        raise t.error(name, value, f"a duration of at least {minimum:g}s")
    if seconds < 0 or (positive and seconds == 0):
        raise t.error(name, value, "a duration greater than 0" if positive else "a duration >= 0")
    return seconds


def _ip(t: _Table, name: str, value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise t.error(name, value, "an IP address, e.g. 127.0.0.1") from None


def _endpoint(t: _Table, key: str, text: str, default_port: int) -> SmartHost:
    host, sep, port_text = text.rpartition(":")
    if not sep or "]" in port_text:
        host, port_text = text, str(default_port)
    host = host.strip("[]")
    if not host or not re.fullmatch(r"[0-9]{1,5}", port_text) or not 0 < int(port_text) < 65536:
        raise ConfigError(t.file, key, text, "HOST[:PORT], e.g. 127.0.0.1:2526")
    return SmartHost(host, int(port_text))


def _path(base: Path, value: str | None) -> Path | None:
    if value is None or value == "":
        return None
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def valid_domain(text: str) -> bool:
    """The one domain-name syntax check of the config (labels of letters, digits, `-`, `_`;
    no empty label, so `contoso..com` is refused); an IDN is checked in its xn-- form."""
    ascii_form = text
    with contextlib.suppress(UnicodeError):
        ascii_form = text.encode("idna").decode("ascii")
    return is_domain_name(ascii_form, min_labels=1)


def _domain(t: _Table, name: str, value: str) -> str:
    d = value.strip().lower().rstrip(".")
    if not valid_domain(d):
        raise t.error(name, value, "a domain name, e.g. contoso.com")
    return d


# --------------------------------------------------------------------------- sections


def _listener(t: _Table, data_dir: Path) -> Listener:
    address = t.text("address", required=True)
    if address:
        address = _ip(t, "address", address)
    port = t.integer("port", 25, minimum=0, maximum=65535)
    tls = t.choice("tls", ("none", "starttls", "implicit"), "starttls")
    cert = _path(data_dir, t.opt_text("cert"))
    key = _path(data_dir, t.opt_text("key"))
    client_ca = _path(data_dir, t.opt_text("client_ca"))
    generate = t.flag("generate_cert", False)
    t.done()
    if tls != "none" and (cert is None or key is None):
        raise t.error("cert", None, f"cert and key files for tls = {tls!r} (or tls = 'none')")
    if tls != "none" and not generate:
        for name, p in (("cert", cert), ("key", key)):
            if p is not None and not p.exists():
                t.record(name, str(p), "an existing file (or set generate_cert = true)")
    return Listener(address, port, tls, cert, key, client_ca, generate)  # type: ignore[arg-type]


def _recipients(t: _Table, data_dir: Path, domain: str, raw: object) -> set[str]:
    """The `recipients` key of an accepted domain as a list or a file of addresses."""
    recipients: set[str] = set()
    if isinstance(raw, list):
        for i, item in enumerate(raw):
            if not isinstance(item, str) or "@" not in item:
                t.errors.add(ConfigError(t.file, f"{t.key('recipients')}[{i}]", item, "an address"))
            else:
                recipients.add(item.lower())
        return recipients
    if not isinstance(raw, dict):
        raise t.error("recipients", raw, '"any", a list of addresses, or { file = "PATH" }')
    sub = t.sub(t.key("recipients"), raw)
    file = _path(data_dir, sub.text("file", required=True))
    sub.done()
    if file is None:
        return recipients
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
        raise sub.error("file", str(file), f"a readable UTF-8 file ({why})") from None
    for line in lines:
        entry = line.split("#", 1)[0].strip().lower()
        if entry:
            recipients.add(entry if "@" in entry else f"{entry}@{domain}")
    return recipients


def _accepted_domain(t: _Table, data_dir: Path) -> AcceptedDomain:
    domain = _domain(t, "domain", t.text("domain", required=True))
    kind = t.choice("type", ("authoritative", "internal_relay"), "authoritative")
    raw = t.raw("recipients")
    any_rcpt = False
    recipients: set[str] = set()
    if raw is None:
        any_rcpt = kind == "internal_relay"
    elif raw == "any":
        any_rcpt = True
    else:
        recipients = _recipients(t, data_dir, domain, raw)
    t.done()
    return AcceptedDomain(domain, kind, any_rcpt, frozenset(recipients))  # type: ignore[arg-type]


def _connector(t: _Table, index: int) -> InboundConnector:
    name = t.text("name", f"connector{index}")
    nets: list[IPNetwork] = []
    for i, text in enumerate(t.texts("from")):
        try:
            nets.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            t.errors.add(ConfigError(t.file, f"{t.key('from')}[{i}]", text, "an IP or CIDR"))
    names = tuple(n.lower() for n in t.texts("tls_cert_names"))
    relay = t.flag("relay", False)
    require_tls = t.flag("require_tls", False)
    t.done()
    if not nets and not names and "from" not in t.data:
        raise t.error("from", None, "at least one of `from` (IPs/CIDRs) or `tls_cert_names`")
    return InboundConnector(name, tuple(nets), names, relay, require_tls)


def _route_domains(t: _Table) -> tuple[str, ...]:
    domains: list[str] = []
    for i, d in enumerate(t.texts("domains")):
        if d == "*":
            domains.append(d)
            continue
        bare = d[2:] if d.startswith("*.") else d
        with t.errors.section():
            checked = _domain(t, f"domains[{i}]", bare)
            domains.append(f"*.{checked}" if d.startswith("*.") else checked)
    if not domains and "domains" not in t.data:
        raise t.error("domains", None, 'a non-empty list of recipient domains ("*" for any)')
    return tuple(domains)


def _route(t: _Table, index: int, data_dir: Path) -> Route:
    name = t.text("name", f"route{index}")
    domains = _route_domains(t)
    hosts: list[SmartHost] = []
    for i, text in enumerate(t.texts("smart_hosts")):
        with t.errors.section():
            hosts.append(_endpoint(t, f"{t.key('smart_hosts')}[{i}]", text, 25))
    mx = t.flag("mx", False)
    port = t.integer("port", 25, minimum=1, maximum=65535)
    tls = t.choice("tls", ("none", "opportunistic", "required", "verify"), "opportunistic")
    tls_name = t.opt_text("tls_name")
    if tls_name is not None:
        tls_name = _domain(t, "tls_name", tls_name)
    ca_file = _path(data_dir, t.opt_text("ca_file"))
    client_cert = _path(data_dir, t.opt_text("client_cert"))
    client_key = _path(data_dir, t.opt_text("client_key"))
    maildir = _path(data_dir, t.opt_text("maildir"))
    t.done()
    if sum((bool(t.data.get("smart_hosts")), mx, maildir is not None)) != 1:
        raise t.error(
            "smart_hosts",
            [h.host for h in hosts],
            "exactly one of smart_hosts = [...], mx = true or maildir = PATH",
        )
    if tls == "verify" and not tls_name and hosts and not mx:
        for h in hosts:
            try:
                ipaddress.ip_address(h.host)
            except ValueError:
                continue
            raise t.error("tls_name", None, "the certificate name to verify for an IP smart host")
    return Route(
        name,
        domains,
        tuple(hosts),
        mx,
        port,
        tls,  # type: ignore[arg-type]
        tls_name,
        ca_file,
        client_cert,
        client_key,
        maildir,
    )


def _parse_optional_policy(t: _Table, name: str, modules: tuple[str, ...], func: str) -> Any:
    """Validate [filter] / [auth] with their owners' parsers (imported lazily), if present."""
    raw = t.raw(name)
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise t.error(name, raw, "a table")
    import importlib

    for module in modules:
        try:
            parser: Callable[[dict[str, Any], str], Any] = getattr(
                importlib.import_module(module), func
            )
        except (ImportError, AttributeError):
            continue
        return parser(raw, t.file)
    return raw


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


def _limits(top: _Table) -> Limits:
    lt = top.table("limits") or top.sub("limits", {})
    limits = Limits(
        max_message_size=lt.size("max_message_size", Limits.max_message_size),
        max_recipients=lt.integer("max_recipients", Limits.max_recipients, minimum=1),
        max_connections_per_ip=lt.integer(
            "max_connections_per_ip", Limits.max_connections_per_ip, minimum=1
        ),
        timeout=lt.duration("timeout", Limits.timeout, positive=True),
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


def _policies(top: _Table) -> dict[str, Any]:
    """[filter] and [auth], each validated by its owner's parser."""
    policies: dict[str, Any] = {}
    for name, modules, func in (
        ("filter", ("mxflow.checks.policy", "mxflow.checks.pipeline"), "parse_filter_section"),
        ("auth", ("mxflow.auth.policy", "mxflow.auth"), "parse_auth_section"),
    ):
        with top.errors.section():
            policies[name] = _parse_optional_policy(top, name, modules, func)
    return policies


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

    listeners, accepted, connectors, routes = _tables(top, dd)
    if "listeners" not in data:
        errors.add(ConfigError(file, "listeners", None, "at least one [[listeners]] table"))
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
    st = top.table("server") or top.sub("server", {})
    server = ServerConfig(
        workers=st.integer("workers", 1, minimum=1, maximum=64), fsync=st.flag("fsync", True)
    )
    st.done()
    lg = top.table("log") or top.sub("log", {})
    log = LogConfig(lg.choice("format", ("text", "json"), "text"))  # type: ignore[arg-type]
    lg.done()
    policies = _policies(top)
    top.done()
    errors.raise_any()

    return NodeConfig(
        file=file,
        name=node.name,
        hostname=node.hostname,
        role=node.role,
        data_dir=dd,
        spool_dir=node.spool_dir,
        trace_db=node.trace_db,
        listeners=listeners,
        accepted_domains=accepted,
        inbound_connectors=connectors,
        routes=routes,
        limits=limits,
        delivery=delivery,
        server=server,
        dns_resolver=delivery.dns,
        filter=policies.get("filter"),
        auth=policies.get("auth"),
        log=log,
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
    scanner = getattr(config.filter, "clamd", None)
    if config.role == "gateway" and config.filter is not None and scanner is None:
        warnings.append(
            f"{config.file}: filter.clamd: not set; this gateway filters without a"
            ' malware scanner (set clamd = "unix:/run/clamav/clamd.ctl" or "HOST:PORT")'
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
