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
# The roles `serve` can run (roles/build.py composes each); `config check` refuses a role
# listed in ROLES but not here, so a role that is named but not built fails loudly.
IMPLEMENTED_ROLES: frozenset[str] = frozenset({"gateway", "archiver", "host", "sink"})
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
    submission: bool = False  # a submission port (587): AUTH after TLS, MAIL only after AUTH


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
        if self.tls_cert_names and not any(
            _cert_name_matches(pattern, name)
            for pattern in self.tls_cert_names
            for name in cert_names
        ):
            return False
        return bool(self.from_networks or self.tls_cert_names)


def _cert_name_matches(pattern: str, name: str) -> bool:
    """A connector's certificate name against one the client presented: exact, or
    `*.contoso.com` for any name below contoso.com (as the reference's
    TlsSenderCertificateName takes it); a wildcard the client presents matches nothing."""
    pattern, name = pattern.lower().rstrip("."), name.lower().rstrip(".")
    if "*" in name:
        return False
    if pattern.startswith("*."):
        return name.endswith(pattern[1:]) and len(name) > len(pattern) - 1
    return pattern == name


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
    max_connections: int = 1000  # the node's inbound connections, all listeners together
    timeout: float = 300.0  # idle timeout of an SMTP session, seconds
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


@dataclass(frozen=True)
class WebConfig:
    """`[web]`: the admin UI (`mxflow web`) of this node."""

    listen: tuple[str, int] = ("127.0.0.1", 8025)
    users_db: Path | None = None  # accounts and sessions; default DATA_DIR/web.sqlite
    session_lifetime: float = 8 * 3600.0
    idle_timeout: float = 3600.0
    secure_cookies: bool = True  # False only for plain-HTTP tests on loopback
    public_url: str = ""  # how recipients reach the UI (digest links); default http://LISTEN
    digest_interval: float = 0.0  # seconds between quarantine digests; 0: none


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
    host: HostConfig = field(default_factory=lambda: HostConfig())  # noqa: PLW0108 (defined below)
    store_url: str | None = None  # [store] url: a trace store shared with other nodes
    metrics_listen: tuple[str, int] | None = None  # [metrics] listen: /metrics, /healthz
    web: WebConfig = field(default_factory=WebConfig)
    archive: ArchiveConfig | None = None  # [archive]: the archiver's journal

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
    submission = t.flag("submission", False)
    t.done()
    if submission and tls == "none":
        raise t.error(
            "tls", tls, "starttls or implicit on a submission listener (no AUTH in clear)"
        )
    if tls != "none" and (cert is None or key is None):
        raise t.error("cert", None, f"cert and key files for tls = {tls!r} (or tls = 'none')")
    if tls != "none" and not generate:
        for name, p in (("cert", cert), ("key", key)):
            if p is not None and not p.exists():
                t.record(name, str(p), "an existing file (or set generate_cert = true)")
    return Listener(address, port, tls, cert, key, client_ca, generate, submission)  # type: ignore[arg-type]


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


# --------------------------------------------------------------------------- host


# What the reference host treats as private and skips on its own while walking Received
# lines (RFC 1918, loopback, link-local, shared address space, IPv6 unique-local). The lab
# replaces this list with `[enhanced_filtering] private_ranges` so its loopback hops count
# as public and can be skip-listed.
DEFAULT_PRIVATE_RANGES: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "100.64.0.0/10",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
    )
)
_EF_KEYS = ("skip_last_hop", "skip_ips", "ef_users", "ef_test_mode", "scl_bypass")
_SCL_OPS = ("<=", ">=", "<", ">", "=")


@dataclass(frozen=True)
class EnhancedFiltering:
    """Enhanced Filtering for Connectors on one inbound connector (EFSkipLastIP, EFSkipIPs,
    EFUsers, EFTestMode of the reference host). `skip_last_hop` and `skip_ips` are
    alternatives, as there: skip only the last hop, or the listed IPs."""

    skip_last_hop: bool = False
    skip_ips: tuple[IPNetwork, ...] = ()
    users: frozenset[str] = frozenset()  # empty: every recipient
    test_mode: bool = False

    @property
    def enabled(self) -> bool:
        return self.skip_last_hop or bool(self.skip_ips)


