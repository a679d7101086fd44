"""SPF (RFC 7208): may this IP send mail as this domain?

`check_host()` is RFC 7208 §4's function, run on the injected resolver (never the system
one). The record is parsed completely before anything is evaluated, so a syntax error
anywhere is a permerror (§4.6); terms are separated by single spaces only, which is why
the reference's `v=spf1 ipv4: 10.10.10.1 ...` fails. Limits (§4.6.4): 10 terms that cause
DNS lookups (include, a, mx, ptr, exists, redirect) per evaluation, including nested
includes; 2 void lookups (NXDOMAIN or empty answer); at most 10 MX names per `mx`
(more is a permerror) and the first 10 PTR names per `ptr`/`%{p}`. An IPv4-mapped IPv6
client (`::ffff:a.b.c.d`) is evaluated as IPv4.

Where RFC 7208 leaves a choice, this module takes: a macro expansion that yields an
invalid domain name (empty or over-long label) makes the mechanism not match; an
explanation that cannot be used falls back to `DEFAULT_EXPLANATION`.
"""

from __future__ import annotations

import ipaddress
import re
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
import dns.reversename

from mxflow.dns.resolver import describe_dns_error
from mxflow.errors import MxflowError

RESULTS = ("pass", "fail", "softfail", "neutral", "none", "permerror", "temperror")
QUALIFIERS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}
MECHANISMS = ("all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists")
LOOKUP_LIMIT = 10
VOID_LOOKUP_LIMIT = 2
MX_NAME_LIMIT = 10
PTR_NAME_LIMIT = 10
# %{c}, not %{i}: the same for IPv4, but an IPv6 client reads as 2001:db8::1 rather than
# as the 32 dot-separated nibbles %{i} gives (RFC 7208 §7.3).
DEFAULT_EXPLANATION = "%{c} is not one of %{d}'s designated mail servers"

_IP = ipaddress.IPv4Address | ipaddress.IPv6Address
_MODIFIER_RE = re.compile(r"^([A-Za-z][A-Za-z0-9\-_.]*)=(.*)$", re.DOTALL)
_MECHANISM_RE = re.compile(r"^([+\-~?]?)([A-Za-z][A-Za-z0-9\-_.]*)(.*)$", re.DOTALL)
_MACRO_RE = re.compile(r"%(?:\{([A-Za-z])(\d*)(r?)([.\-+,/_=]*)\}|(.))", re.DOTALL | re.IGNORECASE)
_IP4_CIDR = r"(?:/(0|[1-9][0-9]?))?"
_IP6_CIDR = r"(?://(0|[1-9][0-9]{0,2}))?"
_DUAL_CIDR_RE = re.compile(rf"^(.*?){_IP4_CIDR}{_IP6_CIDR}$", re.DOTALL)
_TOPLABEL_RE = re.compile(
    r"^(?:[A-Za-z0-9]*[A-Za-z][A-Za-z0-9]*|[A-Za-z0-9]+-[A-Za-z0-9\-]*[A-Za-z0-9])$"
)


class SpfError(MxflowError):
    """Ends an evaluation with a permerror or temperror; `result` says which."""

    def __init__(self, result: str, reason: str, term: str = "") -> None:
        super().__init__(reason)
        self.result = result
        self.reason = reason
        self.term = term


class PermError(SpfError):
    def __init__(self, reason: str, term: str = "") -> None:
        super().__init__("permerror", reason, term)


class TempError(SpfError):
    def __init__(self, reason: str, term: str = "") -> None:
        super().__init__("temperror", reason, term)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class SpfResult:
    """The outcome of `check_host()`: the result word, the term that decided it and why.

    `explanation` is set for `fail` (from the record's `exp=`, or the default); `reason` is a
    human-readable sentence for logs and `Received-SPF:` comments.
    """

    result: str
    domain: str
    ip: str
    sender: str
    helo: str = ""
    mechanism: str = ""
    explanation: str = ""
    reason: str = ""
    lookups: int = 0
    void_lookups: int = 0
    receiver: str = "unknown"

    def __str__(self) -> str:
        return f"{self.result} ({self.reason})" if self.reason else self.result


