"""`mxflow lab` with no subcommand runs the lab (what `make lab` runs), from any folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mxflow.lab.corpus import corpus_files, default_corpus


def test_mxflow_lab_alone_runs_a_scenario_from_any_folder(tmp_path: Path) -> None:
    files = corpus_files(default_corpus())
    for kind in ("ham", "spam"):
        (tmp_path / "corpus" / kind).mkdir(parents=True)
        for path in files[kind][:2]:
            (tmp_path / "corpus" / kind / path.name).write_bytes(path.read_bytes())
    result = subprocess.run(
        [sys.executable, "-m", "mxflow", "lab", "--scenario", "2-ef", "--corpus", "corpus"],
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "scenario 2-ef" in result.stdout
    assert "ok    scenario 2-ef: no message lost" in result.stdout
