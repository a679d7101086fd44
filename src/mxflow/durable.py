"""Making file-system changes durable: what the spool, the Maildirs, the quarantine and
the archive all need before they may say a message is safe.

On POSIX a new or renamed name is durable only once its directory is fsync'd, not when the
file's data is; every writer of a name that an acknowledgement depends on calls this.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """fsync the directory `path`, so the names created or renamed in it survive a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