def received_spf_header(result: SpfResult, *, identity: str = "mailfrom") -> str:
    """The value of a `Received-SPF:` header (RFC 7208 §9.1) for `result`."""
    comment = f"{result.receiver}: {_result_comment(result)}"
    pairs = [
        f"client-ip={result.ip}",
        f"envelope-from={_quote_value(result.sender)}",
        f"helo={_quote_value(result.helo or 'unknown')}",
        f"receiver={_quote_value(result.receiver)}",
        f"identity={identity}",
    ]
    if result.mechanism:
        pairs.append(f"mechanism={_quote_value(result.mechanism)}")
    if result.result in {"permerror", "temperror"} and result.reason:
        pairs.append(f"problem={_quote_value(result.reason)}")
    return f"{result.result} ({comment}) " + "; ".join(pairs) + ";"


def auth_results_part(result: SpfResult, *, identity: str = "mailfrom") -> str:
    """The `spf=` part of `Authentication-Results:` (RFC 8601): `spf=pass smtp.mailfrom=a.b`."""
    if identity == "helo":
        prop = f"smtp.helo={result.helo or result.domain}"
    else:
        prop = f"smtp.mailfrom={_quote_value(result.sender) if result.sender else result.domain}"
    reason = _result_comment(result).replace('"', "'")
    return f'spf={result.result} reason="{reason}" {prop}'


def _result_comment(result: SpfResult) -> str:
    if result.result == "pass":
        return f"domain of {result.sender} designates {result.ip} as permitted sender"
    if result.result == "none":
        return f"domain of {result.sender} does not designate permitted sender hosts"
    if result.result in {"fail", "softfail"}:
        return f"domain of {result.sender} does not designate {result.ip} as permitted sender"
    if result.result == "neutral":
        return f"{result.ip} is neither permitted nor denied by domain of {result.sender}"
    return result.reason or result.result


def _quote_value(value: str) -> str:
    if value and re.fullmatch(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.@]+", value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Mechanism:
    """One directive: qualifier, mechanism name and its argument(s), as written."""

    text: str
    qualifier: str
    name: str
    domain_spec: str = ""
    ip4_cidr: int = 32
    ip6_cidr: int = 128
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    index: int = 0

    @property
    def result(self) -> str:
        return QUALIFIERS[self.qualifier or "+"]

    @property
    def counts_lookup(self) -> bool:
        return self.name in {"include", "a", "mx", "ptr", "exists"}


@dataclass
class SpfRecord:
    """A parsed `v=spf1` record: its directives in order and its modifiers."""

    text: str
    mechanisms: list[Mechanism] = field(default_factory=list)
    redirect: str | None = None
    exp: str | None = None
    modifiers: list[tuple[str, str]] = field(default_factory=list)


def is_spf_record(text: str) -> bool:
    """True for a record that declares itself SPF version 1 (`v=spf1`, then space or end)."""
    return text[:6].lower() == "v=spf1" and (len(text) == 6 or text[6] == " ")


def split_terms(text: str) -> list[tuple[int, str]]:
    """The record's terms with their character offsets; only SP separates terms."""
    terms: list[tuple[int, str]] = []
    offset = 0
    for piece in text.split(" "):
        if piece:
            terms.append((offset, piece))
        offset += len(piece) + 1
    return terms


def parse_record(text: str) -> SpfRecord:
    """Parse a whole `v=spf1` record; any syntax error raises `PermError` naming the term."""
    if not text.isascii():
        bad = next(ch for ch in text if not ch.isascii())
        raise PermError(f"the record contains the non-ASCII character {bad!r}")
    if not is_spf_record(text):
        raise PermError("the record does not start with 'v=spf1'")
    record = SpfRecord(text)
    for index, (_offset, term) in enumerate(split_terms(text)[1:], start=1):
        modifier = _MODIFIER_RE.match(term)
        if modifier:
            name, value = modifier.group(1).lower(), modifier.group(2)
            check_macro_string(value, term)
            if name in {"redirect", "exp"}:
                check_domain_spec(value, term)
                if getattr(record, name) is not None:
                    raise PermError(f"the modifier {name}= appears more than once", term)
                setattr(record, name, value)
            record.modifiers.append((name, value))
            continue
        record.mechanisms.append(parse_mechanism(term, index))
    return record


