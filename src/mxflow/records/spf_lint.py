"""SPF lint: every problem of a record (or of a domain's published SPF) with a fix.

`lint_record()` looks at the text alone; `lint_domain()` also resolves what the record
depends on (includes, redirect, a, mx), counts DNS-querying terms per include chain
against RFC 7208's limit of 10, and finds void lookups, missing included records and
answers too large for UDP. Every finding has a severity (error: evaluation gives a
permerror or lets anyone send; warning: fragile or discouraged; info: worth knowing),
the character offset of the term in the record, and the fix.

The reference's `v=spf1 ipv4: 10.10.10.1 include:spf.protection.outlook.com -all` is the
motivating case: `ipv4:` is not a mechanism (`ip4:` is) and the space after it makes
`10.10.10.1` a separate, invalid term, so every evaluation is a permerror.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.resolver

from mxflow.auth.spf import (
    LOOKUP_LIMIT,
    MECHANISMS,
    MX_NAME_LIMIT,
    VOID_LOOKUP_LIMIT,
    Mechanism,
    PermError,
    check_macro_string,
    is_spf_record,
    parse_mechanism,
    split_terms,
    to_dns_name,
)
from mxflow.dns.names import require_domain
from mxflow.dns.resolver import describe_dns_error
from mxflow.errors import MxflowError

TXT_STRING_LIMIT = 255
UDP_LIMIT = 512
_MODIFIER_RE = re.compile(r"^([A-Za-z][A-Za-z0-9\-_.]*)=(.*)$", re.DOTALL)
_ALIASES = {
    "ipv4": "ip4",
    "ip": "ip4",
    "ipv6": "ip6",
    "inc": "include",
    "includes": "include",
    "exist": "exists",
    "mxs": "mx",
    "aaaa": "a",
    "spf": "include",
    "redir": "redirect=",
    "redirect": "redirect=",
    "exp": "exp=",
}
SYNTAX_CODES = frozenset(
    {
        "bad-version",
        "not-spf",
        "non-ascii",
        "control-char",
        "bad-macro",
        "empty-modifier",
        "unknown-mechanism",
        "split-term",
        "bare-address",
        "syntax",
        "duplicate-modifier",
    }
)
PERMERROR_NOTE = "so every SPF evaluation of this record is a permerror"


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True)
class Finding:
    """One problem: how bad, where (term index and character offset), what, and the fix."""

    severity: Severity
    code: str
    message: str
    fix: str = ""
    position: int | None = None
    term: str = ""
    domain: str = ""

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["severity"] = str(self.severity)
        return data

    def __str__(self) -> str:
        where = f" at {self.position}" if self.position is not None else ""
        term = f" {self.term!r}" if self.term else ""
        domain = f" [{self.domain}]" if self.domain else ""
        fix = f"\n    fix: {self.fix}" if self.fix else ""
        return f"{self.severity:<7}{domain}{where}{term}: {self.message}{fix}"


@dataclass
class LintReport:
    """Findings for one record or domain, plus the lookup count of its whole include tree."""

    record: str | None
    domain: str = ""
    findings: list[Finding] = field(default_factory=list)
    lookups: int = 0
    lookup_chain: dict[str, int] = field(default_factory=dict)

    @property
    def has_errors(self) -> bool:
        return any(f.severity == Severity.ERROR for f in self.findings)

    def add(self, finding: Finding) -> None:
        self.findings.append(finding)

    def as_dict(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "record": self.record,
            "lookups": self.lookups,
            "lookup_chain": self.lookup_chain,
            "errors": sum(f.severity == Severity.ERROR for f in self.findings),
            "findings": [f.as_dict() for f in self.findings],
        }


# --------------------------------------------------------------------------- static lint


def _suggest(name: str) -> str | None:
    lowered = name.lower()
    if lowered in _ALIASES:
        return _ALIASES[lowered]
    close = difflib.get_close_matches(lowered, MECHANISMS, n=1, cutoff=0.6)
    return close[0] if close else None


def _looks_like_ip(text: str) -> str | None:
    candidate = text.split("/", maxsplit=1)[0]
    try:
        return f"ip{ipaddress.ip_address(candidate).version}"
    except ValueError:
        return None


def _is_term(text: str) -> bool:
    """True when `text` is a valid term of its own (so no space split it off another)."""
    if _MODIFIER_RE.match(text):
        return True
    try:
        parse_mechanism(text)
    except PermError:
        return False
    return True


@dataclass
class _Term:
    index: int
    offset: int
    text: str
    mechanism: Mechanism | None = None
    modifier: tuple[str, str] | None = None


def lint_record(text: str, *, domain: str = "", public: bool = True) -> LintReport:
    """Lint one record's text; `public` flags private and loopback addresses in it."""
    report = LintReport(text, domain)
    record = _lint_version(report, text, domain)
    if record is None:
        return report
    _lint_characters(report, record, domain)
    terms = [_Term(i, off, t) for i, (off, t) in enumerate(split_terms(record)[1:], start=1)]
    skip: set[int] = set()
    for position, term in enumerate(terms):
        if term.index in skip:
            continue
        following = terms[position + 1] if position + 1 < len(terms) else None
        _lint_term(report, term, following, skip, domain)
    _lint_structure(report, [t for t in terms if t.index not in skip], domain, public)
    _lint_length(report, record, domain)
    report.findings.sort(key=lambda f: (f.position is None, f.position or 0))
    return report


