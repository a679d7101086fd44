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

import asyncio
import contextlib
import logging
import os
import secrets
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal

from mxflow.config import NodeConfig
from mxflow.errors import MxflowError
from mxflow.store.passwords import check_password_text, hash_password
from mxflow.store.schema import Component, Migration, check, migrate
from mxflow.store.sql import Cursor, Database, Row, SqliteDatabase, StoreError, open_database
from mxflow.store.trace import STATUS_EXPANDED, TraceStore

log = logging.getLogger("mxflow.store")

FILE_NAME = "directory.sqlite"
CONFIG = "config"
CLI = "cli"
PENDING = "pending"
VERIFIED = "verified"
MAX_EXPANSION = 10_000  # recipients one address may expand to
MAX_DEPTH = 10  # nested groups / alias chains
REFRESH_INTERVAL = 2.0  # seconds between a shared directory's looks at the generation

RecipientKind = Literal["mailbox", "alias", "group"]
ExpansionStatus = Literal["mailbox", "alias", "group", "unknown", "relay", "not_accepted"]

_TABLES = """
CREATE TABLE {ine}{prefix}domains (
    domain TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    state TEXT NOT NULL,
    token TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL,
    added {real} NOT NULL,
    verified {real}
);
CREATE TABLE {ine}{prefix}recipients (
    address TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    display_name TEXT NOT NULL DEFAULT '',
    target TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL,
    added {real} NOT NULL
);
CREATE TABLE {ine}{prefix}members (
    grp TEXT NOT NULL,
    member TEXT NOT NULL,
    PRIMARY KEY (grp, member)
);
CREATE TABLE {ine}{prefix}passwords (
    address TEXT PRIMARY KEY,
    hash TEXT NOT NULL,
    changed {real} NOT NULL
);
"""
# the generation moves with every change, so a node holding a copy knows to read it again
_STATE = """
CREATE TABLE directory_state (id INTEGER PRIMARY KEY, generation BIGINT NOT NULL);
INSERT INTO directory_state VALUES (1, 0);
CREATE INDEX directory_recipients_target ON directory_recipients (target);
"""
# A directory.sqlite from before the store seam has the same tables without the prefix
# (passwords came later): create what is missing under the old names, then rename.
_SQLITE_V1 = (
    _TABLES.format(ine="IF NOT EXISTS ", prefix="", real="REAL")
    + "".join(
        f"ALTER TABLE {t} RENAME TO directory_{t};\n"
        for t in ("domains", "recipients", "members", "passwords")
    )
    + _STATE
)
DIRECTORY = Component(
    "directory",
    (
        Migration(
            1,
            "accepted domains, mailboxes, aliases, groups, passwords; the generation",
            _SQLITE_V1,
            _TABLES.format(ine="", prefix="directory_", real="DOUBLE PRECISION") + _STATE,
        ),
    ),
)
_BUMP = "UPDATE directory_state SET generation = generation + 1 WHERE id = 1"


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


@dataclass
class _Snapshot:
    """Every row of a directory, read in one transaction (a shared node's copy)."""

    generation: int = -1
    domains: dict[str, DomainEntry] = field(default_factory=dict)
    recipients: dict[str, Row] = field(default_factory=dict)  # address, kind, name, target, source
    members: dict[str, tuple[str, ...]] = field(default_factory=dict)
    passwords: dict[str, str] = field(default_factory=dict)  # mailboxes only
    aliases_to: dict[str, set[str]] = field(default_factory=dict)  # target -> its aliases


@dataclass(frozen=True)
class _ConfigEntries:
    """What a node's TOML declares, normalised as stored."""

    domains: frozenset[tuple[str, str]]
    recipients: frozenset[tuple[str, str, str, str]]  # address, kind, name, target
    members: frozenset[tuple[str, str]]


_DOMAIN_COLUMNS = "domain, type, state, token, source, added, verified"
_RECIPIENT_COLUMNS = "address, kind, display_name, target, source"


