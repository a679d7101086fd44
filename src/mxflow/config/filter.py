"""`[filter]`: which checks run, their weights, thresholds and actions.

`parse_filter_section` turns the `[filter]` table of a node's TOML into a typed
`FilterPolicy`; every wrong value or unknown key is a `ConfigError` naming the file, the
key (`filter.<key>`), what was found and what is expected, so an administrator can fix it
without reading code. `FilterPolicy()` is the default policy `mxflow filter check` uses.
"""

from __future__ import annotations

import ipaddress
import math
import re
import urllib.parse
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Literal

from mxflow.errors import ConfigError
from mxflow.mail import Action

CHECK_NAMES = (
    "rate",
    "dnsbl",
    "fcrdns",
    "helo",
    "lists",
    "sender_auth",
    "headers",
    "uribl",
    "bayes",
    "content",
    "attachments",
    "clamav",
    "rspamd",
    "spamd",
)
DNS_CHECKS = ("dnsbl", "fcrdns", "uribl")
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class ClamdAddress:
    """`unix:/path`, `/path` or `HOST:PORT`."""

    text: str

    @property
    def unix_path(self) -> str | None:
        if self.text.startswith("unix:"):
            return self.text[5:]
        if self.text.startswith("/"):
            return self.text
        return None

    def host_port(self) -> tuple[str, int]:
        host, _, port = self.text.rpartition(":")
        return host.strip("[]"), int(port)

    def validate(self) -> ClamdAddress:
        """Self, or ValueError naming the expected forms (for config and command line)."""
        if self.unix_path is not None:
            if len(self.unix_path) > 1:
                return self
        else:
            try:
                host, port = self.host_port()
            except ValueError:
                host, port = "", 0
            if host and 0 < port < 65536:
                return self
        raise ValueError(f"{self.text!r}: expected unix:/path/clamd.sock, /path or HOST:PORT")


def rspamd_endpoint(url: str) -> tuple[ClamdAddress, str, str]:
    """(where to connect, the Host header, the path prefix) of an rspamd scanner's URL:
    `http://HOST[:PORT][/PREFIX]` or `unix:/path` (rspamd's worker on a UNIX socket);
    ValueError naming the expected forms otherwise."""
    expected = f"{url!r}: expected http://HOST:PORT (e.g. http://127.0.0.1:11333) or unix:/path"
    if url.startswith("unix:"):
        if len(url) > 6 and url[5] == "/":
            return ClamdAddress(url), "localhost", ""
        raise ValueError(expected)
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port or 80
    except ValueError:
        raise ValueError(expected) from None
    host = parts.hostname or ""
    if parts.scheme != "http" or not host or parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError(expected)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return ClamdAddress(address), parts.netloc, parts.path.rstrip("/")


OnFailure = Literal["continue", "tempfail"]


@dataclass(frozen=True)
class ScannerSettings:
    """`[filter.rspamd]` or `[filter.spamd]`: an external scanner the site already runs.

    `address` is rspamd's `url` or spamd's `address`; `weight` is how much of the scanner's
    score counts in mxflow's (checks/scanner.py says how it is mapped); `max_size` larger
    messages are not sent (symbol `*_SKIPPED`); `on_failure` says what a scanner that is down
    or answers nonsense does to the message: "continue" (the rest of the filter decides) or
    "tempfail" (4xx, try later).
    """

    address: str
    timeout: float
    max_size: int
    weight: float = 1.0
    on_failure: OnFailure = "continue"


RSPAMD_DEFAULTS = ScannerSettings("http://127.0.0.1:11333", timeout=5.0, max_size=20 * 1024**2)
# spamc's own default limit is 500 KB: SpamAssassin's time grows with the message
SPAMD_DEFAULTS = ScannerSettings("127.0.0.1:783", timeout=10.0, max_size=512 * 1024)
MAX_SCANNER_TIMEOUT = 120.0  # the sending MTA waits for the reply to the final dot
MAX_WEIGHT = 10.0


