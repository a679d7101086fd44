"""Process and socket helpers: find tools, start daemons, wait for ports, stop them."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

# Every private bench instance lives under this folder (on disk, not tmpfs, so fsync is real).
BENCH_ROOT = Path(os.environ.get("MXFLOW_BENCH_ROOT", "/var/tmp/mxflow-bench"))

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"


class Missing(RuntimeError):
    """A tool the benchmark needs is not installed; the message says how to get it."""


def require(tools: dict[str, str]) -> dict[str, str]:
    """Map each tool name to its path, or raise Missing listing every missing tool and its fix."""
    found: dict[str, str] = {}
    missing: list[str] = []
    for tool, fix in tools.items():
        path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin")
        if path is None:
            missing.append(f"  {tool}: {fix}")
        else:
            found[tool] = path
    if missing:
        raise Missing("missing tools (see bench/README.md):\n" + "\n".join(missing))
    return found


def wait_port(
    host: str, port: int, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Wait until something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"process {proc.args!r} exited with {proc.returncode} before {host}:{port} opened"
            )
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1.0):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:.0f} s")


def wait_path(path: Path, timeout: float = 30.0) -> None:
    """Wait until a file (e.g. a UNIX socket) exists."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{path} did not appear after {timeout:.0f} s")


def port_free(host: str, port: int) -> bool:
    """True when nothing listens on host:port (we can bind it; a full backlog still counts)."""
    with socket.socket() as s:
        # SO_REUSEADDR: TIME_WAIT leftovers do not count; a listener still makes bind fail.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def start(
    argv: Sequence[str],
    log: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    stdout: int | None = None,
) -> subprocess.Popen[bytes]:
    """Start a daemon in its own process group, stderr (and stdout unless given) to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    fh = log.open("ab")
    return subprocess.Popen(
        list(argv),
        stdout=fh if stdout is None else stdout,
        stderr=fh,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )


def stop(proc: subprocess.Popen[bytes] | None, timeout: float = 15.0) -> int | None:
    """SIGTERM the process (and its group), then SIGKILL it after `timeout` seconds."""
    if proc is None or proc.poll() is not None:
        return None if proc is None else proc.returncode
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait(5)


def run(
    argv: Sequence[str], timeout: float = 120.0, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion, bounded in time, capturing its output."""
    result = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} exited with {result.returncode}:\n{result.stdout}{result.stderr}"
        )
    return result


def fresh_dir(path: Path) -> Path:
    """Remove and recreate a folder of the bench's own (never outside BENCH_ROOT)."""
    path = path.resolve()
    if BENCH_ROOT.resolve() not in path.parents:
        raise ValueError(f"refusing to wipe {path}: not under {BENCH_ROOT}")
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def machine() -> str:
    """One line naming the machine: cores, architecture, CPU model, kernel."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    u = os.uname()
    return f"{os.cpu_count()} cores, {u.machine}, {model}, Linux {u.release}"


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so `finally:` blocks stop the daemons we started."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def bench_lock(name: str = "smtp", wait: float = 1800.0) -> object:
    """Hold an exclusive lock for the run (relay benches share the sink's address and port).

    A second run waits (bounded) instead of failing on busy ports; the lock goes with the
    process. Returns the open lock file; keep a reference to it.
    """
    import fcntl

    BENCH_ROOT.mkdir(parents=True, exist_ok=True)
    fh = (BENCH_ROOT / f".{name}.lock").open("w")
    deadline = time.monotonic() + wait
    told = False
    while True:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fh
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"another bench run held {fh.name} for {wait:.0f} s") from None
            if not told:
                print(f"another bench run holds {fh.name}; waiting for it", flush=True)
                told = True
            time.sleep(1)
