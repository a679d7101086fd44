"""`[[accepted_domains]]`: the domains a node accepts mail for, and their recipients."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mxflow.config.base import DomainType, _domain, _path, _Table
from mxflow.errors import ConfigError


@dataclass(frozen=True)
class AcceptedDomain:
    """A domain the node accepts mail for: authoritative (known recipients only) or relay."""

    domain: str
    type: DomainType = "authoritative"
    any_recipient: bool = False
    recipients: frozenset[str] = frozenset()

    def knows(self, address: str) -> bool:
        return self.any_recipient or address.lower() in self.recipients


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
