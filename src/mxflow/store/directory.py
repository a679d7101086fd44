"""The host's directory: accepted domains, mailboxes, aliases and distribution groups.

One SQLite file in the node's data directory. Entries declared in the node's TOML are
copied in by `sync_config` at every start (source "config": in force at once, without
domain verification, and read-only from the command line: the TOML is their home).
Entries added with `mxflow host ...` have source "cli". A domain added that way is
*pending* with an `MS=ms########` token, as the reference host proves domain ownership,
and accepts mail only once `verify_domain` has seen that token in the domain's TXT
records (the DNS lookup is the caller's: this module never touches the network).

A mailbox may have a password (a scrypt hash, `set_password`) to log in on the
submission port; it may then send as the addresses it owns (`owned_addresses`: itself
and the aliases that lead to it).

`expand` turns one envelope recipient into the mailboxes to deliver to, recording each
alias and group it went through so the trace can write Expanded rows. `export` writes
the valid recipients in the format the gateway's `recipients = { file = "..." }` reads,
so the gateway can refuse unknown recipients at RCPT instead of bouncing them later.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

from mxflow.config import NodeConfig
from mxflow.errors import MxflowError
from mxflow.store.passwords import check_password_text, hash_password
from mxflow.store.trace import STATUS_EXPANDED, TraceStore

FILE_NAME = "directory.sqlite"
CONFIG = "config"
CLI = "cli"
PENDING = "pending"
VERIFIED = "verified"
MAX_EXPANSION = 10_000  # recipients one address may expand to
MAX_DEPTH = 10  # nested groups / alias chains

RecipientKind = Literal["mailbox", "alias", "group"]
ExpansionStatus = Literal["mailbox", "alias", "group", "unknown", "relay", "not_accepted"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS domains (
    domain TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    state TEXT NOT NULL,
    token TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL,
    added REAL NOT NULL,
    verified REAL
);
CREATE TABLE IF NOT EXISTS recipients (
    address TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    display_name TEXT NOT NULL DEFAULT '',
    target TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL,
    added REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS members (
    grp TEXT NOT NULL,
    member TEXT NOT NULL,
    PRIMARY KEY (grp, member)
);
-- submission logins (store/passwords.py hashes); a table of its own, so a directory made
-- before passwords existed gains it on open, and a config mailbox (re-copied from the TOML
-- at every start) keeps its password
CREATE TABLE IF NOT EXISTS passwords (
    address TEXT PRIMARY KEY,
    hash TEXT NOT NULL,
    changed REAL NOT NULL
);
"""


class DirectoryError(MxflowError):
    """A directory change that cannot be made; the message says why and what to do."""


@dataclass(frozen=True)
class DomainEntry:
    domain: str
    type: str  # authoritative | internal_relay
    state: str  # verified | pending
    token: str  # the TXT value that proves ownership ("" for config domains)
    source: str
    added: float
    verified: float | None

    @property
    def accepts_mail(self) -> bool:
        return self.state == VERIFIED


@dataclass(frozen=True)
class RecipientEntry:
    address: str
    kind: RecipientKind
    display_name: str = ""
    target: str = ""  # aliases: the address they forward to
    members: tuple[str, ...] = ()  # groups
    source: str = CLI


@dataclass(frozen=True)
class Expansion:
    """Where one envelope recipient goes."""

    address: str
    status: ExpansionStatus
    mailboxes: tuple[str, ...] = ()  # local mailboxes to deliver to
    external: tuple[str, ...] = ()  # addresses outside the authoritative domains: relay
    expanded: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (alias or group, what it became)


def normalise_address(address: str) -> str:
    """Lower-case `local@domain`; DirectoryError when it is not one address."""
    text = address.strip().lower()
    local, at, domain = text.rpartition("@")
    bad = any(c in text for c in " <>\r\n\0\t,;") or not text.isprintable()
    if not at or not local or "." not in domain or bad or domain.startswith("."):
        raise DirectoryError(f"{address!r} is not an address (expected local@domain)")
    return text


def normalise_domain(domain: str) -> str:
    text = domain.strip().lower().rstrip(".")
    labels = text.split(".")
    if len(labels) < 2 or not all(labels) or not all(c.isalnum() or c in "-." for c in text):
        raise DirectoryError(f"{domain!r} is not a domain name (expected e.g. contoso.com)")
    return text


def new_token() -> str:
    """An ownership token in the reference's form, `MS=ms` and eight digits."""
    return f"MS=ms{secrets.randbelow(10**8):08d}"