def _lint_version(report: LintReport, record: str, domain: str) -> str | None:
    """The record to lint past its version tag, or None when there is nothing to lint.

    Space before `v=spf1` is reported and stripped, so that one finding does not hide the
    rest; a tag run into what follows (`v=spf1ip4:...`), or no tag at all, ends the lint.
    """
    if is_spf_record(record):
        return record
    if not record.strip().lower().startswith("v=spf1"):
        report.add(
            Finding(
                Severity.ERROR,
                "not-spf",
                "not an SPF record: it does not start with 'v=spf1'",
                "start the record with 'v=spf1 '",
                0,
                record[:10],
                domain,
            )
        )
        return None
    fix = "remove the leading space" if record[:1] == " " else "separate with one space"
    report.add(
        Finding(
            Severity.ERROR,
            "bad-version",
            "the record must start with 'v=spf1 '",
            fix,
            0,
            record[:8],
            domain,
        )
    )
    record = record.strip()
    return record if record[6:7] in {"", " "} else None


def _lint_characters(report: LintReport, record: str, domain: str) -> None:
    """Report each character a receiver rejects: non-ASCII, and whitespace other than a
    space (terms are split on spaces only, so a tab or newline breaks the record)."""
    for offset, char in enumerate(record):
        if not char.isascii():
            report.add(
                Finding(
                    Severity.ERROR,
                    "non-ascii",
                    f"non-ASCII character {char!r}, {PERMERROR_NOTE}",
                    "remove it (SPF records are 7-bit ASCII)",
                    offset,
                    char,
                    domain,
                )
            )
        elif char in "\t\r\n\v\f":
            report.add(
                Finding(
                    Severity.ERROR,
                    "control-char",
                    f"control character {char!r}: only a space separates terms, {PERMERROR_NOTE}",
                    "replace it with a single space",
                    offset,
                    char,
                    domain,
                )
            )


def _lint_term(
    report: LintReport, term: _Term, following: _Term | None, skip: set[int], domain: str
) -> None:
    """Parse one term onto `term` (as a modifier or a mechanism), or report why it does not
    parse; a term that swallows `following` adds its index to `skip`."""
    text = term.text
    if any(ch in text for ch in "\t\r\n\v\f") or not text.isascii():
        return  # already reported character by character
    modifier = _MODIFIER_RE.match(text)
    if modifier:
        _lint_modifier(report, term, modifier.group(1).lower(), modifier.group(2), domain)
        return
    try:
        term.mechanism = parse_mechanism(text, term.index)
        return
    except PermError as exc:
        reason = exc.reason
    _lint_bad_mechanism(report, term, following, skip, domain, reason=reason)


