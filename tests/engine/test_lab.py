"""`mxflow lab` (interim): runs in seconds, exits 0, reports every case as expected."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_interim_lab_runs_and_reports_each_message(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mxflow", "lab", "--dir", str(tmp_path / "lab")],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "lab: all cases as expected" in out
    assert "550 5.7.1" in out and "552 5.3.4" in out and "550 5.6.0" in out
    assert out.count("=> delivered") == 2 and "=> bounced" in out
    assert (tmp_path / "lab" / "gateway" / "trace.sqlite").exists()