@dataclass(frozen=True)
class FilterPolicy:
    """Everything the filter pipeline needs to know; defaults are the default policy.

    Scores add up to the message score; `junk_score`, `quarantine_score` and
    `reject_score` split it into the SCL bands 5-6, 7-8 and 9 and pick the action.
    """

    checks: tuple[str, ...] = CHECK_NAMES
    dnsbl_zones: dict[str, float] = field(default_factory=dict)  # zone -> score when listed
    uribl_zones: dict[str, float] = field(default_factory=dict)
    # zone -> {return code -> score}, for dnsbl and uribl zones whose codes mean different
    # things (zen.spamhaus.org: 127.0.0.2 SBL, .4 XBL, .10 PBL); other codes score the zone's
    return_codes: dict[str, dict[str, float]] = field(default_factory=dict)
    junk_score: float = 5.0
    quarantine_score: float = 10.0
    reject_score: float = 15.0
    spam_action: Action = Action.JUNK  # SCL 5-6
    high_spam_action: Action = Action.QUARANTINE  # SCL 7-8
    reject_action: Action = Action.REJECT  # SCL 9
    malware_action: Action = Action.QUARANTINE  # never DELIVER or JUNK
    # what the node could not scan (too deep, too many parts, encrypted, too large for the
    # scanner): never DELIVER or JUNK, as an unscanned attachment may be anything
    unscannable_action: Action = Action.QUARANTINE
    allow_senders: tuple[str, ...] = ()  # addresses or domains (`example.org`, `@example.org`)
    block_senders: tuple[str, ...] = ()
    allow_ips: tuple[IpNetwork, ...] = ()
    block_ips: tuple[IpNetwork, ...] = ()
    scores: dict[str, float] = field(default_factory=dict)  # symbol -> score override
    check_timeout: float = 3.0  # seconds one check may take before it is given up
    max_connections_per_ip: int = 20  # concurrent sessions
    max_connections_per_minute: int = 120  # new sessions per client IP per minute
    bayes_model: Path | None = None  # writable model; None = the shipped one
    clamd: str | None = None  # "unix:/path", "/path" or "host:port"
    max_scan_size: int = 25 * 1024 * 1024
    archive_max_depth: int = 3
    archive_max_files: int = 1000
    archive_max_total: int = 100 * 1024 * 1024
    archive_max_ratio: float = 100.0
    quarantine_dir: Path | None = None
    # senders blocked at run time (the web UI's "block sender"): one address or domain a
    # line; read again when it changes; default DATA_DIR/blocked_senders.txt
    block_file: Path | None = None
    retention_spam_days: int = 15
    retention_malware_days: int = 30
    rspamd: ScannerSettings | None = None  # [filter.rspamd]: off when absent
    spamd: ScannerSettings | None = None  # [filter.spamd]: off when absent

    def enabled(self, check: str) -> bool:
        return check in self.checks

    def score(self, symbol: str, default: float) -> float:
        """A symbol's score: the administrator's override, else the check's default."""
        return self.scores.get(symbol, default)


_ACTIONS = {a.value: a for a in Action}


def parse_filter_section(table: dict[str, object], file: str) -> FilterPolicy:
    """The `[filter]` table of a node's config as a `FilterPolicy`; raises ConfigError."""
    known = {f.name for f in fields(FilterPolicy)}
    values: dict[str, object] = {}
    for key, value in table.items():
        where = f"filter.{key}"
        if key not in known:
            raise ConfigError(file, where, key, f"one of: {', '.join(sorted(known))}")
        values[key] = _convert(key, value, file, where)
    policy = FilterPolicy(**values)  # type: ignore[arg-type]
    if not policy.junk_score <= policy.quarantine_score <= policy.reject_score:
        raise ConfigError(
            file,
            "filter.junk_score",
            (policy.junk_score, policy.quarantine_score, policy.reject_score),
            "junk_score <= quarantine_score <= reject_score",
        )
    return policy


