"""Sample a running mxflow with py-spy and summarise where its time goes.

py-spy is not a project dependency; install it beside the project, e.g.
    python3 -m venv /var/tmp/mxflow-bench-tools
    /var/tmp/mxflow-bench-tools/bin/pip install py-spy
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

CANDIDATES = ("py-spy", "/var/tmp/mxflow-bench-tools/bin/py-spy")
OURS = ("mxflow/", "aiosmtpd/", "aiosmtplib/")
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def find_pyspy() -> str | None:
    for name in CANDIDATES:
        found = shutil.which(name) or (name if Path(name).is_file() else None)
        if found:
            return found
    return None


def start(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """Start `py-spy record` (collapsed stacks) on pid and its worker processes."""
    exe = find_pyspy()
    if exe is None:
        return None
    argv = [
        exe, "record", "--pid", str(pid), "--subprocesses", "--duration", str(int(seconds)),
        "--rate", "200", "--format", "raw", "--output", str(out), "--nonblocking",
    ]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _short(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m.group("file")
    for marker in ("site-packages/", "src/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{m.group('func')} ({path})"


def summarise(collapsed: Path, top: int = 15) -> str:
    """Top functions by own samples and by inclusive samples, as text."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";") if f and not f.startswith("process ")]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            incl[frame] += count
    if total == 0:
        return "no samples"
    lines = [f"{total} samples (all processes, idle included)", "own time:"]
    lines += [f"  {100 * n / total:5.1f} %  {f}" for f, n in own.most_common(top)]
    lines.append("inclusive time (mxflow, aiosmtpd, aiosmtplib frames):")
    ours = [(f, n) for f, n in incl.most_common() if f.split("(")[-1].startswith(OURS)]
    lines += [f"  {100 * n / total:5.1f} %  {f}" for f, n in ours[:top]]
    return "\n".join(lines)