def parse_mechanism(term: str, index: int = 0) -> Mechanism:
    """Parse one directive (`[qualifier]name[:arg][/cidr]`), raising `PermError` when invalid."""
    match = _MECHANISM_RE.match(term)
    if not match:
        raise PermError(f"{term!r} is not a valid mechanism or modifier", term)
    qualifier, raw_name, rest = match.groups()
    name = raw_name.lower()
    if name not in MECHANISMS:
        raise PermError(f"unknown mechanism {raw_name!r}", term)
    if name == "all":
        if rest:
            raise PermError("'all' takes no argument", term)
        return Mechanism(term, qualifier, name, index=index)
    if name in {"ip4", "ip6"}:
        if not rest.startswith(":"):
            raise PermError(f"{name} needs an address: {name}:ADDRESS[/PREFIX]", term)
        return Mechanism(
            term, qualifier, name, network=_parse_network(name, rest[1:], term), index=index
        )
    if name in {"include", "exists"}:
        if not rest.startswith(":") or len(rest) == 1:
            raise PermError(f"{name} needs a domain: {name}:DOMAIN", term)
        check_macro_string(rest[1:], term)
        check_domain_spec(rest[1:], term)
        return Mechanism(term, qualifier, name, domain_spec=rest[1:], index=index)
    if name == "ptr":
        if rest and (not rest.startswith(":") or len(rest) == 1):
            raise PermError("ptr takes an optional domain: ptr[:DOMAIN]", term)
        spec = rest[1:]
        if spec:
            check_macro_string(spec, term)
            check_domain_spec(spec, term)
        return Mechanism(term, qualifier, name, domain_spec=spec, index=index)
    # a and mx: [":" domain-spec] [dual-cidr-length]
    cidr = _DUAL_CIDR_RE.match(rest)
    assert cidr is not None
    spec_part, ip4_len, ip6_len = cidr.groups()
    if spec_part and (not spec_part.startswith(":") or len(spec_part) == 1):
        raise PermError(f"bad argument to {name}: {name}[:DOMAIN][/PREFIX][//PREFIX6]", term)
    spec = spec_part[1:]
    if spec:
        check_macro_string(spec, term)
        check_domain_spec(spec, term)
    v4 = int(ip4_len) if ip4_len is not None else 32
    v6 = int(ip6_len) if ip6_len is not None else 128
    if v4 > 32 or v6 > 128:
        raise PermError("CIDR prefix too long", term)
    return Mechanism(term, qualifier, name, domain_spec=spec, ip4_cidr=v4, ip6_cidr=v6, index=index)


def _parse_network(
    kind: str, text: str, term: str
) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    address, slash, prefix = text.partition("/")
    if slash:
        if kind == "ip6" and prefix.startswith("/"):
            raise PermError("ip6 takes a single '/' before the prefix", term)
        if not re.fullmatch(r"0|[1-9][0-9]{0,2}", prefix):
            raise PermError(f"bad prefix length {prefix!r}", term)
    try:
        if kind == "ip4":
            if not re.fullmatch(r"\d{1,3}(\.\d{1,3}){3}", address):
                raise ValueError(address)
            ip4 = ipaddress.IPv4Address(address)
            length = int(prefix) if slash else 32
            if length > 32:
                raise PermError(f"prefix /{length} is too long for IPv4", term)
            return ipaddress.IPv4Network((ip4, length), strict=False)
        ip6 = ipaddress.IPv6Address(address)
        length = int(prefix) if slash else 128
        if length > 128:
            raise PermError(f"prefix /{length} is too long for IPv6", term)
        return ipaddress.IPv6Network((ip6, length), strict=False)
    except ValueError as exc:
        raise PermError(f"{address!r} is not an IPv{kind[-1]} address", term) from exc