class Directory:
    """The directory in `path` (created on first use). Use as a context manager."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Lookups may run in a worker thread (asyncio.to_thread), not the opener's.
            self._db = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise DirectoryError(f"{self.path}: cannot open the directory ({exc})") from None

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> Directory:
        return cls(data_dir / FILE_NAME)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Directory:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------ the node's TOML

    def sync_config(
        self,
        domains: Iterable[tuple[str, str]],
        mailboxes: Iterable[tuple[str, str]] = (),
        aliases: Iterable[tuple[str, str]] = (),
        groups: Iterable[tuple[str, Sequence[str]]] = (),
    ) -> None:
        """Make the config-declared entries exactly these: (domain, type), (address, name),
        (alias, target), (group, members). They are verified and in force at once."""
        now = time.time()
        with self._db as db:
            db.execute("DELETE FROM domains WHERE source = ?", (CONFIG,))
            for domain, kind in domains:
                db.execute(
                    "INSERT OR REPLACE INTO domains VALUES (?, ?, ?, '', ?, ?, ?)",
                    (domain.strip().lower().rstrip("."), kind, VERIFIED, CONFIG, now, now),
                )
            old = [
                r[0]
                for r in db.execute("SELECT address FROM recipients WHERE source = ?", (CONFIG,))
            ]
            db.executemany("DELETE FROM members WHERE grp = ?", [(a,) for a in old])
            db.execute("DELETE FROM recipients WHERE source = ?", (CONFIG,))
            rows: list[tuple[str, str, str, str]] = [
                (normalise_address(a), "mailbox", name, "") for a, name in mailboxes
            ]
            rows += [(normalise_address(a), "alias", "", normalise_address(t)) for a, t in aliases]
            group_list = [(normalise_address(g), list(m)) for g, m in groups]
            rows += [(g, "group", "", "") for g, _ in group_list]
            for address, kind, name, target in rows:
                db.execute("DELETE FROM members WHERE grp = ?", (address,))
                db.execute(
                    "INSERT OR REPLACE INTO recipients VALUES (?, ?, ?, ?, ?, ?)",
                    (address, kind, name, target, CONFIG, now),
                )
            for group, members in group_list:
                db.executemany(
                    "INSERT OR IGNORE INTO members VALUES (?, ?)",
                    [(group, normalise_address(m)) for m in members],
                )

    # ------------------------------------------------------------ domains

    def _domain_row(self, row: tuple[str, str, str, str, str, float, float | None]) -> DomainEntry:
        return DomainEntry(*row)

    def domains(self) -> list[DomainEntry]:
        rows = self._db.execute("SELECT * FROM domains ORDER BY domain").fetchall()
        return [self._domain_row(r) for r in rows]

    def domain(self, domain: str) -> DomainEntry | None:
        row = self._db.execute(
            "SELECT * FROM domains WHERE domain = ?", (domain.strip().lower().rstrip("."),)
        ).fetchone()
        return self._domain_row(row) if row else None

    def add_domain(self, domain: str, kind: str = "authoritative") -> DomainEntry:
        """A new pending domain with a fresh token; DirectoryError if it is there already."""
        name = normalise_domain(domain)
        if kind not in ("authoritative", "internal_relay"):
            raise DirectoryError(f"domain type {kind!r}: expected authoritative or internal_relay")
        if self.domain(name) is not None:
            raise DirectoryError(f"{name} is already an accepted domain (see `host domain list`)")
        with self._db as db:
            db.execute(
                "INSERT INTO domains VALUES (?, ?, ?, ?, ?, ?, NULL)",
                (name, kind, PENDING, new_token(), CLI, time.time()),
            )
        entry = self.domain(name)
        assert entry is not None
        return entry

    def verify_domain(self, domain: str, txt_records: Sequence[str]) -> DomainEntry:
        """Mark `domain` verified when its token is among `txt_records` (the domain's TXT
        records as looked up by the caller); returns the entry, verified or still pending."""
        entry = self.domain(domain)
        if entry is None:
            raise DirectoryError(f"{domain} is not a domain here; add it first (`host domain add`)")
        if entry.state == VERIFIED:
            return entry
        wanted = entry.token.lower()
        if any(r.strip().lower() == wanted for r in txt_records):
            with self._db as db:
                db.execute(
                    "UPDATE domains SET state = ?, verified = ? WHERE domain = ?",
                    (VERIFIED, time.time(), entry.domain),
                )
            entry = self.domain(entry.domain)
            assert entry is not None
        return entry

    def accepted(self, domain: str) -> DomainEntry | None:
        """The domain if it accepts mail now (declared in the config, or verified)."""
        entry = self.domain(domain)
        return entry if entry is not None and entry.accepts_mail else None

    # ------------------------------------------------------------ recipients

    def recipient(self, address: str) -> RecipientEntry | None:
        row = self._db.execute(
            "SELECT address, kind, display_name, target, source FROM recipients WHERE address = ?",
            (address.strip().lower(),),
        ).fetchone()
        if row is None:
            return None
        members: tuple[str, ...] = ()
        if row[1] == "group":
            members = tuple(
                m
                for (m,) in self._db.execute(
                    "SELECT member FROM members WHERE grp = ? ORDER BY member", (row[0],)
                )
            )
        return RecipientEntry(row[0], row[1], row[2], row[3], members, row[4])

    def recipients(self, kind: RecipientKind | None = None) -> list[RecipientEntry]:
        query = "SELECT address FROM recipients"
        args: tuple[str, ...] = ()
        if kind is not None:
            query, args = query + " WHERE kind = ?", (kind,)
        addresses = [a for (a,) in self._db.execute(query + " ORDER BY address", args)]
        return [e for e in (self.recipient(a) for a in addresses) if e is not None]

    def _add(self, address: str, kind: RecipientKind, name: str = "", target: str = "") -> str:
        addr = normalise_address(address)
        domain = addr.rpartition("@")[2]
        if self.domain(domain) is None:
            raise DirectoryError(
                f"{domain} is not an accepted domain here; add it first (`host domain add`)"
            )
        existing = self.recipient(addr)
        if existing is not None:
            raise DirectoryError(f"{addr} already exists (a {existing.kind})")
        with self._db as db:
            db.execute(
                "INSERT INTO recipients VALUES (?, ?, ?, ?, ?, ?)",
                (addr, kind, name, target, CLI, time.time()),
            )
        return addr

    def add_mailbox(self, address: str, display_name: str = "") -> RecipientEntry:
        if any(c in display_name for c in "\r\n\0"):
            raise DirectoryError("a display name is one line of text")
        entry = self.recipient(self._add(address, "mailbox", display_name))
        assert entry is not None
        return entry

    def add_alias(self, address: str, target: str) -> RecipientEntry:
        entry = self.recipient(self._add(address, "alias", target=normalise_address(target)))
        assert entry is not None
        return entry

    def add_group(self, address: str, members: Sequence[str] = ()) -> RecipientEntry:
        clean = [normalise_address(m) for m in members]
        group = self._add(address, "group")
        self.change_members(group, add=clean)
        entry = self.recipient(group)
        assert entry is not None
        return entry

    def _editable(self, address: str, kind: RecipientKind | None = None) -> RecipientEntry:
        entry = self.recipient(address)
        if entry is None or (kind is not None and entry.kind != kind):
            raise DirectoryError(f"no {kind or 'recipient'} {address.strip().lower()!r}")
        if entry.source == CONFIG:
            raise DirectoryError(
                f"{entry.address} is declared in the node's config file; change it there"
            )
        return entry

    def change_members(
        self, group: str, *, add: Sequence[str] = (), remove: Sequence[str] = ()
    ) -> RecipientEntry:
        entry = self._editable(group, "group")
        with self._db as db:
            db.executemany(
                "INSERT OR IGNORE INTO members VALUES (?, ?)",
                [(entry.address, normalise_address(m)) for m in add],
            )
            db.executemany(
                "DELETE FROM members WHERE grp = ? AND member = ?",
                [(entry.address, m.strip().lower()) for m in remove],
            )
        updated = self.recipient(entry.address)
        assert updated is not None
        return updated

    def remove(self, address: str, kind: RecipientKind | None = None) -> RecipientEntry:
        """Remove a mailbox, alias or group added from the command line."""
        entry = self._editable(address, kind)
        with self._db as db:
            db.execute("DELETE FROM members WHERE grp = ?", (entry.address,))
            db.execute("DELETE FROM recipients WHERE address = ?", (entry.address,))
            db.execute("DELETE FROM passwords WHERE address = ?", (entry.address,))
        return entry

    # ------------------------------------------------------------ logins

    def set_password(self, address: str, password: str) -> RecipientEntry:
        """Hash and store `password` for the mailbox `address` (config or CLI mailbox)."""
        entry = self.recipient(address)
        if entry is None or entry.kind != "mailbox":
            raise DirectoryError(f"no mailbox {address.strip().lower()!r}")
        validate_password(password)
        hashed = hash_password(password)
        with self._db as db:
            db.execute(
                "INSERT OR REPLACE INTO passwords VALUES (?, ?, ?)",
                (entry.address, hashed, time.time()),
            )
        return entry

    def password_hash(self, address: str) -> str | None:
        """The stored hash of a mailbox that exists and has a password, else None."""
        row = self._db.execute(
            "SELECT p.hash FROM passwords p JOIN recipients r ON r.address = p.address"
            " WHERE p.address = ? AND r.kind = 'mailbox'",
            (address.strip().lower(),),
        ).fetchone()
        return str(row[0]) if row else None

    def owned_addresses(self, mailbox: str) -> set[str]:
        """The addresses a logged-in mailbox may send as: itself and every alias that
        leads to it (alias chains included, MAX_DEPTH deep)."""
        owned = {mailbox.strip().lower()}
        level = set(owned)
        for _ in range(MAX_DEPTH):
            marks = ",".join("?" * len(level))
            found = {
                a
                for (a,) in self._db.execute(
                    f"SELECT address FROM recipients WHERE kind = 'alias' AND target IN ({marks})",
                    tuple(level),
                )
            }
            level = found - owned
            if not level:
                break
            owned |= level
        return owned

    # ------------------------------------------------------------ lookups

    def expand(self, address: str) -> Expansion:
        """Where mail to `address` goes: its mailbox, or the mailboxes (and outside
        addresses) an alias or group leads to, nested groups included, each once."""
        addr = address.strip().lower()
        domain = self.accepted(addr.rpartition("@")[2])
        if domain is None:
            return Expansion(addr, "not_accepted")
        entry = self.recipient(addr)
        if entry is None:
            if domain.type == "internal_relay":
                return Expansion(addr, "relay", external=(addr,))
            return Expansion(addr, "unknown")
        if entry.kind == "mailbox":
            return Expansion(addr, "mailbox", mailboxes=(addr,))
        mailboxes: list[str] = []
        external: list[str] = []
        expanded: list[tuple[str, tuple[str, ...]]] = []
        seen = {addr}
        level = [entry]
        for _ in range(MAX_DEPTH):
            following: list[RecipientEntry] = []
            for item in level:
                targets = item.members if item.kind == "group" else (item.target,)
                expanded.append((item.address, targets))
                for target in targets:
                    if target in seen or len(seen) >= MAX_EXPANSION:
                        continue
                    seen.add(target)
                    found = self.recipient(target)
                    if found is None:
                        if self._is_outside(target):
                            external.append(target)
                    elif found.kind == "mailbox":
                        mailboxes.append(target)
                    else:
                        following.append(found)
            level = following
            if not level:
                break
        return Expansion(addr, entry.kind, tuple(mailboxes), tuple(external), tuple(expanded))

    def _is_outside(self, address: str) -> bool:
        """Not in an authoritative domain here: mail to it is relayed, not delivered."""
        domain = self.accepted(address.rpartition("@")[2])
        return domain is None or domain.type == "internal_relay"

    def valid_recipients(self, domain: str | None = None) -> list[str]:
        """Every address that accepts mail in the authoritative, accepting domains."""
        live = {d.domain for d in self.domains() if d.accepts_mail and d.type == "authoritative"}
        if domain is not None:
            live &= {domain.strip().lower().rstrip(".")}
        return [
            a
            for (a,) in self._db.execute("SELECT address FROM recipients ORDER BY address")
            if a.rpartition("@")[2] in live
        ]

    def export(self, path: Path, domain: str | None = None) -> int:
        """Write `valid_recipients` to `path` (atomically: tmp, fsync, rename) in the
        format of the gateway's `recipients = { file = "PATH" }`; returns the count."""
        addresses = self.valid_recipients(domain)
        text = "# valid recipients, from `mxflow host directory export`; one per line\n"
        text += "".join(f"{a}\n" for a in addresses)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return len(addresses)