class Directory:
    """The directory in a SQLite file (created on first use) or in a shared database.
    Use as a context manager; `close` closes the database when the directory opened it."""

    def __init__(self, where: str | Path | Database, *, own: bool = False) -> None:
        if isinstance(where, Database):
            self.db, self._own = where, own
            return
        self._own = True
        try:
            self.db = SqliteDatabase(Path(where))
            migrate(self.db, [DIRECTORY])
        except (OSError, StoreError, sqlite3.Error) as exc:
            with contextlib.suppress(Exception):
                self.db.close()
            raise DirectoryError(f"{where}: cannot open the directory ({exc})") from None

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> Directory:
        return cls(data_dir / FILE_NAME)

    def close(self) -> None:
        if self._own:
            self.db.close()

    def __enter__(self) -> Directory:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[Cursor]:
        """One change, committed with a new generation."""
        with self.db.transaction() as tx:
            yield tx
            tx.execute(_BUMP)
        self._changed()

    def _changed(self) -> None:
        """Called after each change made through this object (a shared copy reloads)."""

    # ------------------------------------------------------------ the node's TOML

    def sync_config(
        self,
        domains: Iterable[tuple[str, str]],
        mailboxes: Iterable[tuple[str, str]] = (),
        aliases: Iterable[tuple[str, str]] = (),
        groups: Iterable[tuple[str, Sequence[str]]] = (),
    ) -> None:
        """Make the config-declared entries exactly these: (domain, type), (address, name),
        (alias, target), (group, members). They are verified and in force at once.

        Nothing is written when they are so already: every node of a cluster syncs the
        same entries at each start, and an unchanged directory keeps its generation."""
        wanted = _config_entries(domains, mailboxes, aliases, groups)
        with self.db.transaction() as tx:
            self.db.lock(tx, "mxflow-directory-config")
            if _stored_config(tx) == wanted:
                return
            _replace_config(tx, wanted, time.time())
            tx.execute(_BUMP)
        self._changed()

    # ------------------------------------------------------------ reads

    def _domain_entry(self, name: str) -> DomainEntry | None:
        rows = self.db.query(
            f"SELECT {_DOMAIN_COLUMNS} FROM directory_domains WHERE domain = ?", (name,)
        )
        return _domain(rows[0]) if rows else None

    def _domain_entries(self) -> list[DomainEntry]:
        rows = self.db.query(f"SELECT {_DOMAIN_COLUMNS} FROM directory_domains ORDER BY domain")
        return [_domain(r) for r in rows]

    def _recipient_row(self, address: str) -> Row | None:
        rows = self.db.query(
            f"SELECT {_RECIPIENT_COLUMNS} FROM directory_recipients WHERE address = ?", (address,)
        )
        return rows[0] if rows else None

    def _members_of(self, group: str) -> tuple[str, ...]:
        rows = self.db.query(
            "SELECT member FROM directory_members WHERE grp = ? ORDER BY member", (group,)
        )
        return tuple(str(m) for (m,) in rows)

    def _addresses(self, kind: RecipientKind | None = None) -> list[str]:
        query = "SELECT address FROM directory_recipients"
        args: tuple[str, ...] = ()
        if kind is not None:
            query, args = query + " WHERE kind = ?", (kind,)
        return [str(a) for (a,) in self.db.query(query + " ORDER BY address", args)]

    def _aliases_to(self, targets: set[str]) -> set[str]:
        if not targets:
            return set()
        marks = ",".join("?" * len(targets))
        rows = self.db.query(
            "SELECT address FROM directory_recipients"
            f" WHERE kind = 'alias' AND target IN ({marks})",
            sorted(targets),
        )
        return {str(a) for (a,) in rows}

    def _hash_of(self, address: str) -> str | None:
        rows = self.db.query(
            "SELECT p.hash FROM directory_passwords p JOIN directory_recipients r"
            " ON r.address = p.address WHERE p.address = ? AND r.kind = 'mailbox'",
            (address,),
        )
        return str(rows[0][0]) if rows else None

    # ------------------------------------------------------------ domains

    def domains(self) -> list[DomainEntry]:
        return self._domain_entries()

    def domain(self, domain: str) -> DomainEntry | None:
        return self._domain_entry(domain.strip().lower().rstrip("."))

    def add_domain(self, domain: str, kind: str = "authoritative") -> DomainEntry:
        """A new pending domain with a fresh token; DirectoryError if it is there already."""
        name = normalise_domain(domain)
        if kind not in ("authoritative", "internal_relay"):
            raise DirectoryError(f"domain type {kind!r}: expected authoritative or internal_relay")
        if self.domain(name) is not None:
            raise DirectoryError(f"{name} is already an accepted domain (see `host domain list`)")
        with self._write() as tx:
            tx.execute(
                f"INSERT INTO directory_domains ({_DOMAIN_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, NULL)",
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
            with self._write() as tx:
                tx.execute(
                    "UPDATE directory_domains SET state = ?, verified = ? WHERE domain = ?",
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
        row = self._recipient_row(address.strip().lower())
        if row is None:
            return None
        address, kind, name, target, source = (str(v) for v in row)
        members = self._members_of(address) if kind == "group" else ()
        return RecipientEntry(address, _kind(kind), name, target, members, source)

    def recipients(self, kind: RecipientKind | None = None) -> list[RecipientEntry]:
        entries = (self.recipient(a) for a in self._addresses(kind))
        return [e for e in entries if e is not None]

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
        with self._write() as tx:
            tx.execute(
                "INSERT INTO directory_recipients"
                " (address, kind, display_name, target, source, added) VALUES (?, ?, ?, ?, ?, ?)",
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
        added = [normalise_address(m) for m in add]
        with self._write() as tx:
            for member in added:
                tx.execute(_ADD_MEMBER, (entry.address, member))
            for member in remove:
                tx.execute(
                    "DELETE FROM directory_members WHERE grp = ? AND member = ?",
                    (entry.address, member.strip().lower()),
                )
        updated = self.recipient(entry.address)
        assert updated is not None
        return updated

    def remove(self, address: str, kind: RecipientKind | None = None) -> RecipientEntry:
        """Remove a mailbox, alias or group added from the command line."""
        entry = self._editable(address, kind)
        with self._write() as tx:
            tx.execute("DELETE FROM directory_members WHERE grp = ?", (entry.address,))
            tx.execute("DELETE FROM directory_recipients WHERE address = ?", (entry.address,))
            tx.execute("DELETE FROM directory_passwords WHERE address = ?", (entry.address,))
        return entry

    # ------------------------------------------------------------ logins

    def set_password(self, address: str, password: str) -> RecipientEntry:
        """Hash and store `password` for the mailbox `address` (config or CLI mailbox)."""
        entry = self.recipient(address)
        if entry is None or entry.kind != "mailbox":
            raise DirectoryError(f"no mailbox {address.strip().lower()!r}")
        validate_password(password)
        hashed = hash_password(password)
        with self._write() as tx:
            tx.execute(
                "INSERT INTO directory_passwords (address, hash, changed) VALUES (?, ?, ?)"
                " ON CONFLICT (address) DO UPDATE SET hash = excluded.hash,"
                " changed = excluded.changed",
                (entry.address, hashed, time.time()),
            )
        return entry

    def password_hash(self, address: str) -> str | None:
        """The stored hash of a mailbox that exists and has a password, else None."""
        return self._hash_of(address.strip().lower())

    def owned_addresses(self, mailbox: str) -> set[str]:
        """The addresses a logged-in mailbox may send as: itself and every alias that
        leads to it (alias chains included, MAX_DEPTH deep)."""
        owned = {mailbox.strip().lower()}
        level = set(owned)
        for _ in range(MAX_DEPTH):
            level = self._aliases_to(level) - owned
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
        return [a for a in self._addresses() if a.rpartition("@")[2] in live]

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


class SharedDirectory(Directory):
    """A host node's directory in the shared database, looked up in a copy in memory.

    The SMTP screen asks the directory inline, at RCPT, where a network round trip would
    stall the event loop; so every lookup reads a snapshot of all the rows, and the node
    reads the rows again when the generation moved: within `REFRESH_INTERVAL` seconds of a
    change made on any node, at once for one made through this object. A node keeps
    answering from its copy while the database is down. Changes go to the database."""

    def __init__(self, db: Database, *, interval: float = REFRESH_INTERVAL) -> None:
        super().__init__(db)
        self.interval = interval
        self._snap = _Snapshot()
        self._polling: asyncio.Task[None] | None = None
        self._failures = 0
        self.reload()

    def reload(self) -> None:
        """Read every row in one transaction and swap the copy (callers: a thread, or a
        change made here)."""
        with self.db.transaction() as tx:
            self._snap = _read_snapshot(tx)

    async def refresh(self) -> None:
        """Read the rows again if the generation moved (one small read when it did not)."""
        ((generation,),) = await self.db.aquery(
            "SELECT generation FROM directory_state WHERE id = 1"
        )
        if int(generation) != self._snap.generation:
            await asyncio.to_thread(self.reload)

    async def start(self) -> None:
        self._polling = asyncio.get_running_loop().create_task(self._poll())

    async def stop(self) -> None:
        if self._polling is not None:
            self._polling.cancel()
            await asyncio.gather(self._polling, return_exceptions=True)
            self._polling = None

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.refresh()
                self._failures = 0
            except Exception as exc:  # the database is down, or worse: keep the copy we have
                self._failures += 1
                if self._failures & (self._failures - 1) == 0:
                    log.error("directory: refresh failed (%d in a row): %s", self._failures, exc)

    def _changed(self) -> None:
        self.reload()

    def _domain_entry(self, name: str) -> DomainEntry | None:
        return self._snap.domains.get(name)

    def _domain_entries(self) -> list[DomainEntry]:
        return [self._snap.domains[d] for d in sorted(self._snap.domains)]

    def _recipient_row(self, address: str) -> Row | None:
        return self._snap.recipients.get(address)

    def _members_of(self, group: str) -> tuple[str, ...]:
        return self._snap.members.get(group, ())

    def _addresses(self, kind: RecipientKind | None = None) -> list[str]:
        rows = self._snap.recipients
        return sorted(a for a, row in rows.items() if kind is None or row[1] == kind)

    def _aliases_to(self, targets: set[str]) -> set[str]:
        found: set[str] = set()
        for target in targets:
            found |= self._snap.aliases_to.get(target, set())
        return found

    def _hash_of(self, address: str) -> str | None:
        return self._snap.passwords.get(address)


def _domain(row: Row) -> DomainEntry:
    domain, kind, state, token, source, added, verified = row
    return DomainEntry(
        str(domain),
        str(kind),
        str(state),
        str(token),
        str(source),
        float(added),
        None if verified is None else float(verified),
    )


def _kind(kind: str) -> RecipientKind:
    if kind == "alias":
        return "alias"
    return "group" if kind == "group" else "mailbox"


def _read_snapshot(tx: Cursor) -> _Snapshot:
    """Every row of the directory (in one transaction: one consistent copy)."""
    ((generation,),) = tx.query("SELECT generation FROM directory_state WHERE id = 1")
    snap = _Snapshot(int(generation))
    for row in tx.query(f"SELECT {_DOMAIN_COLUMNS} FROM directory_domains"):
        snap.domains[str(row[0])] = _domain(row)
    for row in tx.query(f"SELECT {_RECIPIENT_COLUMNS} FROM directory_recipients"):
        snap.recipients[str(row[0])] = row
        if row[1] == "alias":
            snap.aliases_to.setdefault(str(row[3]), set()).add(str(row[0]))
    members: dict[str, list[str]] = {}
    for grp, member in tx.query("SELECT grp, member FROM directory_members ORDER BY member"):
        members.setdefault(str(grp), []).append(str(member))
    snap.members = {g: tuple(m) for g, m in members.items()}
    for address, digest in tx.query(
        "SELECT p.address, p.hash FROM directory_passwords p JOIN directory_recipients r"
        " ON r.address = p.address WHERE r.kind = 'mailbox'"
    ):
        snap.passwords[str(address)] = str(digest)
    return snap


_ADD_MEMBER = (
    "INSERT INTO directory_members (grp, member) VALUES (?, ?) ON CONFLICT (grp, member) DO NOTHING"
)
_PUT_RECIPIENT = (
    "INSERT INTO directory_recipients (address, kind, display_name, target, source, added)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (address) DO UPDATE SET kind = excluded.kind,"
    " display_name = excluded.display_name, target = excluded.target,"
    " source = excluded.source, added = excluded.added"
)
_PUT_DOMAIN = (
    f"INSERT INTO directory_domains ({_DOMAIN_COLUMNS}) VALUES (?, ?, ?, '', ?, ?, ?)"
    " ON CONFLICT (domain) DO UPDATE SET type = excluded.type, state = excluded.state,"
    " token = excluded.token, source = excluded.source, added = excluded.added,"
    " verified = excluded.verified"
)


def _config_entries(
    domains: Iterable[tuple[str, str]],
    mailboxes: Iterable[tuple[str, str]],
    aliases: Iterable[tuple[str, str]],
    groups: Iterable[tuple[str, Sequence[str]]],
) -> _ConfigEntries:
    """The TOML's entries as the directory stores them (DirectoryError for a bad address)."""
    rows = {(normalise_address(a), "mailbox", name, "") for a, name in mailboxes}
    rows |= {(normalise_address(a), "alias", "", normalise_address(t)) for a, t in aliases}
    group_list = [(normalise_address(g), list(m)) for g, m in groups]
    rows |= {(g, "group", "", "") for g, _ in group_list}
    return _ConfigEntries(
        frozenset((d.strip().lower().rstrip("."), kind) for d, kind in domains),
        frozenset(rows),
        frozenset((g, normalise_address(m)) for g, members in group_list for m in members),
    )


def _stored_config(tx: Cursor) -> _ConfigEntries:
    """The config entries the directory holds now."""
    domains = tx.query("SELECT domain, type FROM directory_domains WHERE source = ?", (CONFIG,))
    rows = tx.query(
        "SELECT address, kind, display_name, target FROM directory_recipients WHERE source = ?",
        (CONFIG,),
    )
    members = tx.query(
        "SELECT m.grp, m.member FROM directory_members m JOIN directory_recipients r"
        " ON r.address = m.grp WHERE r.source = ?",
        (CONFIG,),
    )
    return _ConfigEntries(
        frozenset((str(d), str(k)) for d, k in domains),
        frozenset((str(a), str(k), str(n), str(t)) for a, k, n, t in rows),
        frozenset((str(g), str(m)) for g, m in members),
    )


def _replace_config(tx: Cursor, wanted: _ConfigEntries, now: float) -> None:
    """Replace the config entries with `wanted` (what a CLI entry of the same name was
    becomes the config's)."""
    tx.execute("DELETE FROM directory_domains WHERE source = ?", (CONFIG,))
    for domain, kind in sorted(wanted.domains):
        tx.execute(_PUT_DOMAIN, (domain, kind, VERIFIED, CONFIG, now, now))
    old = tx.query("SELECT address FROM directory_recipients WHERE source = ?", (CONFIG,))
    for (address,) in old:
        tx.execute("DELETE FROM directory_members WHERE grp = ?", (address,))
    tx.execute("DELETE FROM directory_recipients WHERE source = ?", (CONFIG,))
    for address, kind, name, target in sorted(wanted.recipients):
        tx.execute("DELETE FROM directory_members WHERE grp = ?", (address,))
        tx.execute(_PUT_RECIPIENT, (address, kind, name, target, CONFIG, now))
    for group, member in sorted(wanted.members):
        tx.execute(_ADD_MEMBER, (group, member))


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
    """The node's directory with the entries its TOML declares copied in (in force now):
    its SQLite file, or the shared database's (which must be at this version's schema)."""
    if config.shared_database is None:
        directory = Directory.in_data_dir(config.data_dir)
    else:
        db = open_database(config.shared_database)
        try:
            check(db, [DIRECTORY], where=f" at {getattr(db, 'display', db.url)}")
        except BaseException:
            db.close()
            raise
        directory = Directory(db, own=True)
    sync_config(directory, config)
    return directory
