"""Mail flow rules (the reference host's transport rules): conditions -> actions, in order.

This is how an admin honours a third party's verdict: "mail from the gateway's connector
with `X-Spam-Flag: YES` -> SCL 6". Rules come from `[[mail_flow_rules]]` (parsed in
`mxflow.config` into `MailFlowRule`) and are evaluated lowest priority number first. Every
condition a rule names must hold; a rule with none matches every message. Matching is
linear on attacker-written headers: a header pattern is a case-insensitive glob whose only
wildcard is `*`, matched without regular expressions, against at most `MAX_VALUE`
characters of the value.

`evaluate_rules` only decides (a `RuleDecision`); the caller applies it: the SCL to the
verdict, `apply_header_changes` to the message, a reject as `550 5.7.1 <text>` at DATA,
a redirect by replacing the recipients, a quarantine through the quarantine sink. An SCL
condition sees the SCL as set by earlier rules. A reject ends evaluation; so does a
matching rule with `stop = true`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from mxflow.config import MailFlowRule
from mxflow.intake.headerfields import iter_fields, rewrite_headers

MAX_VALUE = 8 * 1024


@dataclass(frozen=True)
class RuleInput:
    """What the rules look at. `sender_ip` is the original sender when enhanced filtering
    acted (`SkipListResult.sender_ip`), the connecting client otherwise."""

    headers: bytes  # the raw header section (top = newest)
    sender_ip: str
    mail_from: str = ""
    rcpt_tos: Sequence[str] = ()
    connector: str | None = None
    scl: int = 0


@dataclass
class RuleDecision:
    """What the matching rules decided, in the order they matched."""

    matched: list[str] = field(default_factory=list)  # rule names
    scl: int | None = None  # None: the rules left the SCL alone
    add_headers: list[tuple[str, str]] = field(default_factory=list)
    remove_headers: list[str] = field(default_factory=list)  # lower-case names
    reject: str | None = None  # reply text for "550 5.7.1 <text>"
    redirect: list[str] = field(default_factory=list)  # replaces the recipients
    quarantine: bool = False
    stopped_by: str | None = None

    @property
    def changed(self) -> bool:
        return bool(self.matched)


def glob_match(pattern: str, text: str) -> bool:
    """`*`-only glob, both already lower-cased: greedy leftmost search, no backtracking."""
    pieces = pattern.split("*")
    if len(pieces) == 1:
        return text == pattern
    head, *middle, tail = pieces
    if not text.startswith(head) or len(text) < len(head) + len(tail):
        return False
    pos, end = len(head), len(text) - len(tail)
    for piece in middle:
        found = text.find(piece, pos, end)
        if found < 0:
            return False
        pos = found + len(piece)
    return text.endswith(tail)


def _domain_of(address: str) -> str:
    return address.rpartition("@")[2].strip().rstrip(".>").lower()


def _in_domains(domain: str, domains: Sequence[str]) -> bool:
    return bool(domain) and any(domain == d or domain.endswith("." + d) for d in domains)


def _from_domain(headers: bytes, mail_from: str) -> str:
    """The From: header's domain (what the reference's "sender domain is" tests), else
    the envelope sender's."""
    for name, value in iter_fields(headers):
        if name.lower() == "from":
            text = value[:MAX_VALUE]
            start, end = text.rfind("<"), text.rfind(">")
            address = text[start + 1 : end] if 0 <= start < end else text
            if "@" in address:
                return _domain_of(address.split(",")[0])
            break
    return _domain_of(mail_from) if "@" in mail_from else ""


def _header_values(headers: bytes, name: str) -> Iterator[str]:
    wanted = name.lower()
    return (v[:MAX_VALUE].lower() for n, v in iter_fields(headers) if n.lower() == wanted)


def _scl_holds(op: str, scl: int, value: int) -> bool:
    return {
        "<": scl < value,
        "<=": scl <= value,
        "=": scl == value,
        ">=": scl >= value,
        ">": scl > value,
    }[op]


def rule_matches(rule: MailFlowRule, inp: RuleInput, scl: int) -> bool:
    """Whether every condition `rule` names holds for `inp` (with the current `scl`)."""
    if rule.connectors and inp.connector not in rule.connectors:
        return False
    if rule.scl_op is not None and not _scl_holds(rule.scl_op, scl, rule.scl_value):
        return False
    if rule.sender_ips:
        try:
            ip = ipaddress.ip_address(inp.sender_ip)
        except ValueError:
            return False
        if not any(ip in net for net in rule.sender_ips):
            return False
    if rule.recipient_domains and not any(
        _in_domains(_domain_of(r), rule.recipient_domains) for r in inp.rcpt_tos
    ):
        return False
    if rule.sender_domains and not _in_domains(
        _from_domain(inp.headers, inp.mail_from), rule.sender_domains
    ):
        return False
    if rule.header is not None:
        pattern = rule.header_pattern
        return any(glob_match(pattern, v) for v in _header_values(inp.headers, rule.header))
    return True


def _apply(rule: MailFlowRule, decision: RuleDecision) -> None:
    decision.matched.append(rule.name)
    if rule.set_scl is not None:
        decision.scl = rule.set_scl
    decision.add_headers.extend(rule.add_headers)
    decision.remove_headers.extend(
        h for h in rule.remove_headers if h not in decision.remove_headers
    )
    if rule.redirect is not None and rule.redirect not in decision.redirect:
        decision.redirect.append(rule.redirect)
    decision.quarantine = decision.quarantine or rule.quarantine
    if rule.reject is not None:
        decision.reject = rule.reject


def evaluate_rules(rules: Sequence[MailFlowRule], inp: RuleInput) -> RuleDecision:
    """Run `rules` (lowest priority number first) over one message; nothing is changed."""
    decision = RuleDecision()
    scl = inp.scl
    for rule in sorted(rules, key=lambda r: r.priority):
        if not rule_matches(rule, inp, scl):
            continue
        _apply(rule, decision)
        if decision.scl is not None:
            scl = decision.scl
        if rule.reject is not None or rule.stop:
            decision.stopped_by = rule.name
            break
    return decision


def describe_actions(rule: MailFlowRule) -> list[str]:
    """The actions of `rule` in words, for `mxflow host rule test`."""
    words: list[str] = []
    if rule.set_scl is not None:
        words.append(f"set SCL {rule.set_scl}")
    words += [f"add header {n}: {v}" for n, v in rule.add_headers]
    words += [f"remove header {n}" for n in rule.remove_headers]
    if rule.reject is not None:
        words.append(f"reject: 550 5.7.1 {rule.reject}")
    if rule.redirect is not None:
        words.append(f"redirect to {rule.redirect}")
    if rule.quarantine:
        words.append("quarantine")
    if rule.stop:
        words.append("stop processing more rules")
    return words


def apply_header_changes(raw: bytes, decision: RuleDecision) -> bytes:
    """`raw` with the decided header fields removed (every instance, folded lines too)
    and the added ones prepended. The body is untouched; one pass over the headers."""
    return rewrite_headers(raw, remove=decision.remove_headers, prepend=decision.add_headers)