def _lint_modifier(report: LintReport, term: _Term, name: str, value: str, domain: str) -> None:
    """Check a modifier's value (a macro string; a domain for redirect= and exp=) and, when
    it is valid, record it on `term` for the structure checks."""
    try:
        check_macro_string(value, term.text)
    except PermError as exc:
        report.add(
            Finding(
                Severity.ERROR,
                "bad-macro",
                f"{exc.reason}, {PERMERROR_NOTE}",
                "write a literal '%' as '%%'",
                term.offset,
                term.text,
                domain,
            )
        )
        return
    if name in {"redirect", "exp"} and not value:
        report.add(
            Finding(
                Severity.ERROR,
                "empty-modifier",
                f"{name}= needs a domain, {PERMERROR_NOTE}",
                f"write {name}=DOMAIN or remove it",
                term.offset,
                term.text,
                domain,
            )
        )
        return
    term.modifier = (name, value)


def _term_parts(text: str) -> tuple[str, str, str]:
    """A term's qualifier, name as written and the rest (its argument), e.g. `-`, `ip4`,
    `:192.0.2.1`; the name is what is compared with the mechanism names."""
    name = re.match(r"^[+\-~?]?([A-Za-z0-9\-_.]*)", text)
    raw_name = name.group(1) if name else text
    qualifier = text[0] if text[:1] in "+-~?" else ""
    return qualifier, raw_name, text[len(qualifier) + len(raw_name) :]


def _lint_bad_mechanism(
    report: LintReport,
    term: _Term,
    following: _Term | None,
    skip: set[int],
    domain: str,
    *,
    reason: str,
) -> None:
    """Report the most specific cause of a term that does not parse: an unknown name, a
    space after `ip4:` and the like, a bare address, else the parser's `reason`."""
    text = term.text
    qualifier, raw_name, argument = _term_parts(text)
    if raw_name.lower() not in MECHANISMS and not _looks_like_ip(text):
        _lint_unknown_mechanism(report, term, following, skip, domain)
        return
    if (
        argument in {":", ""}
        and following is not None
        and not _is_term(following.text)
        and raw_name.lower() in {"ip4", "ip6", "include", "exists"}
    ):
        skip.add(following.index)
        report.add(
            Finding(
                Severity.ERROR,
                "split-term",
                f"the space after {text!r} splits the term: {following.text!r} is read as a "
                f"separate term, {PERMERROR_NOTE}",
                f"remove the space: {qualifier}{raw_name.lower()}:{following.text}",
                term.offset,
                text,
                domain,
            )
        )
        return
    _lint_syntax(report, term, domain, reason)


def _lint_unknown_mechanism(
    report: LintReport, term: _Term, following: _Term | None, skip: set[int], domain: str
) -> None:
    """Report a name that is no mechanism with the one probably meant (`ipv4:` -> `ip4:`);
    when a space split its argument off, that argument joins the suggestion and `skip`."""
    text = term.text
    qualifier, raw_name, argument = _term_parts(text)
    suggestion = _suggest(raw_name)
    value = argument[1:] if argument.startswith(":") else argument
    split = (
        following is not None
        and not _is_term(following.text)
        and argument in {":", ""}
        and suggestion in {"ip4", "ip6", "include", "exists", "a", "mx"}
    )
    if split and following is not None:
        value = following.text
        skip.add(following.index)
    if suggestion:
        separator = "" if suggestion.endswith("=") or not value else ":"
        replacement = f"{qualifier}{suggestion}{separator}{value}"
        fix = f"did you mean {replacement!r}?"
    else:
        fix = f"use one of: {', '.join(MECHANISMS)}, or a modifier name=value"
    message = f"{raw_name + argument[:1]!r} is not an SPF mechanism, {PERMERROR_NOTE}"
    report.add(
        Finding(Severity.ERROR, "unknown-mechanism", message, fix, term.offset, text, domain)
    )
    if split and following is not None:
        report.add(
            Finding(
                Severity.ERROR,
                "split-term",
                f"the space after {text!r} splits the term: {following.text!r} is read as a "
                f"separate term, which is not a mechanism either, {PERMERROR_NOTE}",
                f"remove the space: {replacement!r}" if suggestion else "remove the space",
                following.offset,
                following.text,
                domain,
            )
        )