@dataclass(frozen=True)
class MailboxEntry:
    address: str
    display_name: str = ""


@dataclass(frozen=True)
class AliasEntry:
    address: str
    target: str


@dataclass(frozen=True)
class GroupEntry:
    address: str
    members: tuple[str, ...]


@dataclass(frozen=True)
class MailFlowRule:
    """One transport rule: every condition given must hold; then the actions apply.

    Conditions left at None/() are not tested. `header_pattern` is a case-insensitive glob
    where `*` is the only wildcard (no regular expressions: matching stays linear).
    """

    name: str
    priority: int
    header: str | None = None
    header_pattern: str = "*"
    sender_ips: tuple[IPNetwork, ...] = ()
    sender_domains: tuple[str, ...] = ()
    recipient_domains: tuple[str, ...] = ()
    connectors: tuple[str, ...] = ()
    scl_op: str | None = None  # one of <, <=, =, >=, >
    scl_value: int = 0
    set_scl: int | None = None
    add_headers: tuple[tuple[str, str], ...] = ()
    remove_headers: tuple[str, ...] = ()
    reject: str | None = None
    redirect: str | None = None
    quarantine: bool = False
    stop: bool = False


@dataclass(frozen=True)
class HostConfig:
    """The mailbox host's settings: directory entries declared in the TOML (in force at
    start, without verification), enhanced filtering per connector, mail flow rules."""

    lock_down: bool = False  # mail for accepted domains only through an inbound connector
    reject_direct_send: bool = True  # MAIL FROM an accepted domain, no connector: refused
    private_ranges: tuple[IPNetwork, ...] = DEFAULT_PRIVATE_RANGES
    enhanced_filtering: dict[str, EnhancedFiltering] = field(default_factory=dict)
    scl_bypass: frozenset[str] = frozenset()
    mailboxes: tuple[MailboxEntry, ...] = ()
    aliases: tuple[AliasEntry, ...] = ()
    groups: tuple[GroupEntry, ...] = ()
    mail_flow_rules: tuple[MailFlowRule, ...] = ()
    warnings: tuple[str, ...] = ()

    def ef_for(self, connector: str | None) -> EnhancedFiltering | None:
        """The enhanced-filtering settings of `connector`, or None when it has none."""
        ef = self.enhanced_filtering.get(connector or "")
        return ef if ef is not None and ef.enabled else None


def _address(t: _Table, key: str, value: object) -> str:
    if not isinstance(value, str) or value.count("@") != 1 or any(c in value for c in " <>\r\n"):
        raise ConfigError(t.file, key, value, "an address, e.g. bob@contoso.com")
    local, domain = value.strip().lower().split("@")
    if not local or not domain or "." not in domain:
        raise ConfigError(t.file, key, value, "an address, e.g. bob@contoso.com")
    return f"{local}@{domain}"


def _ip_ranges(t: _Table, name: str) -> tuple[IPNetwork, ...]:
    """Single IPs, CIDR blocks and `a-b` ranges, as networks."""
    nets: list[IPNetwork] = []
    for i, text in enumerate(t.texts(name)):
        key = f"{t.key(name)}[{i}]"
        try:
            if "-" in text:
                first, last = (ipaddress.ip_address(x.strip()) for x in text.split("-", 1))
                if first.version != last.version or first > last:  # type: ignore[operator]
                    raise ValueError(text)
                nets.extend(ipaddress.summarize_address_range(first, last))
            else:
                nets.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            raise ConfigError(t.file, key, text, "an IP, a CIDR block or a range a-b") from None
    return tuple(nets)


