"""Zones the embedded DNS server answers from: RFC 1035 zone files or records built in code.

A `Zone` is the authoritative data for one origin: record sets by owner name and type,
plus the names that deliberately never answer (`timeouts`, so tests can exercise a
resolver that times out). dnspython parses the zone-file syntax; mxflow keeps the data in
its own small structure so records can also be added one by one (the SPF test suites and
`mxflow dns plan` build zones that way) and so a zone needs no SOA to be served: one is
synthesised when the file has none.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.zone

from mxflow.errors import MxflowError

DEFAULT_TTL = 3600

RecordValue = str | Sequence[str | bytes]
"""A record's data: presentation text (`"10 mx.example.com."`), or for TXT the strings."""


class ZoneError(MxflowError):
    """A zone file or record could not be read: names the file, the line and the problem."""


def _name(text: str | dns.name.Name, origin: dns.name.Name | None = None) -> dns.name.Name:
    if isinstance(text, dns.name.Name):
        return text
    try:
        if text in {"@", ""} and origin is not None:
            return origin
        return dns.name.from_text(text, origin=origin)
    except dns.exception.DNSException as exc:
        raise ZoneError(f"bad domain name {text!r}: {exc}") from exc


@dataclass
class Zone:
    """The records of one zone, keyed by owner name (case-insensitive) and type."""

    origin: dns.name.Name
    records: dict[dns.name.Name, dict[dns.rdatatype.RdataType, dns.rdataset.Rdataset]] = field(
        default_factory=dict
    )
    timeouts: set[dns.name.Name] = field(default_factory=set)
    """Names whose queries are never answered (for types the name has no records of)."""
    servfails: set[dns.name.Name] = field(default_factory=set)
    """Names whose queries are answered SERVFAIL (a broken authoritative server)."""
    _ancestors: tuple[int, set[dns.name.Name]] | None = field(
        default=None, repr=False, compare=False
    )

    @classmethod
    def from_records(
        cls,
        origin: str | dns.name.Name,
        records: Iterable[tuple[str, str, RecordValue]],
        *,
        ttl: int = DEFAULT_TTL,
    ) -> Zone:
        """A zone from `(name, rdtype, value)` triples; relative names are under `origin`.

        `rdtype` `"TIMEOUT"` (value ignored) makes the name never answer; `"SERVFAIL"` makes
        it answer SERVFAIL. A TXT value may be a
        list of strings (str or raw bytes), kept as separate character-strings.
        """
        zone = cls(_name(origin if str(origin).endswith(".") else f"{origin}."))
        for name, rdtype, value in records:
            zone.add(name, rdtype, value, ttl=ttl)
        return zone

    def add(
        self, name: str | dns.name.Name, rdtype: str, value: RecordValue, *, ttl: int = 0
    ) -> None:
        """Add one record (see `from_records` for the forms of `value`)."""
        owner = _name(name, self.origin)
        if not owner.is_subdomain(self.origin):
            raise ZoneError(f"{owner} is not inside the zone {self.origin}")
        if rdtype.upper() == "TIMEOUT":
            self.timeouts.add(owner)
            return
        if rdtype.upper() == "SERVFAIL":
            self.servfails.add(owner)
            return
        rdata = make_rdata(rdtype, value, self.origin)
        self.add_rdata(owner, rdata, ttl or DEFAULT_TTL)

    def add_rdata(self, owner: dns.name.Name, rdata: dns.rdata.Rdata, ttl: int) -> None:
        node = self.records.setdefault(owner, {})
        rdataset = node.get(rdata.rdtype)
        if rdataset is None:
            rdataset = dns.rdataset.Rdataset(dns.rdataclass.IN, rdata.rdtype)
            node[rdata.rdtype] = rdataset
        rdataset.add(rdata, ttl)

    def get(
        self, owner: dns.name.Name, rdtype: dns.rdatatype.RdataType
    ) -> dns.rdataset.Rdataset | None:
        """The record set of `rdtype` at `owner`, if any."""
        return self.records.get(owner, {}).get(rdtype)

    def has_name(self, owner: dns.name.Name) -> bool:
        """True when `owner` exists: it has records, or names below it do (empty non-terminal)."""
        if owner == self.origin or owner in self.records:
            return True
        if owner in self.timeouts or owner in self.servfails:
            return True
        if self._ancestors is None or self._ancestors[0] != len(self.records):
            names: set[dns.name.Name] = set()
            for owner_name in self.records:
                name = owner_name
                while len(name) > len(self.origin) and name not in names:
                    names.add(name)
                    name = name.parent()
            self._ancestors = (len(self.records), names)
        return owner in self._ancestors[1]

    def soa(self) -> dns.rdataset.Rdataset:
        """The zone's SOA, synthesised when the data has none (negative answers need one)."""
        existing = self.get(self.origin, dns.rdatatype.SOA)
        if existing is not None:
            return existing
        mname = dns.name.Name(("ns", *self.origin.labels))
        rname = dns.name.Name(("hostmaster", *self.origin.labels))
        rdata = dns.rdata.from_text(
            dns.rdataclass.IN, dns.rdatatype.SOA, f"{mname} {rname} 1 3600 600 86400 300"
        )
        rdataset = dns.rdataset.Rdataset(dns.rdataclass.IN, dns.rdatatype.SOA)
        rdataset.add(rdata, 300)
        return rdataset

    def __len__(self) -> int:
        return sum(len(rds) for node in self.records.values() for rds in node.values())


