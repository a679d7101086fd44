"""The archiver role: scenario 2's third party, which relays both ways without filtering.

Its intake is two stages: journal (a copy of every message into the hash-chained archive,
fsync'd before the 250) and store. No sanitise, no filter, no stamp: the archiver never
alters a message, so the sender's DKIM signature still verifies at the host and at the
Internet's receivers; the only change is the Received line every relay adds on top. Relay
control is the gateway's screen (accepted domains inbound, relay connectors outbound).
"""

from __future__ import annotations

from mxflow.config import NodeConfig
from mxflow.intake.base import Stage
from mxflow.intake.journal import JournalStage
from mxflow.intake.store import StoreStage
from mxflow.store.archive import Archive
from mxflow.store.sql import Database


def open_archive(config: NodeConfig, database: Database | None = None) -> Archive:
    """The node's archive (`[archive] dir`, default `<data_dir>/archive`); with a shared
    database its index is there, one chain for every archiver (files stay on this disk)."""
    settings = config.archive
    root = settings.dir if settings is not None else config.data_dir / "archive"
    return Archive(root, fsync=config.server.fsync, database=database, node=config.name)


def archiver_stages(archive: Archive, config: NodeConfig, *, store: StoreStage) -> list[Stage]:
    """The archiver's DATA stages, in order."""
    retention = config.archive.retention if config.archive is not None else None
    return [JournalStage(archive, retention=retention), store]