def _enhanced_filtering(
    t: _Table, private: tuple[IPNetwork, ...]
) -> tuple[EnhancedFiltering, bool]:
    """The enhanced-filtering keys of one [[inbound_connectors]] table, and scl_bypass."""
    skip_ips = _ip_ranges(t, "skip_ips")
    for net in skip_ips:
        for priv in private:
            if net.version == priv.version and net.overlaps(priv):
                raise t.error(
                    "skip_ips",
                    str(net),
                    f"public addresses only: {priv} is private and skipped anyway"
                    " (or change [enhanced_filtering] private_ranges)",
                )
    users = frozenset(
        _address(t, f"{t.key('ef_users')}[{i}]", u) for i, u in enumerate(t.texts("ef_users"))
    )
    ef = EnhancedFiltering(
        skip_last_hop=t.flag("skip_last_hop", False),
        skip_ips=skip_ips,
        users=users,
        test_mode=t.flag("ef_test_mode", False),
    )
    bypass = t.flag("scl_bypass", False)
    t.done()
    if ef.skip_last_hop and skip_ips:
        raise t.error(
            "skip_ips",
            [str(n) for n in skip_ips],
            "no skip_ips with skip_last_hop = true (EFSkipIPs applies when EFSkipLastIP is false)",
        )
    if (users or ef.test_mode) and not ef.enabled:
        raise t.error("skip_ips", None, "skip_ips, or skip_last_hop = true, to use ef_* keys")
    if bypass and ef.enabled:
        raise t.error(
            "scl_bypass",
            True,
            "false with enhanced filtering (SCL -1 skips the filtering enhanced filtering feeds)",
        )
    return ef, bypass


def _directory_entries(
    top: _Table,
) -> tuple[tuple[MailboxEntry, ...], tuple[AliasEntry, ...], tuple[GroupEntry, ...]]:
    """[[mailboxes]], [[aliases]] and [[groups]]."""
    boxes: list[MailboxEntry] = []
    for t in top.tables("mailboxes"):
        name = t.text("name")
        if not name.isprintable():
            raise t.error("name", name, "a display name on one line")
        boxes.append(MailboxEntry(_address(t, t.key("address"), t.raw("address")), name))
        t.done()
    aliases: list[AliasEntry] = []
    for t in top.tables("aliases"):
        address = _address(t, t.key("address"), t.raw("address"))
        aliases.append(AliasEntry(address, _address(t, t.key("target"), t.raw("target"))))
        t.done()
    groups: list[GroupEntry] = []
    for t in top.tables("groups"):
        address = _address(t, t.key("address"), t.raw("address"))
        members = tuple(
            _address(t, f"{t.key('members')}[{i}]", m) for i, m in enumerate(t.items("members"))
        )
        if not members:
            raise t.error("members", [], "a non-empty list of addresses")
        groups.append(GroupEntry(address, members))
        t.done()
    raw_domains = top.data.get("accepted_domains")
    domains = {
        str(d.get("domain", "")).strip().lower().rstrip(".")
        for d in (raw_domains if isinstance(raw_domains, list) else [])
        if isinstance(d, dict)
    }
    seen: set[str] = set()
    for address in [e.address for e in boxes] + [e.address for e in aliases + groups]:
        if address in seen:
            raise ConfigError(top.file, "mailboxes", address, "each address declared once")
        if address.rpartition("@")[2] not in domains:
            raise ConfigError(
                top.file, "mailboxes", address, "an address in one of the [[accepted_domains]]"
            )
        seen.add(address)
    return tuple(boxes), tuple(aliases), tuple(groups)


def _rule_conditions(t: _Table) -> dict[str, Any]:
    header = t.opt_text("header")
    pattern = t.text("matches", "*")
    if header is not None and (not header or not all(33 <= ord(c) <= 126 for c in header)):
        raise t.error("header", header, "a header field name, e.g. X-Spam-Flag")
    if len(pattern) > 256 or any(c in pattern for c in "\r\n\0"):
        raise t.error("matches", pattern, "a glob of at most 256 characters, on one line")
    scl_text = t.opt_text("scl")
    op, value = None, 0
    if scl_text is not None:
        text = scl_text.replace(" ", "")
        op = next((o for o in _SCL_OPS if text.startswith(o)), None)
        digits = text[len(op) :] if op else ""
        if op is None or not digits.lstrip("-").isdigit() or not -1 <= int(digits) <= 9:
            raise t.error("scl", scl_text, 'a comparison such as ">= 5" (SCL -1 to 9)')
        value = int(digits)
    conditions = {
        "header": header,
        "header_pattern": pattern.lower(),
        "sender_ips": _ip_ranges(t, "sender_ip"),
        "sender_domains": tuple(_domain(t, "sender_domain", d) for d in t.texts("sender_domain")),
        "recipient_domains": tuple(
            _domain(t, "recipient_domain", d) for d in t.texts("recipient_domain")
        ),
        "connectors": tuple(t.texts("connector")),
        "scl_op": op,
        "scl_value": value,
    }
    t.done()
    return conditions