def _lint_syntax(report: LintReport, term: _Term, domain: str, reason: str) -> None:
    """Report a known mechanism written wrongly with the parser's `reason` and the
    mechanism's syntax; an address on its own gets the `ip4:`/`ip6:` it lacks."""
    text = term.text
    version = _looks_like_ip(text)
    if version:
        report.add(
            Finding(
                Severity.ERROR,
                "bare-address",
                f"a bare address is not a term, {PERMERROR_NOTE}",
                f"write {version}:{text}",
                term.offset,
                text,
                domain,
            )
        )
        return
    report.add(
        Finding(
            Severity.ERROR,
            "syntax",
            f"{reason}, {PERMERROR_NOTE}",
            _syntax_fix(_term_parts(text)[1].lower()),
            term.offset,
            text,
            domain,
        )
    )


def _syntax_fix(name: str) -> str:
    return {
        "ip4": "write ip4:ADDRESS or ip4:NETWORK/PREFIX, e.g. ip4:192.0.2.0/24",
        "ip6": "write ip6:ADDRESS or ip6:NETWORK/PREFIX, e.g. ip6:2001:db8::/32",
        "include": "write include:DOMAIN",
        "exists": "write exists:DOMAIN",
        "a": "write a, a:DOMAIN, a/PREFIX or a:DOMAIN/PREFIX",
        "mx": "write mx, mx:DOMAIN, mx/PREFIX or mx:DOMAIN/PREFIX",
        "ptr": "remove ptr (it is discouraged anyway)",
        "all": "write -all (or ~all)",
    }.get(name, "check the term's syntax against RFC 7208 §12")


def _lint_structure(report: LintReport, terms: list[_Term], domain: str, public: bool) -> None:
    """Check the parsed terms together: modifiers, risky mechanisms, how the record ends,
    and its own lookup count."""
    mechanisms = [t for t in terms if t.mechanism is not None]
    modifiers = [t for t in terms if t.modifier is not None]
    seen = _lint_modifiers(report, modifiers, domain)
    _lint_mechanisms(report, mechanisms, domain, public)
    _lint_all(report, mechanisms, seen, domain)
    _count_lookups(report, mechanisms, seen, domain)


def _lint_modifiers(report: LintReport, modifiers: list[_Term], domain: str) -> dict[str, _Term]:
    """Report repeated redirect=/exp= (a permerror) and modifiers receivers ignore; returns
    the last term of each modifier name, for the checks that depend on redirect=."""
    seen: dict[str, _Term] = {}
    for term in modifiers:
        assert term.modifier is not None
        name = term.modifier[0]
        if name in {"redirect", "exp"} and name in seen:
            report.add(
                Finding(
                    Severity.ERROR,
                    "duplicate-modifier",
                    f"{name}= appears more than once, {PERMERROR_NOTE}",
                    f"keep one {name}=",
                    term.offset,
                    term.text,
                    domain,
                )
            )
        seen[name] = term
        if name not in {"redirect", "exp"}:
            report.add(
                Finding(
                    Severity.INFO,
                    "unknown-modifier",
                    f"unknown modifier {name}= is ignored by receivers",
                    "remove it unless you know who reads it",
                    term.offset,
                    term.text,
                    domain,
                )
            )
    return seen


