"""The mailbox host's sections: `[host]`, `[enhanced_filtering]`, the connectors'
enhanced-filtering keys, `[[mailboxes]]`, `[[aliases]]`, `[[groups]]`, `[[mail_flow_rules]]`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from mxflow.config.base import IPNetwork, _domain, _Table
from mxflow.config.domains import AcceptedDomain
from mxflow.errors import ConfigError

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
    learn_interval: float = 600.0  # Junk-folder moves teach the filter this often; 0: never
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
    learn_interval = ht.duration("learn_interval", 600.0)
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
        learn_interval=learn_interval,
        private_ranges=private,
        enhanced_filtering=ef,
        scl_bypass=frozenset(bypass),
        mailboxes=boxes,
        aliases=aliases,
        groups=groups,
        mail_flow_rules=rules,
        warnings=tuple(warnings),
    )