def _rule_actions(t: _Table) -> dict[str, Any]:
    raw_add = t.table("add_headers")
    add: list[tuple[str, str]] = []
    if raw_add is not None:
        for name in list(raw_add.data):
            value = raw_add.text(name)
            if not all(33 <= ord(c) <= 126 and c != ":" for c in name) or any(
                c in value for c in "\r\n\0"
            ):
                raise raw_add.error(name, value, "a header name and a one-line value")
            add.append((name, value))
        raw_add.done()
    scl = t._get("set_scl", int, "an SCL from -1 to 9")
    if scl is not None and not -1 <= scl <= 9:
        raise t.error("set_scl", scl, "an SCL from -1 to 9")
    reject = t.opt_text("reject")
    if reject is not None and (not reject.strip() or any(c in reject for c in "\r\n\0")):
        raise t.error("reject", reject, "a one-line reply text")
    redirect = t.raw("redirect")
    actions = {
        "set_scl": scl,
        "add_headers": tuple(add),
        "remove_headers": tuple(h.lower() for h in t.texts("remove_headers")),
        "reject": reject,
        "redirect": None if redirect is None else _address(t, t.key("redirect"), redirect),
        "quarantine": t.flag("quarantine", False),
        "stop": t.flag("stop", False),
    }
    t.done()
    if not any(actions.values()) and scl is None:
        raise t.error("set_scl", None, "at least one action (set_scl, add_headers, reject, ...)")
    return actions


def _mail_flow_rules(top: _Table) -> tuple[MailFlowRule, ...]:
    """[[mail_flow_rules]]: `conditions = {...}` and `actions = {...}`, lowest priority first."""
    rules: list[MailFlowRule] = []
    for i, t in enumerate(top.tables("mail_flow_rules")):
        name = t.text("name", f"rule{i}")
        priority = t.integer("priority", i, minimum=0)
        cond = t.table("conditions") or _Table(t.file, t.key("conditions"), {})
        act = t.table("actions")
        if act is None:
            raise t.error("actions", None, "an actions table, e.g. actions = { set_scl = 6 }")
        rules.append(MailFlowRule(name, priority, **_rule_conditions(cond), **_rule_actions(act)))
        t.done()
    return tuple(sorted(rules, key=lambda r: r.priority))


def _connector_tables(top: _Table) -> list[dict[str, Any]]:
    """The [[inbound_connectors]] tables as raw dicts (malformed entries left out)."""
    raw = top.data.get("inbound_connectors")
    return [c for c in raw if isinstance(c, dict)] if isinstance(raw, list) else []


_HOST_TABLES = ("host", "enhanced_filtering", "mailboxes", "aliases", "groups", "mail_flow_rules")


def _forget_host_keys(top: _Table) -> None:
    """After an error in the host's sections: count them (and the connectors'
    enhanced-filtering keys) as read, so one mistake is reported once, not again as
    unknown keys."""
    top.seen.update(_HOST_TABLES)
    raw = top.data.get("inbound_connectors")
    if isinstance(raw, list):
        stripped = [
            {k: v for k, v in item.items() if k not in _EF_KEYS} if isinstance(item, dict) else item
            for item in raw
        ]
        top.data = {**top.data, "inbound_connectors": stripped}


