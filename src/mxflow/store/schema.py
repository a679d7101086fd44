"""Versioned schema migrations, one numbered sequence per store component.

Each store (trace, quarantine, …) owns its tables and their history as a `Component`:
migrations 1, 2, … with a script per dialect. `schema_versions` records how far each
component's tables are. On PostgreSQL an administrator applies them (`mxflow store
migrate --config NODE.toml`) and a node checks at start that the database is exactly at
the versions it knows: older means "migrate first", newer means "this node is older than
the database" — either way it refuses to run rather than write rows the other version
does not expect. A SQLite store belongs to one node, which migrates it itself at open.
Components are independent so that adding a table to one store never renumbers another.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from mxflow.store.sql import Cursor, Database, StoreError

VERSIONS_TABLE = """CREATE TABLE IF NOT EXISTS schema_versions (
    component TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    applied DOUBLE PRECISION NOT NULL
)"""


class SchemaMismatch(StoreError):
    """The database's schema is not the one this mxflow knows."""


@dataclass(frozen=True)
class Migration:
    version: int
    summary: str
    sqlite: str  # statements separated by `;` at the end of a line
    postgresql: str

    def script(self, dialect: str) -> str:
        return self.sqlite if dialect == "sqlite" else self.postgresql


@dataclass(frozen=True)
class Component:
    name: str
    migrations: tuple[Migration, ...]

    def __post_init__(self) -> None:
        numbers = [m.version for m in self.migrations]
        if numbers != list(range(1, len(numbers) + 1)):
            raise ValueError(f"{self.name}: migrations must be numbered 1..n, got {numbers}")

    @property
    def latest(self) -> int:
        return len(self.migrations)


def _versions(tx: Cursor) -> dict[str, int]:
    tx.execute(VERSIONS_TABLE)
    return {
        str(name): int(v) for name, v in tx.query("SELECT component, version FROM schema_versions")
    }


def current_versions(db: Database) -> dict[str, int]:
    """Each component's applied version (absent: none applied)."""
    with db.transaction() as tx:
        return _versions(tx)


def migrate(db: Database, components: Iterable[Component], *, upto: int | None = None) -> list[str]:
    """Apply what is missing, each migration in its own transaction; returns what was done.

    `upto` stops every component at that version (tests of an upgrade from an older one).
    Idempotent, and safe when two nodes run it at once (an advisory lock on PostgreSQL,
    SQLite's write lock).
    """
    done: list[str] = []
    for component in components:
        last = component.latest if upto is None else min(upto, component.latest)
        for migration in component.migrations[:last]:
            with db.transaction() as tx:
                db.lock(tx, f"mxflow-schema-{component.name}")
                if _versions(tx).get(component.name, 0) >= migration.version:
                    continue
                db.run_script(tx, migration.script(db.dialect))
                tx.execute(
                    "INSERT INTO schema_versions (component, version, applied) VALUES (?, ?, ?) "
                    "ON CONFLICT (component) DO UPDATE SET version = excluded.version, "
                    "applied = excluded.applied",
                    (component.name, migration.version, time.time()),
                )
            done.append(f"{component.name} {migration.version}: {migration.summary}")
    return done


def check(db: Database, components: Iterable[Component], *, where: str = "") -> None:
    """Refuse a database whose schema differs from this version's, saying what to do."""
    have = current_versions(db)
    for component in components:
        version = have.get(component.name, 0)
        if version < component.latest:
            raise SchemaMismatch(
                f"the store{where} has {component.name} schema version {version}, this "
                f"mxflow needs {component.latest}: run `mxflow store migrate --config NODE.toml`"
            )
        if version > component.latest:
            raise SchemaMismatch(
                f"the store{where} has {component.name} schema version {version}, newer than "
                f"this mxflow knows ({component.latest}): upgrade mxflow on this node"
            )