def _lint_mechanisms(
    report: LintReport, mechanisms: list[_Term], domain: str, public: bool
) -> None:
    """Report mechanisms that parse but are discouraged (ptr) or authorise the wrong
    senders (networks checked by `_lint_network` when the record is `public`)."""
    for term in mechanisms:
        mech = term.mechanism
        assert mech is not None
        if mech.name == "ptr":
            report.add(
                Finding(
                    Severity.WARNING,
                    "ptr",
                    "ptr is slow, unreliable and discouraged (RFC 7208 §5.5); many receivers "
                    "skip it",
                    "list the senders with ip4:/ip6: or a:/include: instead",
                    term.offset,
                    term.text,
                    domain,
                )
            )
        if mech.network is not None and public:
            _lint_network(report, term, domain)


def _lint_network(report: LintReport, term: _Term, domain: str) -> None:
    """Report an ip4:/ip6: network no Internet sender has (private, loopback, link-local)
    or one so wide it authorises much of the Internet."""
    assert term.mechanism is not None and term.mechanism.network is not None
    network = term.mechanism.network  # the whole network, so 0.0.0.0/0 is not "private"
    if network.is_loopback or network.is_private or network.is_link_local:
        kind = (
            "loopback"
            if network.is_loopback
            else "link-local"
            if network.is_link_local
            else "private or reserved"
        )
        report.add(
            Finding(
                Severity.WARNING,
                "private-address",
                f"{network} is a {kind} address: no Internet sender has it",
                "list the public address the mail leaves from (NAT), or remove it",
                term.offset,
                term.text,
                domain,
            )
        )
    if network.prefixlen < (8 if network.version == 4 else 24):
        report.add(
            Finding(
                Severity.WARNING,
                "wide-network",
                f"{network} authorises a huge address range",
                "list only your senders' networks",
                term.offset,
                term.text,
                domain,
            )
        )


def _lint_all(
    report: LintReport, mechanisms: list[_Term], seen: dict[str, _Term], domain: str
) -> None:
    """Check how the record ends: the first 'all' decides every sender not listed before
    it, so terms after it and a redirect= are dead; with neither, senders get neutral."""
    all_terms = [t for t in mechanisms if t.mechanism and t.mechanism.name == "all"]
    if not all_terms:
        if "redirect" not in seen:
            report.add(
                Finding(
                    Severity.WARNING,
                    "no-all",
                    "no 'all' and no redirect=: unlisted senders get 'neutral'",
                    "end the record with -all (or ~all)",
                    None,
                    "",
                    domain,
                )
            )
        return
    first = all_terms[0]
    _lint_all_qualifier(report, first, domain)
    after = [t for t in mechanisms if t.index > first.index]
    if after:
        report.add(
            Finding(
                Severity.WARNING,
                "after-all",
                f"terms after {first.text!r} are never evaluated",
                "move them before 'all'",
                after[0].offset,
                after[0].text,
                domain,
            )
        )
    if "redirect" in seen:
        term = seen["redirect"]
        report.add(
            Finding(
                Severity.WARNING,
                "redirect-ignored",
                "redirect= is ignored because the record has an 'all' mechanism",
                "remove either the redirect= or the 'all'",
                term.offset,
                term.text,
                domain,
            )
        )


def _lint_all_qualifier(report: LintReport, first: _Term, domain: str) -> None:
    """Report an 'all' that lets anyone send (+all) or says nothing about them (?all)."""
    assert first.mechanism is not None
    qualifier = first.mechanism.qualifier or "+"
    if qualifier == "+":
        report.add(
            Finding(
                Severity.ERROR,
                "pass-all",
                f"{first.text!r} lets every host on the Internet send as this domain",
                "end with -all (or ~all while testing)",
                first.offset,
                first.text,
                domain,
            )
        )
    elif qualifier == "?":
        report.add(
            Finding(
                Severity.WARNING,
                "neutral-all",
                "?all makes unlisted senders neutral: receivers treat them like no SPF at all",
                "end with -all (or ~all)",
                first.offset,
                first.text,
                domain,
            )
        )