def check_macro_string(text: str, term: str = "", *, explanation: bool = False) -> None:
    """Raise `PermError` unless `text` is a valid macro-string (RFC 7208 §7.1)."""
    allowed = "slodiphv" + ("crt" if explanation else "")
    position = 0
    while True:
        percent = text.find("%", position)
        if percent < 0:
            break
        match = _MACRO_RE.match(text, percent)
        if match is None:
            raise PermError(f"bad macro at offset {percent} in {text!r}", term)
        letter, digits, _reverse, _delims, escape = match.groups()
        if escape is not None:
            if escape not in "%_-":
                raise PermError(f"bad macro '%{escape}' in {text!r} (write %% for a '%')", term)
        elif letter.lower() not in allowed:
            raise PermError(f"unknown macro letter {letter!r} in {text!r}", term)
        elif digits and int(digits) == 0:
            raise PermError(f"macro digit transformer must not be zero in {text!r}", term)
        position = match.end()
    if not explanation and any(not 0x21 <= ord(ch) <= 0x7E for ch in text):
        raise PermError(f"invalid character in {text!r}", term)


def check_domain_spec(spec: str, term: str = "") -> None:
    """Raise `PermError` unless `spec` ends in a macro or a valid top label (§7.1)."""
    if spec.endswith("}") and "%{" in spec:
        return
    labels = spec[:-1].split(".") if spec.endswith(".") else spec.split(".")
    if len(labels) < 2 or not _TOPLABEL_RE.match(labels[-1]):
        raise PermError(f"{spec!r} is not a valid domain (bad or numeric top label)", term)


# --------------------------------------------------------------------------- evaluation


@dataclass
class _Outcome:
    result: str
    mechanism: str = ""
    reason: str = ""
    explanation: str = ""


