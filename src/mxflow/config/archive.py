"""`[archive]`: where the archiver journals every message, and for how long."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mxflow.config.base import _path, _Table


@dataclass(frozen=True)
class ArchiveConfig:
    """`[archive]`: where the archiver journals every message, and for how long."""

    dir: Path
    retention: float | None = None  # seconds; None keeps everything


def _archive_config(top: _Table, data_dir: Path) -> ArchiveConfig | None:
    """The `[archive]` table (dir relative to the data directory; retention a duration)."""
    at = top.table("archive")
    if at is None:
        return None
    path = _path(data_dir, at.text("dir", "archive"))
    assert path is not None
    retention = at.duration("retention", 0.0) if "retention" in at.data else None
    at.done()
    return ArchiveConfig(path, retention or None)