def _count_lookups(
    report: LintReport, mechanisms: list[_Term], seen: dict[str, _Term], domain: str
) -> None:
    """Set the record's own count of DNS-querying terms (a redirect= counts as one) and
    report it over RFC 7208's limit; `lint_domain` adds what the includes query."""
    count = sum(1 for t in mechanisms if t.mechanism and t.mechanism.counts_lookup) + (
        1 if "redirect" in seen else 0
    )
    report.lookups = count
    report.lookup_chain = {domain or "(record)": count}
    if count > LOOKUP_LIMIT:
        report.add(
            Finding(
                Severity.ERROR,
                "too-many-lookups",
                f"{count} DNS-querying terms in this record alone (limit {LOOKUP_LIMIT}); "
                "evaluation ends in permerror",
                "replace a/mx/include terms with ip4:/ip6: ranges",
                None,
                "",
                domain,
            )
        )


def _lint_length(report: LintReport, record: str, domain: str) -> None:
    """Warn when the record is longer than one TXT string holds (it must be split)."""
    if len(record.encode()) > TXT_STRING_LIMIT:
        report.add(
            Finding(
                Severity.WARNING,
                "long-record",
                f"the record is {len(record.encode())} bytes; one TXT string holds at most "
                f"{TXT_STRING_LIMIT}",
                'publish it as several quoted strings in one TXT record ("..." "..."); '
                "receivers join them without spaces",
                None,
                "",
                domain,
            )
        )


# --------------------------------------------------------------------------- live lint


async def _txt_records(
    domain: str, resolver: dns.asyncresolver.Resolver
) -> tuple[list[tuple[bytes, ...]] | None, int]:
    """TXT records of `domain` (None: the name does not exist) and the answer's wire size."""
    try:
        answer = await resolver.resolve(
            to_dns_name(domain), "TXT", raise_on_no_answer=False, search=False
        )
    except dns.resolver.NXDOMAIN:
        return None, 0
    size = len(answer.response.to_wire()) if answer.response is not None else 0
    if answer.rrset is None:
        return [], size
    return [tuple(r.strings) for r in answer.rrset], size


async def _exists(domain: str, rdtype: str, resolver: dns.asyncresolver.Resolver) -> int:
    """How many records of `rdtype` the name has (0: void lookup)."""
    try:
        answer = await resolver.resolve(
            to_dns_name(domain), rdtype, raise_on_no_answer=False, search=False
        )
    except dns.resolver.NXDOMAIN:
        return 0
    return len(answer.rrset) if answer.rrset is not None else 0


