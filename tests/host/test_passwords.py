"""Submission passwords: scrypt hashes in the directory (old directories gain the table),
what a user owns, the throttle's counting, and `mxflow host mailbox add|passwd` reading
the password from stdin (never from argv)."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from pathlib import Path

import pytest

from mxflow.intake.login import DirectoryLogins
from mxflow.intake.throttle import LoginThrottle
from mxflow.smtp.protocol import Session
from mxflow.smtp.sasl import AuthOutcome, Credentials
from mxflow.store.directory import Directory, DirectoryError
from mxflow.store.passwords import hash_password, verify_password
from tests.clirun import ROOT, assert_one_line_error
from tests.host.helpers import write_host_toml

OLD_SCHEMA = """
CREATE TABLE domains (domain TEXT PRIMARY KEY, type TEXT NOT NULL, state TEXT NOT NULL,
    token TEXT NOT NULL DEFAULT '', source TEXT NOT NULL, added REAL NOT NULL, verified REAL);
CREATE TABLE recipients (address TEXT PRIMARY KEY, kind TEXT NOT NULL,
    display_name TEXT NOT NULL DEFAULT '', target TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL, added REAL NOT NULL);
CREATE TABLE members (grp TEXT NOT NULL, member TEXT NOT NULL, PRIMARY KEY (grp, member));
INSERT INTO domains VALUES ('contoso.com', 'authoritative', 'verified', '', 'cli', 0, 0);
INSERT INTO recipients VALUES ('bob@contoso.com', 'mailbox', 'Bob', '', 'cli', 0);
"""


def test_hashes_are_salted_scrypt_and_verify() -> None:
    one, two = hash_password("hunter2"), hash_password("hunter2")
    assert one.startswith("scrypt$16384$8$1$") and one != two  # a salt per hash
    assert verify_password(one, "hunter2") and not verify_password(one, "hunter3")
    assert not verify_password(None, "hunter2")  # an unknown user: same cost, no match
    assert not verify_password("scrypt$99999999$8$1$AAAA$AAAA", "x")  # absurd cost refused
    assert not verify_password(one, "x" * 10_000)
    for bad in ("", "a\r\nb", "x" * 513):
        with pytest.raises(ValueError):
            hash_password(bad)


def test_an_old_directory_gains_passwords_and_owned_addresses(tmp_path: Path) -> None:
    path = tmp_path / "directory.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(OLD_SCHEMA)
    with Directory(path) as directory:
        assert directory.password_hash("bob@contoso.com") is None
        directory.set_password("Bob@Contoso.com", "s3cret")
        assert verify_password(directory.password_hash("bob@contoso.com"), "s3cret")
        directory.add_alias("robert@contoso.com", "bob@contoso.com")
        directory.add_alias("bobby@contoso.com", "robert@contoso.com")  # a chain
        directory.add_mailbox("alice@contoso.com")
        directory.add_alias("ally@contoso.com", "alice@contoso.com")
        assert directory.owned_addresses("bob@contoso.com") == {
            "bob@contoso.com",
            "robert@contoso.com",
            "bobby@contoso.com",
        }
        with pytest.raises(DirectoryError):
            directory.set_password("robert@contoso.com", "x")  # an alias has no login
        directory.remove("alice@contoso.com")
        assert directory.password_hash("alice@contoso.com") is None


def test_the_throttle_counts_per_address_and_account() -> None:
    now = [0.0]
    throttle = LoginThrottle(max_failures=10, window=900, clock=lambda: now[0])
    for i in range(10):
        assert not throttle.blocked("127.0.0.1", "bob@contoso.com")
        throttle.failed("127.0.0.1", f"user{i}@contoso.com")
    assert throttle.blocked("127.0.0.1")  # the address, whatever the account
    assert not throttle.blocked("127.0.0.2", "user1@contoso.com")
    for _ in range(10):
        throttle.failed(f"2001:db8::{_ + 1}", "bob@contoso.com")  # one /64
    assert throttle.blocked("2001:db8::ffff") and throttle.blocked("127.9.9.9", "bob@contoso.com")
    throttle.succeeded("bob@contoso.com")
    assert not throttle.blocked("127.9.9.9", "bob@contoso.com")
    now[0] = 901.0  # the window passed
    assert not throttle.blocked("127.0.0.1")


async def run_cli(stdin: bytes, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mxflow",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_mailbox_add_and_passwd_read_the_password_from_stdin(tmp_path: Path) -> None:
    toml = write_host_toml(tmp_path)
    data = tmp_path / "data"
    base = ("--config", str(toml), "--data-dir", str(data))
    code, out, err = await run_cli(
        b"first pass\n", "host", "mailbox", "add", "carol@contoso.com", "--password-stdin", *base
    )
    assert code == 0 and "password set for carol@contoso.com" in out, err
    # a config mailbox gets its password here too (the TOML holds no secrets)
    code, out, err = await run_cli(
        b"bobs pass\r\n", "host", "mailbox", "passwd", "bob@contoso.com", "--password-stdin", *base
    )
    assert code == 0, err
    # no terminal and no --password-stdin: refused, nothing read from argv
    code, _, err = await run_cli(b"", "host", "mailbox", "passwd", "carol@contoso.com", *base)
    assert_one_line_error(code, err, "--password-stdin")
    code, _, err = await run_cli(b"\n", "host", "mailbox", "add", "dan@contoso.com",
                                 "--password-stdin", *base)  # fmt: skip
    assert_one_line_error(code, err, "empty")
    code, out, err = await run_cli(b"", "host", "mailbox", "add", "erin@contoso.com", *base)
    assert code == 0 and "password set" not in out, err  # added without a login
    with Directory(data / "directory.sqlite") as directory:
        assert verify_password(directory.password_hash("carol@contoso.com"), "first pass")
        assert verify_password(directory.password_hash("bob@contoso.com"), "bobs pass")
        assert directory.recipient("dan@contoso.com") is None  # all or nothing
        assert directory.password_hash("erin@contoso.com") is None


async def test_parallel_guesses_are_throttled_too(tmp_path: Path) -> None:
    """Thirty guesses at once from one address: about ten are hashed, the rest refused."""
    with Directory(tmp_path / "directory.sqlite") as directory:
        directory.sync_config([("contoso.com", "authoritative")], [("bob@contoso.com", "")])
        directory.set_password("bob@contoso.com", "right")
        logins = DirectoryLogins(directory)
        session = Session("127.66.0.1", 4000)
        guesses = [Credentials("bob@contoso.com", f"guess{i}") for i in range(30)]
        results = await asyncio.gather(*(logins.verify(session, c) for c in guesses))
        outcomes = [outcome for outcome, _ in results]
        assert outcomes.count(AuthOutcome.BAD) <= 11
        assert outcomes.count(AuthOutcome.THROTTLED) >= 19
        ok = await logins.verify(
            Session("127.66.0.2", 4000), Credentials("bob@contoso.com", "right")
        )
        assert ok[0] is AuthOutcome.THROTTLED  # the account, from anywhere