def validate_password(password: str) -> None:
    """DirectoryError when `password` cannot be a login password (empty, too long, CR/LF)."""
    try:
        check_password_text(password)
    except ValueError as exc:
        raise DirectoryError(str(exc)) from None


def record_expansion(
    trace: TraceStore, queue_id: str, expansion: Expansion, *, message_id: str = ""
) -> None:
    """One trace row with status Expanded per alias or group `expansion` went through,
    naming what it became (the reference's message trace shows these rows)."""
    for source, targets in expansion.expanded:
        trace.record(
            queue_id,
            "expanded",
            message_id=message_id,
            recipient=source,
            status=STATUS_EXPANDED,
            detail="expanded to " + ", ".join(targets),
        )


def sync_config(directory: Directory, config: NodeConfig) -> None:
    """Put the entries the node's TOML declares in force in `directory` (at start, and
    again on a reload): accepted domains, mailboxes, aliases, groups."""
    host = config.host
    directory.sync_config(
        [(d.domain, d.type) for d in config.accepted_domains],
        [(m.address, m.display_name) for m in host.mailboxes],
        [(a.address, a.target) for a in host.aliases],
        [(g.address, g.members) for g in host.groups],
    )


def open_directory(config: NodeConfig) -> Directory:
    """The node's directory with the entries its TOML declares copied in (in force now)."""
    directory = Directory.in_data_dir(config.data_dir)
    sync_config(directory, config)
    return directory