class _Walker:
    def __init__(
        self, report: LintReport, resolver: dns.asyncresolver.Resolver, public: bool
    ) -> None:
        self.report = report
        self.resolver = resolver
        self.public = public
        self.void = 0
        self.visiting: set[str] = set()

    async def fetch(self, domain: str, via: str) -> str | None:
        """The domain's SPF record, reporting missing, multiple, long and large ones."""
        try:
            records, size = await _txt_records(domain, self.resolver)
        except (dns.exception.DNSException, ValueError) as exc:
            self._lookup_failed(domain, via, exc)
            return None
        spf = [r for r in records or [] if is_spf_record(b"".join(r).decode("latin-1"))]
        if not spf:
            self._no_spf(domain, via, records)
            return None
        self._check_published(domain, spf, size)
        return b"".join(spf[0]).decode("latin-1")

    def _lookup_failed(self, domain: str, via: str, exc: Exception) -> None:
        """A failed TXT lookup: fatal for the domain asked about (there is nothing to lint),
        a finding for an included one (receivers get temperror there)."""
        if not via:
            raise MxflowError(f"cannot look up TXT {domain}: {describe_dns_error(exc)}") from exc
        self.report.add(
            Finding(
                Severity.ERROR,
                "dns-error",
                f"looking up TXT {domain} failed ({describe_dns_error(exc)}); receivers "
                "get temperror",
                "check the domain's name servers",
                None,
                via,
                domain,
            )
        )

    def _no_spf(self, domain: str, via: str, records: list[tuple[bytes, ...]] | None) -> None:
        """Report an included or redirected-to domain without SPF (the domain asked about
        gets its own finding from `lint_domain`)."""
        what = "does not exist" if records is None else "has no SPF record"
        if via:
            self.report.add(
                Finding(
                    Severity.ERROR,
                    "include-without-spf",
                    f"{via!r} points to {domain}, which {what}; evaluation ends in permerror",
                    f"remove {via!r} or publish SPF at {domain}",
                    None,
                    via,
                    domain,
                )
            )

    def _check_published(self, domain: str, spf: list[tuple[bytes, ...]], size: int) -> None:
        """Report what breaks the published form: several SPF records, a TXT string over
        255 bytes, an answer too large for UDP."""
        if len(spf) > 1:
            self.report.add(
                Finding(
                    Severity.ERROR,
                    "multiple-records",
                    f"{domain} publishes {len(spf)} SPF records; every evaluation is a permerror",
                    "merge them into one v=spf1 record",
                    None,
                    "",
                    domain,
                )
            )
        for strings in spf:
            for piece in strings:
                if len(piece) > TXT_STRING_LIMIT:  # only possible from a hand-built zone
                    self.report.add(
                        Finding(
                            Severity.ERROR,
                            "long-string",
                            f"a TXT string of {len(piece)} bytes exceeds {TXT_STRING_LIMIT}",
                            "split it into several quoted strings",
                            None,
                            "",
                            domain,
                        )
                    )
        if size > UDP_LIMIT:
            self.report.add(
                Finding(
                    Severity.WARNING,
                    "large-answer",
                    f"the TXT answer for {domain} is {size} bytes, over the {UDP_LIMIT}-byte UDP "
                    "limit: receivers must retry over TCP, some fail (temperror)",
                    "shorten the record or move other TXT records (verification tokens) elsewhere",
                    None,
                    "",
                    domain,
                )
            )

    async def walk(self, domain: str, record: str, via: str = "") -> int:
        """Lint `record` of `domain` and everything it includes; returns its lookup count."""
        static = lint_record(record, domain=domain, public=self.public)
        for finding in static.findings:
            # the whole-chain count replaces the per-record one; and a published record is
            # already in strings of at most 255 bytes (`fetch` checks them), whatever its length
            if finding.code not in {"too-many-lookups", "long-record"}:
                self.report.add(finding)
        if any(f.code in SYNTAX_CODES for f in static.findings):
            self._count(domain, static.lookups)
            return static.lookups
        total = own = 0
        self.visiting.add(domain.lower())
        for offset, term in split_terms(record)[1:]:
            modifier = _MODIFIER_RE.match(term)
            if modifier:
                if modifier.group(1).lower() == "redirect" and not any(
                    t.lower().lstrip("+-~?") == "all" for _, t in split_terms(record)
                ):
                    own += 1
                    total += 1
                    total += await self.follow(
                        modifier.group(2), f"redirect={modifier.group(2)}", domain, offset
                    )
                continue
            mechanism = parse_mechanism(term)
            if not mechanism.counts_lookup:
                continue
            own += 1
            total += 1
            total += await self._check_target(mechanism, term, domain, offset)
        self.visiting.discard(domain.lower())
        self._count(domain, own)
        return total

    async def _check_target(self, mechanism: Mechanism, term: str, domain: str, offset: int) -> int:
        """Resolve what one DNS-querying mechanism points to (an include's record, an a/mx/
        exists name); returns the lookups found below it."""
        target = mechanism.domain_spec or domain
        if "%" in target:
            self.report.add(
                Finding(
                    Severity.INFO,
                    "macro",
                    f"{term!r} uses macros; its target depends on each message and is not "
                    "checked here",
                    "",
                    offset,
                    term,
                    domain,
                )
            )
            return 0
        if mechanism.name == "include":
            return await self.follow(target, term, domain, offset)
        if mechanism.name in {"a", "exists"}:
            await self.void_check(target, "A", term, domain, offset)
        elif mechanism.name == "mx":
            count = await self.void_check(target, "MX", term, domain, offset)
            if count > MX_NAME_LIMIT:
                self.report.add(
                    Finding(
                        Severity.ERROR,
                        "mx-limit",
                        f"{target} has {count} MX records; 'mx' allows at most {MX_NAME_LIMIT} "
                        "(permerror)",
                        "use ip4:/ip6: for the mail servers instead",
                        offset,
                        term,
                        domain,
                    )
                )
        return 0

    def _count(self, domain: str, lookups: int) -> None:
        """Add `domain`'s own lookups to the chain: a record included twice counts twice,
        as it does in an evaluation, so the chain always sums to the total."""
        self.report.lookup_chain[domain] = self.report.lookup_chain.get(domain, 0) + lookups

    async def follow(self, target: str, via: str, domain: str, offset: int) -> int:
        if "%" in target:
            return 0
        if target.lower() in self.visiting:
            self.report.add(
                Finding(
                    Severity.ERROR,
                    "loop",
                    f"{via!r} loops back to {target}; evaluation ends in permerror",
                    "remove the loop",
                    offset,
                    via,
                    domain,
                )
            )
            return 0
        record = await self.fetch(target, via)
        if record is None:
            return 0
        return await self.walk(target, record, via)

    async def void_check(
        self, target: str, rdtype: str, term: str, domain: str, offset: int
    ) -> int:
        try:
            count = await _exists(target, rdtype, self.resolver)
        except (dns.exception.DNSException, ValueError) as exc:
            self.report.add(
                Finding(
                    Severity.WARNING,
                    "dns-error",
                    f"looking up {rdtype} {target} for {term!r} failed ({describe_dns_error(exc)})",
                    "check the name servers of the target",
                    offset,
                    term,
                    domain,
                )
            )
            return 0
        if count == 0:
            self.void += 1
            severity = Severity.ERROR if self.void > VOID_LOOKUP_LIMIT else Severity.WARNING
            self.report.add(
                Finding(
                    severity,
                    "void-lookup",
                    f"{term!r}: {target} has no {rdtype} record (void lookup {self.void}; more "
                    f"than {VOID_LOOKUP_LIMIT} is a permerror)",
                    f"remove {term!r} or publish {rdtype} at {target}",
                    offset,
                    term,
                    domain,
                )
            )
        return count