class _Evaluation:
    """The state of one `check_host()` call shared by its includes and redirects."""

    def __init__(
        self,
        ip: _IP,
        sender: str,
        helo: str,
        resolver: dns.asyncresolver.Resolver,
        receiver: str,
    ) -> None:
        self.ip = ip
        self.sender = sender
        self.local_part, _, self.sender_domain = sender.rpartition("@")
        if not self.local_part:
            self.local_part = "postmaster"
        self.helo = helo
        self.resolver = resolver
        self.receiver = receiver
        self.lookups = 0
        self.void_lookups = 0
        self._validated_name: str | None = None

    # -- DNS ---------------------------------------------------------------------------

    async def query(self, name: str, rdtype: str, *, term: str = "") -> list[object] | None:
        """The rdatas of `name`/`rdtype`; [] for NODATA, None for NXDOMAIN or an invalid name."""
        try:
            qname = to_dns_name(name)
        except ValueError:
            return None
        try:
            answer = await self.resolver.resolve(
                qname, rdtype, raise_on_no_answer=False, search=False
            )
        except dns.resolver.NXDOMAIN:
            return None
        except dns.resolver.NoAnswer:
            return []
        except dns.exception.DNSException as exc:  # timeout, SERVFAIL, REFUSED, ...
            problem = describe_dns_error(exc)
            raise TempError(f"DNS error looking up {name} {rdtype}: {problem}", term) from exc
        if answer.rrset is None:
            return []
        return list(answer.rrset)

    def count_lookup(self, term: str) -> None:
        self.lookups += 1
        if self.lookups > LOOKUP_LIMIT:
            raise PermError(f"more than {LOOKUP_LIMIT} DNS-querying terms (at {term!r})", term)

    def count_void(self, records: Sequence[object] | None, term: str) -> None:
        if not records:
            self.void_lookups += 1
            if self.void_lookups > VOID_LOOKUP_LIMIT:
                raise PermError(
                    f"more than {VOID_LOOKUP_LIMIT} void DNS lookups (at {term!r})", term
                )

    async def addresses(self, name: str, term: str) -> list[_IP] | None:
        """A or AAAA addresses of `name` matching the client's family (None: no such name)."""
        rdtype = "A" if self.ip.version == 4 else "AAAA"
        records = await self.query(name, rdtype, term=term)
        if records is None:
            return None
        return [ipaddress.ip_address(r.address) for r in records]  # type: ignore[attr-defined]

    # -- records ----------------------------------------------------------------------

    async def spf_record(self, domain: str) -> str | None:
        """The domain's single SPF record; None when it has none; PermError for several."""
        records = await self.query(domain, "TXT")
        if not records:
            return None
        found = []
        for rdata in records:
            text = b"".join(rdata.strings).decode("latin-1")  # type: ignore[attr-defined]
            if is_spf_record(text):
                found.append(text)
        if len(found) > 1:
            raise PermError(f"{domain} publishes {len(found)} SPF records; it must publish one")
        return found[0] if found else None

    async def check_host(self, domain: str, depth: int = 0) -> _Outcome:
        """RFC 7208 §4 for `domain`, sharing this evaluation's lookup counters."""
        if depth > 2 * LOOKUP_LIMIT + 2:
            raise PermError("include/redirect nesting too deep")
        domain = domain.rstrip(".")
        if not valid_domain(domain):
            return _Outcome("none", reason=f"{domain!r} is not a valid domain name")
        text = await self.spf_record(domain)
        if text is None:
            return _Outcome("none", reason=f"{domain} has no SPF record")
        try:
            record = parse_record(text)
        except PermError as exc:  # name the record: it may be one several includes away
            raise PermError(f"{exc.reason} in the SPF record of {domain}", exc.term) from exc
        for mechanism in record.mechanisms:
            if await self.matches(mechanism, domain, depth):
                outcome = _Outcome(
                    mechanism.result,
                    mechanism.text,
                    f"matched {mechanism.text!r} in the SPF record of {domain}",
                )
                if outcome.result == "fail":
                    outcome.explanation = await self.explain(record, domain)
                return outcome
        has_all = any(m.name == "all" for m in record.mechanisms)
        if record.redirect is not None and not has_all:
            term = f"redirect={record.redirect}"
            self.count_lookup(term)
            target = await self.expand(record.redirect, domain, term=term)
            if target is None or not valid_domain(target):
                raise PermError(f"redirect to an invalid domain {target!r}", term)
            outcome = await self.check_host(target, depth + 1)
            if outcome.result == "none":
                raise PermError(f"redirect target {target} has no SPF record", term)
            return outcome
        return _Outcome("neutral", "", f"no term of the SPF record of {domain} matched")

    async def explain(self, record: SpfRecord, domain: str) -> str:
        """The `exp=` explanation of a fail, or the default when there is none usable."""
        default = await self.expand(DEFAULT_EXPLANATION, domain, explanation=True) or ""
        if record.exp is None:
            return default
        try:
            target = await self.expand(record.exp, domain)
            if not target:
                return default
            records = await self.query(target, "TXT")
            if not records or len(records) != 1:
                return default
            text = b"".join(records[0].strings).decode("ascii")  # type: ignore[attr-defined]
            check_macro_string(text, explanation=True)
            expanded = await self.expand(text, domain, explanation=True)
        except (SpfError, UnicodeDecodeError):
            return default
        return expanded if expanded is not None else default

    # -- mechanisms --------------------------------------------------------------------

    async def matches(self, mechanism: Mechanism, domain: str, depth: int) -> bool:
        term = mechanism.text
        if mechanism.counts_lookup:
            self.count_lookup(term)
        name = mechanism.name
        if name == "all":
            return True
        if name in {"ip4", "ip6"}:
            assert mechanism.network is not None
            return self.ip in mechanism.network
        target = domain
        if mechanism.domain_spec:
            expanded = await self.expand(mechanism.domain_spec, domain, term=term)
            if expanded is None or not valid_domain(expanded):
                return False
            target = expanded
        if name == "include":
            outcome = await self.check_host(target, depth + 1)
            if outcome.result == "pass":
                return True
            if outcome.result in {"fail", "softfail", "neutral"}:
                return False
            if outcome.result == "none":
                raise PermError(f"include:{target} — {target} has no SPF record", term)
            raise SpfError(outcome.result, outcome.reason, term)
        if name == "a":
            found = await self.addresses(target, term)
            self.count_void(found, term)
            return self._in(found or [], mechanism)
        if name == "mx":
            mx_records = await self.query(target, "MX", term=term)
            self.count_void(mx_records, term)
            if mx_records and len(mx_records) > MX_NAME_LIMIT:
                raise PermError(f"{target} has more than {MX_NAME_LIMIT} MX records", term)
            for mx in mx_records or []:
                host = mx.exchange.to_text(omit_final_dot=True)  # type: ignore[attr-defined]
                if host and self._in(await self.addresses(host, term) or [], mechanism):
                    return True
            return False
        if name == "ptr":
            names = await self.validated_names(term)
            return any(_is_subdomain(n, target) for n in names)
        if name == "exists":
            found_a = await self.query(target, "A", term=term)
            self.count_void(found_a, term)
            return bool(found_a)
        raise PermError(f"unknown mechanism {name!r}", term)

    def _in(self, addresses: Sequence[_IP], mechanism: Mechanism) -> bool:
        prefix = mechanism.ip4_cidr if self.ip.version == 4 else mechanism.ip6_cidr
        network = ipaddress.ip_network((self.ip, prefix), strict=False)
        return any(address in network for address in addresses)

    async def validated_names(self, term: str = "") -> list[str]:
        """The client's PTR names whose forward lookup gives back the client IP (§5.5)."""
        try:
            ptrs = await self.query(dns.reversename.from_address(str(self.ip)).to_text(), "PTR")
        except TempError:
            return []
        self.count_void(ptrs, term or "ptr")
        names: list[str] = []
        for ptr in (ptrs or [])[:PTR_NAME_LIMIT]:
            host = ptr.target.to_text(omit_final_dot=True)  # type: ignore[attr-defined]
            try:
                addresses = await self.addresses(host, term)
            except TempError:
                continue
            if addresses and self.ip in addresses:
                names.append(host)
        return names

    # -- macros --------------------------------------------------------------------------

    async def expand(
        self, text: str, domain: str, *, term: str = "", explanation: bool = False
    ) -> str | None:
        """Expand the macros of `text` (§7); domain-specs longer than 253 lose left labels."""
        out: list[str] = []
        position = 0
        for match in _MACRO_RE.finditer(text):
            out.append(text[position : match.start()])
            position = match.end()
            letter, digits, reverse, delimiters, escape = match.groups()
            if escape is not None:
                out.append({"%": "%", "_": " ", "-": "%20"}[escape])
                continue
            value = await self._macro_value(letter.lower(), domain, term)
            parts = re.split("[" + re.escape(delimiters or ".") + "]", value)
            if reverse:
                parts.reverse()
            if digits:
                parts = parts[-int(digits) :]
            value = ".".join(parts)
            if letter.isupper():
                value = urllib.parse.quote(value, safe="-._~")
            out.append(value)
        out.append(text[position:])
        result = "".join(out)
        if not explanation:
            while len(result) > 253 and "." in result:
                result = result.split(".", 1)[1]
        return result

    async def _macro_value(self, letter: str, domain: str, term: str) -> str:
        if letter == "s":
            return self.sender
        if letter == "l":
            return self.local_part
        if letter == "o":
            return self.sender_domain
        if letter == "d":
            return domain
        if letter == "i":
            if self.ip.version == 4:
                return str(self.ip)
            return ".".join(self.ip.exploded.replace(":", "").upper())
        if letter == "p":
            return await self.validated_name(domain, term)
        if letter == "v":
            return "in-addr" if self.ip.version == 4 else "ip6"
        if letter == "h":
            return self.helo
        if letter == "c":
            return str(self.ip)
        if letter == "r":
            return self.receiver
        if letter == "t":
            return str(int(time.time()))
        raise PermError(f"unknown macro letter {letter!r}", term)

    async def validated_name(self, domain: str, term: str) -> str:
        """The `%{p}` value: a validated PTR name, preferring `domain` and its subdomains."""
        if self._validated_name is None:
            names = await self.validated_names(term)
            chosen = "unknown"
            for candidate in names:
                if candidate.lower() == domain.lower():
                    chosen = candidate
                    break
            else:
                sub = [n for n in names if _is_subdomain(n, domain)]
                chosen = (sub or names or ["unknown"])[0]
            self._validated_name = chosen
        return self._validated_name


