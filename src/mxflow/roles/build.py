"""The composition root: one place builds a node from its configuration.

The resolver is built once and shared by the filter, sender authentication and delivery;
the trace store before the quarantine (which records to it) and the quarantine before
the filter (which recognises its releases); then the role's intake stages, the delivery
side and the listeners. Nothing is pushed into a part after it is built. A reload (SIGHUP)
builds a new `Wiring` — filter, quarantine, stages, screen — over the same stores.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import dns.asyncresolver

from mxflow import metrics
from mxflow.config import NodeConfig
from mxflow.delivery.router import Router
from mxflow.dns.resolver import resolver_from_endpoint
from mxflow.intake.base import Filter, QuarantineSink
from mxflow.intake.limits import ClientLimits, SharedLimits
from mxflow.intake.lockdown import HostScreen
from mxflow.intake.pipeline import Intake
from mxflow.intake.screen import RelayScreen
from mxflow.intake.store import StoreStage
from mxflow.queue.scheduler import Scheduler
from mxflow.queue.spool import Spool
from mxflow.roles.archiver import archiver_stages, open_archive
from mxflow.roles.gateway import gateway_stages
from mxflow.roles.host import host_stages
from mxflow.roles.node import Node, NodeParts, Service, Wiring, ensure_certificates
from mxflow.smtp.capacity import ConnectionBudget
from mxflow.smtp.client import ConnectionPool
from mxflow.smtp.protocol import Screen
from mxflow.smtp.reader import Spill
from mxflow.smtp.server import SmtpServer
from mxflow.store.archive import Archive
from mxflow.store.counters import ConnectionCounters
from mxflow.store.directory import Directory, SharedDirectory, sync_config
from mxflow.store.registry import check_shared
from mxflow.store.sql import Database, open_database
from mxflow.store.trace import TraceStore


def _filter_and_quarantine(
    config: NodeConfig,
    resolver: dns.asyncresolver.Resolver | None,
    trace: TraceStore,
    database: Database | None = None,
) -> tuple[Filter | None, QuarantineSink | None]:
    """The node's filter and quarantine from `[filter]` (none without one); with a shared
    database the quarantine is there and the classifier learns there (checks/learning.py).

    The checks are imported only then, so a node without a filter never loads them.
    """
    if config.filter is None:
        return None, None
    from mxflow.checks.node import node_pipeline, node_quarantine

    quarantine = node_quarantine(config, trace, database)
    shared = {"database": database} if database is not None else {}
    return node_pipeline(config, resolver, quarantine, **shared), quarantine


@dataclass
class Shared:
    """What outlives a configuration reload: the stores, the spool and the delivery side."""

    resolver: dns.asyncresolver.Resolver | None
    spool: Spool
    trace: TraceStore
    scheduler: Scheduler
    directory: Directory | None = None  # the host's, opened once
    archive: Archive | None = None  # the archiver's, opened once
    database: Database | None = None  # the PostgreSQL database nodes share, if any
    counters: ConnectionCounters | None = None  # per-client counts in that database

    def open_archive(self, config: NodeConfig) -> Archive:
        """The archiver's journal, opened once and kept across reloads."""
        if self.archive is None:
            self.archive = open_archive(config, self.database)
        return self.archive

    def open_directory(self, config: NodeConfig) -> Directory:
        """The host's directory with the config's entries in force (again on a reload):
        its SQLite file, or the shared database's, looked up in a copy kept current."""
        if self.directory is None:
            if self.database is not None:
                self.directory = SharedDirectory(self.database)
            else:
                self.directory = Directory.in_data_dir(config.data_dir)
        sync_config(self.directory, config)
        return self.directory


def build_wiring(
    config: NodeConfig,
    shared: Shared,
    *,
    filter: Filter | None = None,
    quarantine: QuarantineSink | None = None,
) -> Wiring:
    """The part of a node a reload replaces: filter, quarantine, intake stages, screen, TLS."""
    if filter is None:
        filter, built = _filter_and_quarantine(
            config, shared.resolver, shared.trace, shared.database
        )
        quarantine = quarantine or built
    auth = config.auth
    authserv_id = auth.authserv_id if auth else config.hostname
    store = StoreStage(
        shared.spool, shared.trace, quarantine=quarantine, on_queued=shared.scheduler.submit
    )
    screen: Screen
    if config.role == "host":
        directory = shared.open_directory(config)
        stages = host_stages(
            config,
            authserv_id=authserv_id,
            filter=filter,
            auth=auth,
            directory=directory,
            trace=shared.trace,
            store=store,
        )
        screen = HostScreen(config, directory)
    elif config.role == "archiver":
        stages = archiver_stages(shared.open_archive(config), config, store=store)
        screen = RelayScreen(config)
    else:
        stages = gateway_stages(authserv_id=authserv_id, filter=filter, auth=auth, store=store)
        screen = RelayScreen(config)
    intake = Intake(
        hostname=config.hostname,
        stages=stages,
        spool=shared.spool,
        trace=shared.trace,
        filter=filter,
        limits=_shared_limits(config, shared.counters, filter),
    )
    return Wiring(config, screen, intake, filter, quarantine)