async def lint_domain(
    domain: str, resolver: dns.asyncresolver.Resolver, *, public: bool = True
) -> LintReport:
    """Lint the SPF published at `domain`, following includes and redirects."""
    domain = require_domain(domain)
    report = LintReport(None, domain)
    walker = _Walker(report, resolver, public)
    record = await walker.fetch(domain, "")
    if record is None:
        if not report.findings:
            report.add(
                Finding(
                    Severity.ERROR,
                    "no-spf",
                    f"{domain} publishes no SPF record: receivers cannot tell forged mail from "
                    "yours",
                    f'publish TXT "v=spf1 ... -all" at {domain}',
                    None,
                    "",
                    domain,
                )
            )
        return report
    report.record = record
    report.lookups = await walker.walk(domain, record)
    if report.lookups > LOOKUP_LIMIT:
        chain = ", ".join(f"{d} {n}" for d, n in report.lookup_chain.items())
        report.add(
            Finding(
                Severity.ERROR,
                "too-many-lookups",
                f"{report.lookups} DNS-querying terms across the include chain (limit "
                f"{LOOKUP_LIMIT}): {chain}; evaluation ends in permerror",
                "flatten includes into ip4:/ip6: ranges or drop unused senders",
                None,
                "",
                domain,
            )
        )
    return report