def make_rdata(rdtype: str, value: RecordValue, origin: dns.name.Name) -> dns.rdata.Rdata:
    """One rdata of `rdtype` from presentation text, or from a list of TXT strings."""
    try:
        rtype = dns.rdatatype.from_text(rdtype.upper())
    except dns.exception.DNSException as exc:
        raise ZoneError(f"unknown record type {rdtype!r}") from exc
    if not isinstance(value, str):
        if rtype not in (dns.rdatatype.TXT, dns.rdatatype.SPF):
            raise ZoneError(f"a list of strings is only valid for TXT, not {rdtype}")
        strings = [s if isinstance(s, bytes) else s.encode() for s in value] or [b""]
        return dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, rtype, strings)
    try:
        return dns.rdata.from_text(dns.rdataclass.IN, rtype, value, origin=origin, relativize=False)
    except (dns.exception.DNSException, ValueError) as exc:
        raise ZoneError(f"bad {rdtype} record data {value!r}: {exc}") from exc


def txt_rdata(*strings: str | bytes) -> dns.rdata.Rdata:
    """A TXT rdata holding `strings` as separate character-strings (each at most 255 bytes)."""
    return make_rdata("TXT", list(strings), dns.name.root)


def parse_zone(text: str, origin: str | None = None, *, filename: str = "<zone>") -> Zone:
    """Parse RFC 1035 zone-file text; `origin` is needed unless the text sets `$ORIGIN`.

    Records without a TTL and no `$TTL` get `DEFAULT_TTL` (dnspython would refuse them).
    """
    shift = 0
    if not re.search(r"^\$TTL\b", text, re.MULTILINE | re.IGNORECASE):
        text = f"$TTL {DEFAULT_TTL}\n{text}"
        shift = 1
    try:
        parsed = dns.zone.from_text(
            text,
            origin=origin,
            relativize=False,
            filename=filename,
            check_origin=False,
        )
    except dns.zone.UnknownOrigin as exc:
        raise ZoneError(f"{filename}: no origin: add a `$ORIGIN example.com.` line") from exc
    except dns.exception.SyntaxError as exc:
        message = str(exc)
        located = re.match(rf"{re.escape(filename)}:(\d+): (.*)", message, re.DOTALL)
        if located:
            line = _error_line(text, origin, int(located.group(1)))
            message = f"{filename}:{line - shift}: {located.group(2)}"
        else:
            message = f"{filename}: {message}"
        raise ZoneError(message) from exc
    except (dns.exception.DNSException, ValueError) as exc:
        raise ZoneError(f"{filename}: {exc}") from exc
    assert parsed.origin is not None
    zone = Zone(parsed.origin)
    for owner, node in parsed.nodes.items():
        absolute = owner.derelativize(parsed.origin)
        for rdataset in node.rdatasets:
            for rdata in rdataset:
                zone.add_rdata(absolute, rdata, rdataset.ttl)
    return zone


def _error_line(text: str, origin: str | None, reported: int) -> int:
    """The line a dnspython syntax error is on.

    dnspython reports the line its tokenizer has reached, which is the next line when the
    error is found at the end of a record; if the text up to the line before the reported
    one parses, the error is on the reported line, otherwise on the one before.
    """
    if reported <= 1:
        return reported
    head = "\n".join(text.splitlines()[: reported - 1]) + "\n"
    try:
        dns.zone.from_text(head, origin=origin, relativize=False, check_origin=False)
    except (dns.exception.DNSException, ValueError):
        return reported - 1
    return reported


def load_zone_file(path: str | Path, origin: str | None = None) -> Zone:
    """Read and parse a zone file; errors name the file (and line)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ZoneError(f"{path}: cannot read zone file: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ZoneError(f"{path}: not UTF-8 text: {exc.reason}") from exc
    return parse_zone(text, origin, filename=str(path))