def _shared_limits(
    config: NodeConfig, counters: ConnectionCounters | None, filter: Filter | None
) -> SharedLimits | None:
    """Per-client limits counted for every node (with a shared database): the server's
    `[limits]` and, when the filter has a rate check, that check's."""
    if counters is None:
        return None
    rate = getattr(filter, "rate", None)
    policy = getattr(rate, "policy", None)
    return SharedLimits(
        counters,
        ClientLimits(
            config.limits.max_connections_per_ip,
            filter_open=getattr(policy, "max_connections_per_ip", None),
            filter_rate=getattr(policy, "max_connections_per_minute", None),
        ),
    )


def _shared_services(
    config: NodeConfig, database: Database | None, worker: int
) -> tuple[list[Service], ConnectionCounters | None]:
    """With a shared database: the process's connection counts there (its lease), and the
    database itself, closed last (services stop in reverse)."""
    if database is None:
        return [], None
    counters = ConnectionCounters(database, f"{config.name}/{worker}")
    return [_Closing(database), counters], counters


class _Closing:
    """The shared database as a service: closed (its pools) when the node stops."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        await self.database.aclose()


def open_shared_database(config: NodeConfig) -> Database | None:
    """The deployment's PostgreSQL database, at the schema this mxflow knows (else an error
    naming `mxflow store migrate`), or None when the node keeps its state in SQLite files."""
    if config.shared_database is None:
        return None
    database = open_database(config.shared_database)
    try:
        check_shared(database)
    except BaseException:
        database.close()
        raise
    return database


def build_node(
    config: NodeConfig,
    *,
    resolver: dns.asyncresolver.Resolver | None = None,
    filter: Filter | None = None,
    quarantine: QuarantineSink | None = None,
    worker: int = 0,
    workers: int = 1,
) -> Node:
    """A node for `config`'s role; `filter` / `quarantine` replace the configured ones."""
    ensure_certificates(config)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    database = open_shared_database(config)
    if resolver is None and config.dns_resolver:
        resolver = resolver_from_endpoint(config.dns_resolver)
    spool = Spool(
        config.spool_dir,
        worker=worker,
        workers=workers,
        fsync=config.server.fsync,
        preallocate=16,  # small refills: a burst of creates stalls a lone sender
    )
    trace = TraceStore(database or config.trace_db, node=config.name)
    pool = ConnectionPool(
        local_hostname=config.hostname,
        source_address=config.delivery.source_address,
        connect_timeout=config.delivery.connect_timeout,
        command_timeout=config.delivery.command_timeout,
        per_endpoint=config.delivery.connections_per_host,
    )
    router = Router(config, pool, resolver, mailboxes=config.role == "host")
    scheduler = Scheduler(config, spool, trace, router)
    services, counters = _shared_services(config, database, worker)
    shared = Shared(resolver, spool, trace, scheduler, database=database, counters=counters)
    wiring = build_wiring(config, shared, filter=filter, quarantine=quarantine)
    if isinstance(shared.directory, SharedDirectory):
        services.append(shared.directory)  # follows changes made on other nodes
    budget = ConnectionBudget(config.limits.max_connections)
    spill = Spill(config.data_dir / "incoming")
    servers = [
        SmtpServer(
            listener,
            hostname=config.hostname,
            limits=config.limits,
            screen=wiring.screen,
            open_inbound=wiring.intake.open,
            budget=budget,
            spill=spill,
            on_reply=functools.partial(metrics.smtp_reply, config.name),
            reuse_port=workers > 1,
        )
        for listener in config.listeners
    ]
    parts = NodeParts(
        config, spool, trace, pool, scheduler, servers, wiring, worker, workers, services
    )
    return Node(parts, rewire=lambda new: build_wiring(new, shared))
