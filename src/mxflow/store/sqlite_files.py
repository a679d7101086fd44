"""A node's own SQLite store files, brought to this version's schema when opened.

On PostgreSQL the administrator migrates (`mxflow store migrate`) and a node only checks;
a SQLite file belongs to the node(s) on one machine, which migrate it themselves. Files
written before a store had migrations carry no `schema_versions` row for it and may lack
columns added since: the store's `adopt` adds them (under SQLite's write lock, so two
processes opening one old file add each once) before migration 1, whose statements are
all `IF NOT EXISTS`, is recorded over the existing table.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from mxflow.store.schema import Component, current_versions, migrate
from mxflow.store.sql import Cursor, Database

Adopt = Callable[[Cursor], None]  # adds what a file from before migration 1 lacks

_current: set[tuple[str, str, int]] = set()  # (component, url, inode) already at this version
_lock = threading.Lock()


def add_missing_columns(tx: Cursor, table: str, columns: tuple[tuple[str, str], ...]) -> None:
    """`ALTER TABLE … ADD COLUMN` for each of `columns` (name, declaration) the table
    lacks; nothing when the table does not exist yet (migration 1 creates it whole)."""
    have = {str(r[1]) for r in tx.query(f"PRAGMA table_info({table})")}
    if not have:
        return
    for name, decl in columns:
        if name not in have:
            tx.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")


def ensure_schema(db: Database, component: Component, adopt: Adopt | None = None) -> None:
    """A SQLite file at this version of `component` (once per process and file: cheap
    after the first call); a PostgreSQL database is left alone."""
    if db.dialect != "sqlite":
        return
    path = getattr(db, "path", None)
    inode = path.stat().st_ino if path is not None and path.exists() else -1
    if (component.name, db.url, inode) in _current:
        return
    with _lock:
        if adopt is not None and current_versions(db).get(component.name, 0) == 0:
            with db.transaction() as tx:
                adopt(tx)
        migrate(db, [component])
        if path is not None:
            _current.add((component.name, db.url, path.stat().st_ino))
