"""Exit statuses that mean something, `--json` as JSON Lines beside the usual output, one
default DNS server, and no traceback when the reader of a pipe goes away."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mxflow.commands import DEFAULT_RESOLVER, EXIT_STATUS_HELP
from tests.auth.zones import serve_txt
from tests.clirun import ROOT, mxflow

MESSAGE = (
    b"From: Alice <alice@contoso.com>\r\nTo: bob@fabrikam.example\r\nSubject: hi\r\n\r\nHello.\r\n"
)
MXFLOW = [sys.executable, "-m", "mxflow"]
RECORDS = {
    "contoso.com": "v=spf1 ip4:127.77.0.1 -all",
    "_dmarc.contoso.com": "v=DMARC1; p=reject",
}


async def auth_check(message: Path, ip: str, resolver: str, *extra: str) -> tuple[int, str, str]:
    return await mxflow(
        "auth", "check", str(message), "--ip", ip, "--helo", "h.example",
        "--mail-from", "alice@contoso.com", "--resolver", resolver,
        "--authserv-id", "mx.host.example", *extra,
    )  # fmt: skip


async def test_auth_check_exit_status_and_json(tmp_path: Path) -> None:
    message = tmp_path / "m.eml"
    message.write_bytes(MESSAGE)
    async with serve_txt(RECORDS) as server:
        where = f"{server.host}:{server.port}"
        spoof = await auth_check(message, "127.66.0.9", where)
        good = await auth_check(message, "127.77.0.1", where)
        spoof_json = await auth_check(message, "127.66.0.9", where, "--json")
    assert spoof[0] == 1 and "compauth=fail" in spoof[1]  # today's output stays
    assert spoof[1].startswith("Authentication-Results: mx.host.example;")
    assert good[0] == 0 and "compauth=pass" in good[1], good
    assert spoof_json[0] == 1
    (line,) = spoof_json[1].splitlines()
    record = json.loads(line)
    assert record["compauth"]["result"] == "fail"
    assert record["spf"]["result"] == "fail" and record["dmarc"]["result"] == "fail"
    assert record["authentication_results"].startswith("mx.host.example;")


async def test_spf_eval_json_keeps_the_first_word_and_status() -> None:
    async with serve_txt(RECORDS) as server:
        where = f"{server.host}:{server.port}"
        args = ["spf", "eval", "--sender", "alice@contoso.com", "--resolver", where]
        text = await mxflow(*args, "--ip", "127.66.0.9")
        as_json = await mxflow(*args, "--ip", "127.66.0.9", "--json")
        passing = await mxflow(*args, "--ip", "127.77.0.1", "--json")
    assert text[0] == 1 and text[1].split()[0] == "fail"
    assert as_json[0] == 1 and json.loads(as_json[1])["result"] == "fail"
    assert passing[0] == 0 and json.loads(passing[1])["result"] == "pass"


def test_dns_commands_agree_on_their_default_server() -> None:
    for args in (
        ["dns", "serve"],
        ["dns", "check"],
        ["spf", "eval"],
        ["spf", "lint"],
        ["dkim", "verify"],
        ["auth", "check"],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "mxflow", *args, "--help"],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert result.returncode == 0
        assert DEFAULT_RESOLVER in " ".join(result.stdout.split()), args


def test_exit_statuses_are_in_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mxflow", "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert EXIT_STATUS_HELP in result.stdout


def test_no_traceback_when_the_reader_goes_away() -> None:
    proc = subprocess.Popen(
        [*MXFLOW, "dns", "plan", "--topology", str(ROOT / "examples" / "topology.toml")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # like `| head` that has read its fill before we write
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert err == ""


def test_dns_plan_json_is_one_record_per_line() -> None:
    result = subprocess.run(
        [*MXFLOW, "dns", "plan", "--topology", str(ROOT / "examples" / "topology.toml"), "--json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) > 3
    assert {"name", "type", "ttl", "value", "purpose"} <= set(records[0])
    assert any(r["type"] == "MX" for r in records)


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MXFLOW, *args], capture_output=True, text=True, check=False, timeout=60, cwd=cwd
    )


def test_config_check_and_dkim_keygen_json(tmp_path: Path) -> None:
    gateway = str(ROOT / "examples" / "gateway.toml")
    check = _cli("config", "check", gateway, "--data-dir", str(tmp_path), "--json")
    assert check.returncode == 0, check.stderr
    summary = json.loads(check.stdout)
    assert summary["role"] == "gateway" and summary["listeners"] == ["127.0.0.1:2525"]
    assert summary["warnings"] == []
    args = ["--domain", "contoso.com", "--selector", "s1", "--ed25519", "--json"]
    keygen = _cli("dkim", "keygen", *args, cwd=tmp_path)
    assert keygen.returncode == 0, keygen.stderr
    record = json.loads(keygen.stdout)
    assert record["name"] == "s1._domainkey.contoso.com"
    assert record["value"].startswith("v=DKIM1; k=ed25519; p=")
    assert (tmp_path / "s1.contoso.com.key").exists()
