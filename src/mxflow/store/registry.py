"""The store components whose tables a shared (PostgreSQL) database holds.

`mxflow store migrate` applies their migrations and a node checks them at start
(`mxflow.store.schema`). A store that moves to the shared database adds its `Component`
here; the order is the order migrations run in.
"""

from __future__ import annotations

from mxflow.store.archive import ARCHIVE
from mxflow.store.counters import COUNTERS
from mxflow.store.directory import DIRECTORY
from mxflow.store.feedback import FEEDBACK
from mxflow.store.quarantine_schema import QUARANTINE
from mxflow.store.schema import Component, check
from mxflow.store.sql import Database
from mxflow.store.trace_schema import TRACE

COMPONENTS: tuple[Component, ...] = (TRACE, QUARANTINE, COUNTERS, DIRECTORY, FEEDBACK, ARCHIVE)


def check_shared(db: Database) -> None:
    """Refuse to start a node against a shared database at another schema version."""
    check(db, COMPONENTS, where=f" at {getattr(db, 'display', db.url)}")
