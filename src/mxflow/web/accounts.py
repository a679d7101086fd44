"""Accounts and sessions of the admin UI, in one SQLite file (`[web] users_db`).

Passwords are hashed with scrypt (hashlib; n=2**14, r=8, p=1, a 16-byte salt per user) so
a stolen file does not give them away. A session is a random token in a cookie; the store
keeps only its SHA-256, with a CSRF token, an absolute expiry and an idle timeout. Failed
logins are throttled per client address and per account name (5 in 15 minutes), in memory:
the throttle only needs to outlast a guessing run, not a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from mxflow.errors import MxflowError

ROLES = ("admin", "domain-admin")
_N, _R, _P = 2**14, 8, 1
MAX_FAILURES = 5
FAILURE_WINDOW = 900.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    password TEXT NOT NULL,
    role TEXT NOT NULL,
    domains TEXT NOT NULL DEFAULT '[]',
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created REAL NOT NULL,
    seen REAL NOT NULL,
    expires REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS digest_sent (
    qid TEXT NOT NULL,
    recipient TEXT NOT NULL,
    ts REAL NOT NULL,
    PRIMARY KEY (qid, recipient)
);
CREATE TABLE IF NOT EXISTS blocked_senders (
    address TEXT PRIMARY KEY,
    by_user TEXT NOT NULL,
    ts REAL NOT NULL
);
"""


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${salt.hex()}${key.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, key = stored.split("$")
        got = hashlib.scrypt(
            password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=32
        )
    except (ValueError, TypeError):
        return False
    return kind == "scrypt" and hmac.compare_digest(got.hex(), key)


# checked against when the name is unknown, so a wrong name costs as long as a wrong password
_DUMMY_HASH = hash_password(secrets.token_hex(8))


@dataclass(frozen=True)
class User:
    name: str
    role: str
    domains: tuple[str, ...]

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def scope(self) -> frozenset[str] | None:
        """The domains this user may see; None: all of them."""
        return None if self.is_admin else frozenset(self.domains)


@dataclass(frozen=True)
class Session:
    user: User
    csrf: str
    expires: float


class Throttle:
    """Failed logins per key (client IP, account name) in a sliding window."""

    def __init__(self, limit: int = MAX_FAILURES, window: float = FAILURE_WINDOW) -> None:
        self.limit = limit
        self.window = window
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, *keys: str, now: float | None = None) -> float:
        """Seconds until these keys may try again (0: now)."""
        now = time.time() if now is None else now
        wait = 0.0
        with self._lock:
            for key in keys:
                recent = [t for t in self._failures.get(key, []) if t > now - self.window]
                self._failures[key] = recent
                if len(recent) >= self.limit:
                    wait = max(wait, recent[0] + self.window - now)
        return wait

    def failed(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._failures.setdefault(key, []).append(time.time())

    def succeeded(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)


def _sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Accounts:
    """Users, sessions and the UI's blocked senders in `path`."""

    def __init__(self, path: Path, *, lifetime: float = 8 * 3600.0, idle: float = 3600.0) -> None:
        self.path = path
        self.lifetime = lifetime
        self.idle = idle
        self.throttle = Throttle()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with self._db() as db:
                db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise MxflowError(f"{path}: cannot open the web account store ({exc})") from None

    def _db(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30.0)
        db.execute("PRAGMA journal_mode=WAL")
        return db

    # ------------------------------------------------------------------ users

    def add_user(self, name: str, password: str, role: str, domains: list[str]) -> None:
        """Create or replace an account."""
        if role not in ROLES:
            raise MxflowError(f"--role {role}: expected one of {', '.join(ROLES)}")
        if role == "domain-admin" and not domains:
            raise MxflowError("a domain administrator needs at least one --domain")
        if not name or len(password) < 8:
            raise MxflowError("a user needs a name and a password of at least 8 characters")
        row = (name, hash_password(password), role, json.dumps(sorted(domains)), time.time())
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO users VALUES (?,?,?,?,?)", row)
            db.execute("DELETE FROM sessions WHERE name = ?", (name,))  # a new password logs out

    def user(self, name: str) -> User | None:
        with self._db() as db:
            row = db.execute("SELECT role, domains FROM users WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        return User(name, str(row[0]), tuple(json.loads(row[1])))

    def users(self) -> list[User]:
        with self._db() as db:
            rows = db.execute("SELECT name FROM users ORDER BY name").fetchall()
        return [u for (name,) in rows if (u := self.user(name)) is not None]

    def authenticate(self, name: str, password: str) -> User | None:
        with self._db() as db:
            row = db.execute("SELECT password FROM users WHERE name = ?", (name,)).fetchone()
        if row is None:
            verify_password(password, _DUMMY_HASH)
            return None
        return self.user(name) if verify_password(password, str(row[0])) else None

    # --------------------------------------------------------------- sessions

    def open_session(self, user: User) -> tuple[str, Session]:
        """A new session for `user`: (the cookie's token, the session)."""
        token = secrets.token_urlsafe(32)
        now = time.time()
        session = Session(user, secrets.token_urlsafe(32), now + self.lifetime)
        with self._db() as db:
            db.execute("DELETE FROM sessions WHERE expires < ? OR seen < ?", (now, now - self.idle))
            db.execute(
                "INSERT INTO sessions VALUES (?,?,?,?,?,?)",
                (_sha(token), user.name, session.csrf, now, now, session.expires),
            )
        return token, session

    def session(self, token: str) -> Session | None:
        """The live session of a cookie's token (and mark it used), or None."""
        if not token:
            return None
        now = time.time()
        with self._db() as db:
            row = db.execute(
                "SELECT name, csrf, seen, expires FROM sessions WHERE token_hash = ?",
                (_sha(token),),
            ).fetchone()
            if row is None or row[3] < now or row[2] < now - self.idle:
                return None
            db.execute("UPDATE sessions SET seen = ? WHERE token_hash = ?", (now, _sha(token)))
        user = self.user(str(row[0]))
        return None if user is None else Session(user, str(row[1]), float(row[3]))

    def close_session(self, token: str) -> None:
        with self._db() as db:
            db.execute("DELETE FROM sessions WHERE token_hash = ?", (_sha(token),))

    # -------------------------------------------------------- blocked senders

    def block_sender(self, address: str, by: str) -> None:
        with self._db() as db:
            db.execute(
                "INSERT OR REPLACE INTO blocked_senders VALUES (?,?,?)",
                (address.lower(), by, time.time()),
            )

    def blocked_senders(self) -> list[tuple[str, str, float]]:
        with self._db() as db:
            rows = db.execute("SELECT address, by_user, ts FROM blocked_senders ORDER BY ts DESC")
            return [(str(a), str(b), float(t)) for a, b, t in rows.fetchall()]

    # ---------------------------------------------------------------- digests

    def signing_key(self) -> bytes:
        """The key that signs digest links (made on first use, kept in this store)."""
        with self._db() as db:
            db.execute(
                "INSERT OR IGNORE INTO settings VALUES ('signing_key', ?)",
                (secrets.token_hex(32),),
            )
            row = db.execute("SELECT value FROM settings WHERE name = 'signing_key'").fetchone()
        return bytes.fromhex(str(row[0]))

    def digested(self, qid: str, recipient: str) -> bool:
        with self._db() as db:
            row = db.execute(
                "SELECT 1 FROM digest_sent WHERE qid = ? AND recipient = ?",
                (qid, recipient.lower()),
            ).fetchone()
        return row is not None

    def mark_digested(self, qid: str, recipient: str) -> None:
        with self._db() as db:
            db.execute(
                "INSERT OR REPLACE INTO digest_sent VALUES (?,?,?)",
                (qid, recipient.lower(), time.time()),
            )
