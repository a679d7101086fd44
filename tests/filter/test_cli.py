"""`mxflow filter` and `mxflow quarantine` as an administrator runs them (real processes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mxflow.mail import MessageContext
from mxflow.store.quarantine import Quarantine
from mxflow.store.trace import TraceStore
from tests import clirun
from tests.dnsserver import serve_zone_text
from tests.filter.helpers import SA_NICE, SA_SPAM, SmtpSink, message
from tests.filter.test_quarantine import SPAM_VERDICT

BLOCKLIST = """\
$ORIGIN bl.lab.test.
9.0.66.127  IN A   127.0.0.2
"""


def mxflow(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mxflow", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def node_config(tmp_path: Path, filter_section: str = "", port: int = 2525) -> Path:
    path = tmp_path / "gw.toml"
    path.write_text(
        f"""
[node]
name = "gw"
data_dir = "{tmp_path / "data"}"

[[listeners]]
address = "127.0.0.1"
port = {port}
tls = "none"

[filter]
{filter_section}
""",
        encoding="utf-8",
    )
    return path


def test_check_prints_score_scl_action_symbols_and_the_dns_note() -> None:
    result = mxflow("filter", "check", str(SA_SPAM / "gtube.eml"), str(SA_NICE / "001"))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("note: no --resolver: DNS-based checks skipped (dnsbl, fcrdns, uribl")
    assert "gtube.eml: score 1000.00, SCL 9, action reject" in out
    assert "    GTUBE" in out
    assert "nice/001: score" in out and "action deliver" in out and "BAYES_HAM" in out


def test_check_json_walks_folders_and_maildirs(tmp_path: Path) -> None:
    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    (maildir / "new" / "1.host").write_bytes((SA_SPAM / "gtube.eml").read_bytes())
    (maildir / "cur" / "2.host:2,S").write_bytes((SA_NICE / "002").read_bytes())
    (maildir / "tmp" / "partial").write_bytes(b"half a message")
    result = mxflow("filter", "check", "--json", str(maildir))
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [Path(r["path"]).name for r in rows] == ["1.host", "2.host:2,S"]
    for row in rows:
        assert {"path", "score", "scl", "action", "symbols"} <= set(row)
    assert rows[0]["action"] == "reject" and rows[0]["scl"] == 9
    assert rows[1]["action"] == "deliver"
    assert "DNS_CHECKS_SKIPPED" in {s["name"] for s in rows[1]["symbols"]}


def test_check_of_a_missing_path_is_one_line_error() -> None:
    result = mxflow("filter", "check", "/nonexistent/msg.eml")
    assert result.returncode == 2
    assert result.stderr.strip() == "mxflow: /nonexistent/msg.eml: no such file or folder"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--ip", "not-an-ip"], "mxflow: --ip 'not-an-ip': expected an IPv4 or IPv6 address"),
        (["--resolver", "bogus"], "mxflow: --resolver 'bogus': expected IP[:PORT]"),
        (["--resolver", "127.0.0.1:99999"], "mxflow: --resolver '127.0.0.1:99999': expected"),
        (["--clamd", "bogus"], "mxflow: --clamd 'bogus': expected unix:/path/clamd.sock"),
        (["--clamd", "host:0"], "mxflow: --clamd 'host:0': expected"),
        (["/dev/null"], "mxflow: /dev/null: not a message file, folder or Maildir"),
    ],
)
def test_check_bad_options_are_one_line_errors(args: list[str], expected: str) -> None:
    result = mxflow("filter", "check", *args, str(SA_NICE / "001"))
    assert result.returncode == 2
    assert result.stderr.startswith(expected) and len(result.stderr.splitlines()) == 1
    assert result.stdout == ""  # nothing is scored before the arguments are known good


def test_check_reports_sfv_scl_cip_like_the_host_for_every_action() -> None:
    result = mxflow("filter", "check", "--ip", "192.0.2.7", str(SA_SPAM / "gtube.eml"))
    assert "    report: CIP:192.0.2.7;SFV:SPM;SCL:9;" in result.stdout
    rows = mxflow("filter", "check", "--json", str(SA_SPAM / "gtube.eml"), str(SA_NICE / "001"))
    spam, ham = (json.loads(line) for line in rows.stdout.splitlines())
    assert spam["report"].startswith("CIP:192.0.2.1;SFV:SPM;SCL:9;")
    assert spam["headers"] == []  # rejected: the message gets no headers
    assert ham["report"].startswith("CIP:192.0.2.1;SFV:NSPM;SCL:")
    assert ["X-Forefront-Antispam-Report", ham["report"]] in ham["headers"]


def test_a_model_file_that_is_no_model_is_one_line_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.model.gz"
    broken.write_bytes(b"not gzip at all")
    learn = mxflow("filter", "learn", "--ham", "--model", str(broken), str(SA_NICE / "001"))
    assert learn.returncode == 2
    assert learn.stderr.startswith(f"mxflow: {broken}: not a usable classifier model (")
    config = node_config(tmp_path, f'bayes_model = "{broken}"\n')
    check = mxflow("filter", "check", "--config", str(config), str(SA_NICE / "001"))
    assert check.returncode == 2 and len(check.stderr.splitlines()) == 1
    assert "not a usable classifier model" in check.stderr


async def test_check_with_a_node_config_and_a_resolver(tmp_path: Path) -> None:
    config = node_config(tmp_path, '[filter.dnsbl_zones]\n"bl.lab.test" = 7.5\n')
    msg = tmp_path / "m.eml"
    msg.write_bytes(message())
    async with serve_zone_text(BLOCKLIST) as server:
        code, out, err = await clirun.mxflow(
            "filter", "check", "--json", "--config", str(config),
            "--resolver", f"{server.host}:{server.port}",
            "--ip", "127.66.0.9", "--helo", "mx.sender.test", str(msg),
        )  # fmt: skip
    assert code == 0, err
    row = json.loads(out)
    names = {s["name"]: s["score"] for s in row["symbols"]}
    assert names["RBL_BL_LAB_TEST"] == 7.5
    assert "DNS_CHECKS_SKIPPED" not in names


async def test_check_with_a_node_config_uses_the_nodes_dns_resolver(tmp_path: Path) -> None:
    msg = tmp_path / "m.eml"
    msg.write_bytes(message())
    async with serve_zone_text(BLOCKLIST) as server:
        config = node_config(
            tmp_path,
            '[filter.dnsbl_zones]\n"bl.lab.test" = 7.5\n'
            f'[dns]\nresolver = "{server.host}:{server.port}"\n',
        )
        code, out, err = await clirun.mxflow(
            "filter", "check", "--json", "--config", str(config),
            "--ip", "127.66.0.9", "--helo", "mx.sender.test", str(msg),
        )  # fmt: skip
    assert code == 0, err
    names = {s["name"]: s["score"] for s in json.loads(out)["symbols"]}
    assert names["RBL_BL_LAB_TEST"] == 7.5


def test_bad_filter_config_names_file_and_key(tmp_path: Path) -> None:
    config = node_config(tmp_path, 'junk_score = "high"\n')
    result = mxflow("filter", "check", "--config", str(config), str(SA_NICE / "001"))
    assert result.returncode == 2
    assert "gw.toml: filter.junk_score: found 'high'; expected a number" in result.stderr


def test_learn_and_unlearn_a_model_file(tmp_path: Path) -> None:
    model = tmp_path / "model.gz"
    result = mxflow("filter", "learn", "--spam", "--model", str(model), str(SA_SPAM / "001"))
    assert result.returncode == 0, result.stderr
    assert "learnt 1 message(s) as spam" in result.stdout and model.exists()
    undo = mxflow(
        "filter", "learn", "--spam", "--unlearn", "--model", str(model), str(SA_SPAM / "001")
    )
    assert "unlearnt 1 message(s) as spam" in undo.stdout


async def test_quarantine_commands_with_a_node_config(tmp_path: Path) -> None:
    async with SmtpSink() as sink:
        config = node_config(tmp_path, port=sink.port)
        quarantine = Quarantine(tmp_path / "data" / "quarantine")
        ctx = MessageContext(
            "127.66.0.9", mail_from="a@example.org", rcpt_tos=["bob@contoso.com"],
            raw=message("Spammy body\n", subject="Win big"), queue_id="QX1",
        )  # fmt: skip
        qid = quarantine.store(ctx, SPAM_VERDICT)

        code, out, _ = await clirun.mxflow("quarantine", "--config", str(config), "list")
        assert code == 0 and qid in out and "'Win big'" in out and "SCL  7" in out
        code, out, _ = await clirun.mxflow("quarantine", "--config", str(config), "show", qid)
        assert "BAYES_SPAM" in out and "bob@contoso.com" in out
        code, out, err = await clirun.mxflow(
            "quarantine", "--config", str(config), "release", qid, "--via",
            f"{sink.host}:{sink.port}",
        )  # fmt: skip
        assert code == 0, err
        assert f"released {qid}" in out and "queued as SINK0001" in out
    (got,) = sink.handler.messages
    assert got.rcpt_tos == ["bob@contoso.com"]
    with TraceStore(tmp_path / "data" / "trace.sqlite") as trace:
        events = trace.by_queue_id("QX1")
    assert [(e.event, e.recipient, e.status) for e in events] == [
        ("quarantine-released", "bob@contoso.com", "Pending")
    ]
    assert (tmp_path / "data" / "bayes.model.gz").exists()  # learnt as ham
    code, out, _ = await clirun.mxflow(
        "quarantine", "--config", str(config), "list", "--all", "--json"
    )
    assert json.loads(out)["state"] == "released"


def test_quarantine_dir_delete_and_unknown(tmp_path: Path) -> None:
    q = Quarantine(tmp_path)
    qid = q.store(MessageContext("127.0.0.1", raw=message()), SPAM_VERDICT)
    assert mxflow("quarantine", "--dir", str(tmp_path), "delete", qid).returncode == 0
    assert "quarantine is empty" in mxflow("quarantine", "--dir", str(tmp_path), "list").stdout
    missing = mxflow("quarantine", "--dir", str(tmp_path), "show", qid)
    assert missing.returncode == 2 and "no quarantined message" in missing.stderr
    no_via = mxflow("quarantine", "--dir", str(tmp_path), "release", "abc")
    assert no_via.returncode == 2 and "release needs" in no_via.stderr
    assert "--via HOST:PORT" in no_via.stderr and "Traceback" not in no_via.stderr


def test_quarantine_dir_that_does_not_exist_is_an_error_not_a_new_folder(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-quarantine"
    result = mxflow("quarantine", "--dir", str(missing), "list")
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
    assert "no such quarantine folder" in result.stderr
    assert not missing.exists()
