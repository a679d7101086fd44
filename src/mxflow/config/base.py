"""Reading a node's TOML: typed getters over one table, and every error collected.

Every error is a `ConfigError` naming the file, the key path (`listeners[0].port`), what was
found and what is expected; an unknown key is an error, never ignored, because a misspelt
security setting (say `relay = true` under the wrong table) must not silently do nothing.
A getter that finds a wrong value records the error and returns the default, so one pass
reports every wrong key. Values that would make a node misbehave are refused, not
clamped: zero, negative, `nan` and `inf` durations; malformed domain names (one syntax
check, `mxflow.dns.names`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
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


@dataclass(frozen=True)
class SmartHost:
    host: str
    port: int = 25


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
