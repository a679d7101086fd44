"""Run every fuzz target for a time budget: `python -m fuzz.run [--seconds N] [TARGET...]`.

CI (`.ci/run`) gives all targets 60 s together; a longer hunt is, for example,
`python -m fuzz.run --seconds 3600` (an hour shared by the targets) or one target for as
long as you like: `python -m fuzz.one mime_walk fuzz/seeds/mime_walk -max_total_time=600`.
Each target starts from `fuzz/seeds/<target>/` plus `fuzz/regressions/<target>/`, in a
scratch corpus directory (the repository is not written to). A finding is copied to
`fuzz/findings/<target>/` and makes the run exit 1: fix the bug, then move the input to
`fuzz/regressions/<target>/`, where `tests/test_fuzz_regressions.py` replays it.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# Inputs longer than this are cut (the parsers have their own size limits; past them a
# bigger input only slows the search).
MAX_LEN = 65536
# A single input that takes longer than this is a finding (a hang, say quadratic work).
TIMEOUT = 10


def targets() -> list[str]:
    from fuzz.targets import TARGETS

    return list(TARGETS)


def run_one(target: str, seconds: int, findings: Path) -> bool:
    """Fuzz `target` for `seconds`; True when nothing was found."""
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{target}-") as scratch:
        corpus = Path(scratch) / "corpus"
        corpus.mkdir()
        for source in (HERE / "seeds" / target, HERE / "regressions" / target):
            if source.is_dir():
                for f in source.iterdir():
                    shutil.copy(f, corpus / f"{source.name}-{f.name}")
        artifacts = Path(scratch) / "artifacts"
        artifacts.mkdir()
        command = [
            sys.executable, "-m", "fuzz.one", target, str(corpus),
            f"-max_total_time={seconds}", f"-timeout={TIMEOUT}", f"-max_len={MAX_LEN}",
            f"-artifact_prefix={artifacts}/", "-print_final_stats=1",
        ]  # fmt: skip
        try:
            result = subprocess.run(
                command, cwd=ROOT, check=False, capture_output=True, text=True,
                timeout=seconds + TIMEOUT + 30,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            print(f"fuzz {target}: did not stop after {seconds}s (hang)", flush=True)
            return False
        found = list(artifacts.iterdir())
        if result.returncode == 0 and not found:
            print(f"fuzz {target}: {seconds}s, no finding", flush=True)
            return True
        (findings / target).mkdir(parents=True, exist_ok=True)
        for f in found:
            shutil.copy(f, findings / target / f.name)
        tail = "\n".join(result.stderr.splitlines()[-40:])
        print(f"fuzz {target}: FINDING (exit {result.returncode})\n{tail}", flush=True)
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60, help="budget for all targets")
    parser.add_argument("targets", nargs="*", help="default: every target")
    args = parser.parse_args()
    names = args.targets or targets()
    # Each target costs 2-3 s of start-up and shutdown on top of its fuzzing time.
    share = max(1, (args.seconds - 3 * len(names)) // len(names))
    started = time.monotonic()
    ok = all([run_one(name, share, HERE / "findings") for name in names])
    print(f"fuzz: {len(names)} target(s) in {time.monotonic() - started:.0f}s", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