def _convert(key: str, value: object, file: str, where: str) -> object:
    if key == "checks":
        names = _strings(value, file, where, "a list of check names")
        for name in names:
            if name not in CHECK_NAMES:
                raise ConfigError(file, where, name, f"check names from {', '.join(CHECK_NAMES)}")
        return tuple(names)
    if key == "return_codes":
        if not isinstance(value, dict):
            raise ConfigError(file, where, value, 'a table of zone = { "127.0.0.2" = score }')
        return {
            str(zone).strip(".").lower(): _return_codes(codes, file, f"{where}.{zone}")
            for zone, codes in value.items()
        }
    if key in ("dnsbl_zones", "uribl_zones", "scores"):
        if not isinstance(value, dict):
            raise ConfigError(file, where, value, "a table of name = score")
        out: dict[str, float] = {}
        for name, score in value.items():
            if not isinstance(name, str) or not _is_number(score):
                raise ConfigError(file, f"{where}.{name}", score, "a number (score)")
            out[name.strip(".").lower() if key != "scores" else name] = float(score)
        return out
    if key in ("junk_score", "quarantine_score", "reject_score", "check_timeout"):
        if not _is_number(value) or (key == "check_timeout" and float(value) <= 0):  # type: ignore[arg-type]
            raise ConfigError(file, where, value, "a number" + (" > 0" if "timeout" in key else ""))
        number = float(value)  # type: ignore[arg-type]
        if math.isnan(number):
            raise ConfigError(file, where, value, "a number")
        return number
    if key == "archive_max_ratio":
        if not _is_number(value) or float(value) < 1:  # type: ignore[arg-type]
            raise ConfigError(file, where, value, "a number >= 1")
        return float(value)  # type: ignore[arg-type]
    if key in (
        "spam_action",
        "high_spam_action",
        "reject_action",
        "malware_action",
        "unscannable_action",
    ):
        allowed = ["junk", "quarantine", "reject", "deliver"]
        if key == "malware_action":
            allowed = ["quarantine", "reject"]
        if key == "unscannable_action":
            allowed = ["quarantine", "tempfail", "reject"]
        if not isinstance(value, str) or value not in allowed:
            raise ConfigError(file, where, value, f"one of {', '.join(allowed)}")
        return _ACTIONS[value]
    if key in ("allow_senders", "block_senders"):
        return tuple(s.strip().lower() for s in _strings(value, file, where, "a list of addresses"))
    if key in ("allow_ips", "block_ips"):
        networks: list[IpNetwork] = []
        for text in _strings(value, file, where, "a list of IPs or CIDR ranges"):
            try:
                networks.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                raise ConfigError(file, where, text, "an IP address or CIDR range") from None
        return tuple(networks)
    if key in ("bayes_model", "quarantine_dir", "block_file"):
        if not isinstance(value, str) or not value:
            raise ConfigError(file, where, value, "a path")
        return Path(value)
    if key in ("rspamd", "spamd"):
        return _scanner(key, value, file, where)
    if key == "clamd":
        expected = '"unix:/path/clamd.sock" or "HOST:PORT"'
        if not isinstance(value, str):
            raise ConfigError(file, where, value, expected)
        try:
            return ClamdAddress(value).validate().text
        except ValueError:
            raise ConfigError(file, where, value, expected) from None
    # the remaining keys are positive integers
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(file, where, value, "a positive integer")
    return value


_SIZE = re.compile(r"^\s*(\d+)\s*([kKmM]?)[bB]?\s*$")