def _take_connector_ef(
    top: _Table, private: tuple[IPNetwork, ...]
) -> tuple[dict[str, EnhancedFiltering], set[str]]:
    """Read the enhanced-filtering keys of each [[inbound_connectors]] table (by connector
    name) and rebind `top.data` to a copy without them, for `_connector` to read next."""
    raw = top.data.get("inbound_connectors")
    ef: dict[str, EnhancedFiltering] = {}
    bypass: set[str] = set()
    if not isinstance(raw, list):
        return ef, bypass
    stripped: list[Any] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            stripped.append(item)
            continue
        sub = {k: v for k, v in item.items() if k in _EF_KEYS}
        name = str(item.get("name", f"connector{i}"))
        settings, scl_bypass = _enhanced_filtering(
            _Table(top.file, f"inbound_connectors[{i}]", sub), private
        )
        if settings.enabled:
            ef[name] = settings
        if scl_bypass:
            bypass.add(name)
        stripped.append({k: v for k, v in item.items() if k not in _EF_KEYS})
    top.data = {**top.data, "inbound_connectors": stripped}
    return ef, bypass


def _check_rule_connectors(top: _Table, rules: tuple[MailFlowRule, ...]) -> None:
    """A rule naming a connector that does not exist would silently never match."""
    names = {str(c.get("name", f"connector{i}")) for i, c in enumerate(_connector_tables(top))}
    for rule in rules:
        for name in rule.connectors:
            if name not in names:
                expected = f"an inbound connector name ({', '.join(sorted(names)) or 'none'})"
                raise ConfigError(top.file, "mail_flow_rules", name, expected)


def _refuse_host_recipient_lists(file: str, accepted: list[AcceptedDomain]) -> None:
    """A host's recipients are its directory's: a `recipients` list beside it would be a
    second, silently ignored truth."""
    for i, d in enumerate(accepted):
        if d.recipients or (d.type == "authoritative" and d.any_recipient):
            raise ConfigError(
                file,
                f"accepted_domains[{i}].recipients",
                sorted(d.recipients) or "any",
                "no recipients key on a host: declare [[mailboxes]], [[aliases]] and"
                " [[groups]] (or `mxflow host mailbox add`)",
            )


def _host_config(top: _Table) -> HostConfig:
    """Every host key: [host], [enhanced_filtering], the connectors' enhanced-filtering keys,
    [[mailboxes]], [[aliases]], [[groups]] and [[mail_flow_rules]].

    The enhanced-filtering keys of [[inbound_connectors]] are read here, by connector name,
    and removed from the tables `_connector` reads next (on a copy: `top.data` is rebound,
    the caller's dict is untouched), so the connector parser itself needs no change.
    """
    ht = top.table("host") or _Table(top.file, "host", {})
    lock_down = ht.flag("lock_down", False)
    reject_direct_send = ht.flag("reject_direct_send", True)
    ht.done()
    et = top.table("enhanced_filtering") or _Table(top.file, "enhanced_filtering", {})
    private = DEFAULT_PRIVATE_RANGES
    if "private_ranges" in et.data:
        private = _ip_ranges(et, "private_ranges")
    et.done()
    ef, bypass = _take_connector_ef(top, private)
    boxes, aliases, groups = _directory_entries(top)
    rules = _mail_flow_rules(top)
    _check_rule_connectors(top, rules)
    warnings = [
        f"inbound connector {n!r}: scl_bypass = true sets SCL -1 for everything it sends;"
        " shared gateway IPs let anyone through unfiltered (prefer enhanced filtering)"
        for n in sorted(bypass)
    ]
    if lock_down and not top.data.get("inbound_connectors"):
        warnings.append(
            "host.lock_down = true with no [[inbound_connectors]]: every message for the"
            " accepted domains is refused (550 5.7.51); add the gateway's connector"
        )
    return HostConfig(
        lock_down=lock_down,
        reject_direct_send=reject_direct_send,
        private_ranges=private,
        enhanced_filtering=ef,
        scl_bypass=frozenset(bypass),
        mailboxes=boxes,
        aliases=aliases,
        groups=groups,
        mail_flow_rules=rules,
        warnings=tuple(warnings),
    )


