"""The docs tell the truth: every `mxflow` command shown in README.md and docs/*.md exists
with the options shown, and the ones that can run here do, with the documented exit status.

A documented line is a synopsis when it has placeholders (FILE, ID, `[...]`, `a|b`,
`...`): its subcommands and options are checked against the real parser. Every other line
is run as written, from a directory where `examples/` is the repository's and `var/` is
fresh: `serve` lines are started for real (the sink and gateway of the README, on the
ports the examples name), a message is relayed through them, the documented `queue list`
runs against the running gateway, and SIGTERM must end each with status 0.
"""

from __future__ import annotations

import argparse
import fcntl
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mxflow.cli import build_parser
from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Exit statuses the docs give for commands that do not exit 0 (docs/operations.md).
EXPECTED_STATUS = {
    # the reference's malformed record: errors found -> 1
    "mxflow spf lint 'v=spf1 ipv4: 10.10.10.1 include:spf.protection.outlook.com -all'": 1,
}
_PLACEHOLDER = re.compile(r"(^|\s)([A-Z][A-Z_]*|[A-Z]:?)(\.\.\.)?($|\s)|\.\.\.|some/|/etc/|/var/")


def documented_commands() -> Iterator[tuple[str, str]]:
    """(where, command) for every `mxflow ...` line in a code block of the docs."""
    for path in DOCS:
        fenced = False
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.lstrip().startswith("```"):
                fenced = not fenced
                continue
            if not (fenced or line.startswith("    ")) or not line.strip().startswith("mxflow "):
                continue
            command = re.split(r"\s{2,}#", line.strip())[0].strip()
            yield f"{path.relative_to(ROOT)}:{number}", command


COMMANDS = list(documented_commands())


def is_synopsis(command: str) -> bool:
    outside_quotes = re.sub(r"'[^']*'", "''", command)
    return bool(_PLACEHOLDER.search(outside_quotes)) or any(c in outside_quotes for c in "[]|()")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}


@pytest.mark.parametrize(("where", "command"), COMMANDS, ids=[w for w, _ in COMMANDS])
def test_documented_commands_and_options_exist(where: str, command: str) -> None:
    parser = build_parser()
    options = _options(parser)
    words = re.sub(r"'[^']*'", "ARG", command).split()[1:]
    for word in words:
        parts = [p for p in re.split(r"[|\[\]()]", word) if p]
        choices = _subparsers(parser)
        names = [p for p in parts if re.fullmatch(r"[a-z][a-z0-9-]*", p)]
        for part in parts:
            if part.startswith("-"):
                assert part.split("=")[0] in options, f"{where}: {part} is not an option"
        if choices and names:
            for name in names:  # `sign|verify`: every alternative must exist
                assert name in choices, f"{where}: no subcommand {name!r} in {list(choices)}"
            parser = choices[names[0]]
            options |= _options(parser)


def test_the_docs_show_commands_that_run() -> None:
    runnable = [c for _, c in COMMANDS if not is_synopsis(c)]
    assert any(c.startswith("mxflow serve ") for c in runnable)
    assert any(c.startswith("mxflow queue ") for c in runnable)
    assert any(c.startswith("mxflow config check ") for c in runnable)


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mxflow", *argv[1:]],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def _listening(address: str, port: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited {proc.returncode}: {proc.communicate()[1]}")
        try:
            with socket.create_connection((address, port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {address}:{port}")


def _relay_one(address: str, port: int) -> None:
    import smtplib

    with smtplib.SMTP(address, port, timeout=30) as smtp:
        smtp.sendmail(
            "alice@fabrikam.test",
            ["bob@contoso.com"],
            b"From: alice@fabrikam.test\r\nTo: bob@contoso.com\r\nSubject: docs\r\n\r\nhi\r\n",
        )


def test_documented_commands_run_as_documented(tmp_path: Path) -> None:
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    runnable = [c for _, c in COMMANDS if not is_synopsis(c)]
    serve = list(dict.fromkeys(c for c in runnable if c.startswith("mxflow serve ")))
    others = list(dict.fromkeys(c for c in runnable if c not in serve))
    # examples/*.toml use fixed ports on 127.0.0.1: one test at a time on this machine
    with open(Path("/tmp") / "mxflow-docs-test.lock", "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        for port in (2525, 2526):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    message = f"127.0.0.1:{port} is taken by another program"
                    if IN_CI:
                        pytest.fail(message)
                    pytest.skip(message)
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "mxflow", *shlex.split(c)[1:]],
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for c in serve
        ]
        try:
            for proc, port in zip(procs, (2526, 2525), strict=False):
                _listening("127.0.0.1", port, proc)
            _relay_one("127.0.0.1", 2525)
            for command in others:
                result = _run(shlex.split(command), tmp_path)
                expected = EXPECTED_STATUS.get(command, 0)
                assert result.returncode == expected, f"{command}: {result.stderr}"
                assert "Traceback" not in result.stderr
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            outcomes = [(p.wait(timeout=60), p.communicate()[1]) for p in procs]
    for (status, err), command in zip(outcomes, serve, strict=True):
        assert status == 0, f"{command}: {err}"
    maildir = tmp_path / "var" / "sink" / "maildir"
    assert any(maildir.rglob("new/*")) or any(maildir.rglob("cur/*")), "not relayed"


def test_sink_example_promises_no_lock_down() -> None:
    """A comment must not promise protection the code does not enforce."""
    text = (ROOT / "examples" / "sink.toml").read_text()
    comments = " ".join(line for line in text.splitlines() if line.startswith("#"))
    assert "Only the gateway may" not in comments
    assert "does NOT lock the sink down" in comments


async def test_sink_connector_really_does_not_lock_down(tmp_path: Path) -> None:
    """What the corrected comment says: a client that is not the gateway still delivers."""
    import tomllib

    from mxflow.config import parse_config
    from mxflow.roles.build import build_node
    from tests.conftest import unique_loopback
    from tests.engine.helpers import RawSmtp, message, stuffed

    data = tomllib.loads((ROOT / "examples" / "sink.toml").read_text())
    address = unique_loopback()
    data["listeners"][0].update(address=address, port=0, tls="none")
    config = parse_config(data, "sink.toml", data_dir=tmp_path)
    assert config.inbound_connectors[0].from_networks[0].compressed == "127.0.0.1/32"
    async with build_node(config) as sink:
        stranger = unique_loopback()  # not 127.0.0.1, the connector's only network
        client = await RawSmtp.open(sink.address, sink.port, source=stranger)
        await client.cmd("EHLO stranger.test")
        code, _ = await client.mail("x@fabrikam.test", ["bob@contoso.com"], stuffed(message("s")))
        await client.close()
    assert code == 250
