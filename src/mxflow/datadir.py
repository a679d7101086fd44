"""One running node per data directory: an `flock` on `DATA_DIR/mxflow.lock`.

Two nodes on one data directory would recover each other's queue and deliver every
message twice, then trip over each other's files. `serve` takes an exclusive, non-blocking
`flock` on a lock file in the data directory before it touches anything else and keeps
it for its whole life. The kernel drops the lock when the process ends, however it ends
(kill -9 included), so a restart never needs a cleanup step; the file itself stays and
only records the pid of the last owner, for the error message. With `[server] workers`
the supervisor takes the lock and its workers inherit the descriptor, so the directory
stays owned as long as any of them runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from mxflow.errors import MxflowError, Unavailable

LOCK_NAME = "mxflow.lock"


class DataDirLock:
    """The held lock; `fd` is what a worker process inherits (see `serve`)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def prepare(data_dir: Path) -> None:
    """Create `data_dir` if needed; one clear MxflowError when it cannot be a directory."""
    if data_dir.exists() and not data_dir.is_dir():
        raise MxflowError(f"data dir {data_dir} exists but is not a directory")
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MxflowError(f"data dir {data_dir}: cannot create it ({exc.strerror})") from None
    if not os.access(data_dir, os.W_OK | os.X_OK):
        raise MxflowError(f"data dir {data_dir}: not writable by this user (uid {os.getuid()})")


def lock(data_dir: Path) -> DataDirLock:
    """Own `data_dir` (created if needed) or raise Unavailable naming the current owner."""
    prepare(data_dir)
    path = data_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise MxflowError(f"{path}: cannot open the lock file ({exc.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = _read_owner(fd)
        os.close(fd)
        raise Unavailable(
            f"data dir {data_dir} is in use by another running mxflow node{owner}; stop it"
            " first, or give this node its own --data-dir"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return DataDirLock(path, fd)


def _read_owner(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        pid = int(os.pread(fd, 32, 0).decode().strip())
        return f" (pid {pid})"
    return ""


def running_owner(data_dir: Path) -> int | None:
    """The pid of the node that owns `data_dir` now (0 when it is not recorded), or None
    when no node runs on it.

    It asks the kernel (a shared `flock` that fails while a node holds the lock), not the
    pid in the file, which stays after the node ends. The probe holds the lock for an
    instant: a node starting at that very moment would find it taken and exit with 3.
    """
    try:
        fd = os.open(data_dir / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            with contextlib.suppress(OSError, ValueError):
                return int(os.pread(fd, 32, 0).decode().strip())
            return 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