# ------------------------------------------------- [store], [metrics], [web] (issue 14)


def _listen(t: _Table, name: str, default: tuple[str, int] | None) -> tuple[str, int] | None:
    text = t.opt_text(name)
    if text is None:
        return default
    where = _endpoint(t, t.key(name), text, 0)
    _ip(t, name, where.host)
    if where.port == 0:
        raise t.error(name, text, 'IP:PORT, e.g. "127.0.0.1:9125"')
    return (where.host, where.port)


def _store_section(top: _Table, data_dir: Path, trace: Path) -> tuple[str | None, Path]:
    """`[store] url`: where the trace goes when nodes share one store.

    A SQLite path (`sqlite:///abs/path`, `sqlite:rel/path` or a bare path, relative to the
    data dir like every path here); other schemes are refused by name, so a PostgreSQL URL
    (the clustering issue) is an error today rather than a file called `postgresql:`."""
    t = top.table("store")
    if t is None:
        return None, trace
    url = t.text("url", required=True)
    t.done()
    scheme, sep, rest = url.partition(":")
    if sep and len(scheme) > 1 and scheme != "sqlite":
        raise t.error("url", url, "a SQLite path or sqlite:///PATH (no other database yet)")
    path_text = rest.removeprefix("//") if sep and scheme == "sqlite" else url
    path = _path(data_dir, path_text)
    if path is None:
        raise t.error("url", url, "a SQLite path or sqlite:///PATH")
    return url, path


def _metrics_section(top: _Table) -> tuple[str, int] | None:
    """`[metrics] listen = "IP:PORT"`: serve /metrics and /healthz there (off if unset)."""
    t = top.table("metrics")
    if t is None:
        return None
    listen = _listen(t, "listen", None)
    t.done()
    return listen


def _web_section(top: _Table, data_dir: Path) -> WebConfig:
    """`[web]`: the admin UI's address, account store and session lifetimes."""
    t = top.table("web") or _Table(top.file, "web", {})
    listen = _listen(t, "listen", WebConfig.listen)
    assert listen is not None
    web = WebConfig(
        listen=listen,
        users_db=_path(data_dir, t.text("users_db", "web.sqlite")),
        session_lifetime=t.duration("session_lifetime", WebConfig.session_lifetime),
        idle_timeout=t.duration("idle_timeout", WebConfig.idle_timeout),
        secure_cookies=t.flag("secure_cookies", True),
        public_url=t.text("public_url", f"http://{listen[0]}:{listen[1]}").rstrip("/"),
        digest_interval=t.duration("digest_interval", 0.0),
    )
    t.done()
    return web


@dataclass(frozen=True)
class ArchiveConfig:
    """`[archive]`: where the archiver journals every message, and for how long."""

    dir: Path
    retention: float | None = None  # seconds; None keeps everything


def _archive_config(top: _Table, data_dir: Path) -> ArchiveConfig | None:
    """The `[archive]` table (dir relative to the data directory; retention a duration)."""
    at = top.table("archive")
    if at is None:
        return None
    path = _path(data_dir, at.text("dir", "archive"))
    assert path is not None
    retention = at.duration("retention", 0.0) if "retention" in at.data else None
    at.done()
    return ArchiveConfig(path, retention or None)


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
        max_connections=lt.integer("max_connections", Limits.max_connections, minimum=1),
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

    host_config = HostConfig()
    try:  # before the connectors: it takes their enhanced-filtering keys
        host_config = _host_config(top)
    except ConfigError as err:
        errors.add(err)
        _forget_host_keys(top)
    listeners, accepted, connectors, routes = _tables(top, dd)
    for i, listener in enumerate(listeners):
        if listener.submission and node.role != "host":  # only a host has users who log in
            errors.add(ConfigError(file, f"listeners[{i}].submission", True, "role = 'host'"))
    if node.role == "host":
        with errors.section():
            _refuse_host_recipient_lists(file, accepted)
    archive = None
    with errors.section():
        archive = _archive_config(top, dd)
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
        filter=policies.get("filter"),
        auth=policies.get("auth"),
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