def _is_subdomain(name: str, parent: str) -> bool:
    name, parent = name.lower().rstrip("."), parent.lower().rstrip(".")
    return name == parent or name.endswith("." + parent)


def to_dns_name(text: str) -> dns.name.Name:
    """`text` as an absolute DNS name, labels taken literally (no escapes, no IDNA)."""
    labels = text.rstrip(".").split(".")
    try:
        return dns.name.Name([label.encode("latin-1") for label in labels] + [b""])
    except (dns.exception.DNSException, UnicodeEncodeError) as exc:
        raise ValueError(f"{text!r} is not a valid domain name") from exc


def valid_domain(domain: str) -> bool:
    """A multi-label name with no empty label and no label over 63 octets (§4.3)."""
    domain = domain.rstrip(".")
    labels = domain.split(".")
    if len(labels) < 2 or any(not label or len(label) > 63 for label in labels):
        return False
    try:
        to_dns_name(domain)
    except ValueError:
        return False
    return True


def parse_ip(ip: str) -> _IP:
    """The client address; an IPv4-mapped IPv6 address becomes IPv4 (RFC 7208 §5)."""
    address = ipaddress.ip_address(ip.strip())
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


async def check_host(
    ip: str,
    domain: str,
    sender: str,
    *,
    helo: str = "",
    resolver: dns.asyncresolver.Resolver,
    receiver: str = "unknown",
) -> SpfResult:
    """RFC 7208 `check_host(ip, domain, sender)`: the SPF result for this client and identity.

    `sender` is the MAIL FROM address (or `postmaster@HELO` for the HELO identity); a sender
    without a local part is taken as `postmaster@domain`.
    """
    try:
        client = parse_ip(ip)
    except ValueError:
        return SpfResult(
            "permerror", domain, ip, sender, helo, reason=f"{ip!r} is not an IP address"
        )
    if "@" not in sender:
        sender = f"postmaster@{sender or domain}"
    elif sender.startswith("@"):
        sender = "postmaster" + sender
    evaluation = _Evaluation(client, sender, helo, resolver, receiver)
    try:
        outcome = await evaluation.check_host(domain)
    except SpfError as exc:
        outcome = _Outcome(exc.result, exc.term, exc.reason)
    return SpfResult(
        outcome.result,
        domain=domain,
        ip=str(client) if client.version == 4 and ":" in ip else ip,
        sender=sender,
        helo=helo,
        mechanism=outcome.mechanism,
        explanation=outcome.explanation,
        reason=outcome.reason,
        lookups=evaluation.lookups,
        void_lookups=evaluation.void_lookups,
        receiver=receiver,
    )


async def check_mail_from(
    ip: str,
    sender: str,
    *,
    helo: str = "",
    resolver: dns.asyncresolver.Resolver,
    receiver: str = "unknown",
) -> SpfResult:
    """SPF for an SMTP transaction: the MAIL FROM identity, or HELO's for the null sender."""
    if sender:
        domain = sender.rpartition("@")[2]
        return await check_host(ip, domain, sender, helo=helo, resolver=resolver, receiver=receiver)
    return await check_host(
        ip, helo, f"postmaster@{helo}", helo=helo, resolver=resolver, receiver=receiver
    )
