"""Test helper: run the `mxflow` command as an admin would, as a real process.

The process runs without blocking the test's event loop, so an embedded DNS server in
that loop keeps answering the command's queries.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


async def mxflow(*args: str, cwd: Path = ROOT) -> tuple[int, str, str]:
    """`python -m mxflow ARGS` in `cwd`: (exit status, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mxflow",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    """Bad input: exit status 2 and one line on stderr naming the problem, no traceback."""
    assert code == 2
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err