def _scanner(kind: str, value: object, file: str, where: str) -> ScannerSettings:
    """`[filter.rspamd]` / `[filter.spamd]`: the table's presence turns the scanner on; each
    key left out keeps its default (RSPAMD_DEFAULTS, SPAMD_DEFAULTS)."""
    if not isinstance(value, dict):
        raise ConfigError(file, where, value, f"a table ([{where}])")
    settings = RSPAMD_DEFAULTS if kind == "rspamd" else SPAMD_DEFAULTS
    address_key = "url" if kind == "rspamd" else "address"
    known = (address_key, "timeout", "weight", "max_size", "on_failure")
    for key, item in value.items():
        at = f"{where}.{key}"
        if key == address_key:
            settings = replace(settings, address=_scanner_address(kind, item, file, at))
        elif key == "timeout":
            seconds = _bounded(item, file, at, MAX_SCANNER_TIMEOUT, unit="seconds: ")
            settings = replace(settings, timeout=seconds)
        elif key == "weight":
            settings = replace(settings, weight=_bounded(item, file, at, MAX_WEIGHT, zero=True))
        elif key == "max_size":
            settings = replace(settings, max_size=_size(item, file, at))
        elif key == "on_failure":
            if item not in ("continue", "tempfail"):
                raise ConfigError(file, at, item, '"continue" (default) or "tempfail"')
            settings = replace(settings, on_failure=item)
        else:
            raise ConfigError(file, at, key, f"one of: {', '.join(known)}")
    return settings


def _scanner_address(kind: str, value: object, file: str, where: str) -> str:
    """rspamd's `url` or spamd's `address`, checked now so a typo fails `config check`
    rather than every message at run time."""
    if kind == "rspamd":
        expected = '"http://HOST:PORT" (rspamd\'s scanner, e.g. "http://127.0.0.1:11333")'
        expected += ' or "unix:/path"'
        try:
            if not isinstance(value, str):
                raise ValueError(value)
            rspamd_endpoint(value)
        except ValueError:
            raise ConfigError(file, where, value, expected) from None
        return value
    expected = '"HOST:PORT" (spamd, e.g. "127.0.0.1:783") or "unix:/path/spamd.sock"'
    try:
        if not isinstance(value, str):
            raise ValueError(value)
        return ClamdAddress(value).validate().text
    except ValueError:
        raise ConfigError(file, where, value, expected) from None


def _bounded(
    value: object, file: str, where: str, most: float, *, zero: bool = False, unit: str = ""
) -> float:
    """A finite number in (0, most], or [0, most] with `zero`."""
    low = ">= 0" if zero else "> 0"
    expected = f"{unit}a number {low} and <= {most:g}"
    if not _is_number(value):
        raise ConfigError(file, where, value, expected)
    number = float(value)  # type: ignore[arg-type]
    if not math.isfinite(number) or number > most or number < 0 or (number == 0 and not zero):
        raise ConfigError(file, where, value, expected)
    return number


def _size(value: object, file: str, where: str) -> int:
    """Bytes: a positive integer, or a string like "512k", "20M"."""
    expected = 'a positive size in bytes (integer, or "512k", "20M")'
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    m = _SIZE.match(value) if isinstance(value, str) else None
    if m is None or int(m.group(1)) == 0:
        raise ConfigError(file, where, value, expected)
    return int(m.group(1)) * {"": 1, "k": 1024, "m": 1024**2}[m.group(2).lower()]


def _return_codes(value: object, file: str, where: str) -> dict[str, float]:
    if not isinstance(value, dict):
        raise ConfigError(file, where, value, 'a table of "127.0.0.N" = score')
    out: dict[str, float] = {}
    for code, score in value.items():
        try:
            address = ipaddress.IPv4Address(code)
        except ValueError:
            raise ConfigError(file, f"{where}.{code}", code, "an address in 127.0.0.0/8") from None
        if not address.is_loopback or not _is_number(score):
            raise ConfigError(file, f"{where}.{code}", score, "127.0.0.N = a number (score)")
        out[str(address)] = float(score)
    return out


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _strings(value: object, file: str, where: str, expected: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(file, where, value, expected)
    return [str(v) for v in value]
