"""examples/systemd: one hardened unit per implemented role, valid for systemd itself."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mxflow.config import IMPLEMENTED_ROLES
from tests.conftest import require_tool

UNITS = Path(__file__).resolve().parents[1] / "examples" / "systemd"
ROLES = sorted(IMPLEMENTED_ROLES)


def service(role: str) -> dict[str, str]:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS / f"mxflow-{role}.service")
    return dict(parser["Service"])


@pytest.mark.parametrize("role", ROLES)
def test_unit_is_hardened(role: str) -> None:
    s = service(role)
    assert s["User"] == f"mxflow-{role}"
    assert s["NoNewPrivileges"] == "yes"
    assert s["ProtectSystem"] == "strict"
    assert s["ReadWritePaths"] == f"/var/lib/mxflow/{role}"
    assert f"--data-dir /var/lib/mxflow/{role}" in s["ExecStart"]
    assert s["ExecStart"].split()[1:3] == ["serve", "--config"]
    assert s["CapabilityBoundingSet"] == "CAP_NET_BIND_SERVICE"
    assert s["ExecReload"] == "/bin/kill -HUP $MAINPID"  # SIGHUP reloads the config
    assert s["RestartPreventExitStatus"] == "2"
    users = (UNITS / "mxflow.sysusers.conf").read_text()
    assert f"u mxflow-{role} " in users


@pytest.mark.parametrize("role", ROLES)
def test_systemd_accepts_the_unit(tmp_path: Path, role: str) -> None:
    analyze = require_tool("systemd-analyze")
    mxflow = shutil.which("mxflow") or str(Path(sys.executable).with_name("mxflow"))
    text = (UNITS / f"mxflow-{role}.service").read_text()
    unit = tmp_path / f"mxflow-{role}.service"
    unit.write_text(text.replace("/opt/mxflow/bin/mxflow", mxflow))
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, check=False, timeout=60
    )
    problems = [
        line
        for line in result.stderr.splitlines()
        if unit.name in line and "Documentation" not in line
    ]
    assert problems == [], result.stderr
