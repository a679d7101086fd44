"""A running node: listeners, spool, queue runner and trace store, wired from its config.

Every role runs this; a role differs only in the filter and quarantine it passes in
(and, later, its routing table). `Node.run()` serves until SIGTERM/SIGINT, then stops
gracefully: listeners close, sessions finish their transaction, in-flight deliveries get
a grace period and the rest stay spooled for the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import dns.asyncresolver

from mxflow import metrics
from mxflow.config import NodeConfig
from mxflow.delivery.router import Router
from mxflow.dns.resolver import resolver_from_endpoint
from mxflow.mail import Filter, QuarantineSink
from mxflow.queue.scheduler import Scheduler
from mxflow.queue.spool import Spool
from mxflow.smtp.client import ConnectionPool
from mxflow.smtp.server import SmtpServer
from mxflow.smtp.tls import generate_self_signed
from mxflow.store.trace import TraceStore

log = logging.getLogger("mxflow.node")

QUARANTINE_EXPIRY_INTERVAL = 3600.0


def ensure_certificates(config: NodeConfig) -> None:
    """Create the self-signed certificates listeners ask for with `generate_cert = true`."""
    for listener in config.listeners:
        if listener.tls == "none" or not listener.generate_cert:
            continue
        assert listener.cert is not None and listener.key is not None
        if not (listener.cert.exists() and listener.key.exists()):
            generate_self_signed(
                listener.cert, listener.key, config.hostname, ips=(listener.address,)
            )


class Node:
    def __init__(
        self,
        config: NodeConfig,
        *,
        filter: Filter | None = None,
        quarantine: QuarantineSink | None = None,
        resolver: dns.asyncresolver.Resolver | None = None,
        worker: int = 0,
        workers: int = 1,
    ) -> None:
        self.config = config
        self.worker = worker
        self.workers = workers
        ensure_certificates(config)
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.spool = Spool(
            config.spool_dir,
            worker=worker,
            workers=workers,
            fsync=config.server.fsync,
            preallocate=16,  # small refills: a burst of creates stalls a lone sender
        )
        self.trace = TraceStore(config.trace_db, node=config.name)
        if resolver is None and config.dns_resolver:
            resolver = resolver_from_endpoint(config.dns_resolver)
        self.resolver = resolver
        self.pool = ConnectionPool(
            local_hostname=config.hostname,
            source_address=config.delivery.source_address,
            connect_timeout=config.delivery.connect_timeout,
            command_timeout=config.delivery.command_timeout,
            per_endpoint=config.delivery.connections_per_host,
        )
        self.router = Router(config, self.pool, resolver)
        self.scheduler = Scheduler(config, self.spool, self.trace, self.router)
        self.servers = [
            SmtpServer(
                config,
                listener,
                self.spool,
                self.trace,
                on_queued=self.scheduler.submit,
                filter=filter,
                quarantine=quarantine,
                reuse_port=workers > 1,
            )
            for listener in config.listeners
        ]
        self.quarantine = quarantine
        self._expiry: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()

    @property
    def ports(self) -> list[int]:
        """The bound port of each listener (useful with port = 0)."""
        return [s.port for s in self.servers]

    def set_quarantine(self, quarantine: QuarantineSink) -> None:
        """Where QUARANTINE verdicts go (built after the node, as it records to our trace)."""
        self.quarantine = quarantine
        for server in self.servers:
            server.quarantine = quarantine

    async def _expire_quarantine(self) -> None:
        """Delete quarantined messages past their retention: at start, then every hour."""
        expire = getattr(self.quarantine, "expire", None)
        if expire is None:
            return
        while True:
            try:
                gone = await asyncio.to_thread(expire)
                if gone:
                    log.info("quarantine expired %d message(s): %s", len(gone), ",".join(gone))
            except Exception as exc:
                log.error("quarantine expiry failed: %s", exc)
            await asyncio.sleep(QUARANTINE_EXPIRY_INTERVAL)

    @property
    def port(self) -> int:
        """The bound port of the first listener."""
        return self.servers[0].port

    @property
    def address(self) -> str:
        return self.servers[0].listener.address

    async def start(self) -> None:
        await self.scheduler.start()
        if self.quarantine is not None and self.worker == 0:
            self._expiry = asyncio.create_task(self._expire_quarantine())
        for server in self.servers:
            await server.start()
        self.metrics_server = await metrics.start(self)  # /metrics, /healthz (issue 14)
        log.info(
            "node %s worker %d/%d listening on %s",
            self.config.name,
            self.worker,
            self.workers,
            ", ".join(f"{s.listener.address}:{s.port}/{s.listener.tls}" for s in self.servers),
        )

    async def stop(self, grace: float = 10.0) -> None:
        log.info(
            "node %s worker %d stopping: %d messages spooled in %d group commits, "
            "%d outbound connections",
            self.config.name,
            self.worker,
            self.spool.committed,
            self.spool.batches,
            self.pool.connects,
        )
        await asyncio.gather(*(s.stop(grace) for s in self.servers))
        await metrics.stop(getattr(self, "metrics_server", None))
        if self._expiry is not None:
            self._expiry.cancel()
            await asyncio.gather(self._expiry, return_exceptions=True)
        await self.scheduler.stop(grace)
        self.pool.close()
        self.spool.close()
        self.trace.close()
        self._stopped.set()

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def run(self) -> None:
        """Serve until SIGTERM or SIGINT, then stop gracefully."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await self.start()
        await stop.wait()
        await self.stop()
