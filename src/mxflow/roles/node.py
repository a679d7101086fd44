"""A running node: listeners, spool, queue runner and trace store, started and stopped.

Every role runs this; what a role is (its intake stages, its delivery targets) is decided
by the composition root, roles/build.py, which hands the parts in. `Node.run()` serves
until SIGTERM/SIGINT, then stops gracefully: listeners close, sessions finish their
transaction, in-flight deliveries get a grace period and the rest stay spooled. Or until
`mxflow queue drain` asks it to leave: the listeners close first (senders go to the next
MX), then it delivers what it holds, up to the drain's timeout, and stops the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from mxflow import metrics
from mxflow.config import Listener, NodeConfig, load_config
from mxflow.delivery.feedback import learn_for_node
from mxflow.errors import ConfigError
from mxflow.intake.base import Filter, QuarantineSink
from mxflow.intake.pipeline import Intake
from mxflow.queue.scheduler import Scheduler
from mxflow.queue.spool import Spool, clear_drain
from mxflow.smtp.client import ConnectionPool
from mxflow.smtp.protocol import Screen
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


@dataclass
class Wiring:
    """The configured part of a node that a reload replaces without dropping connections."""

    config: NodeConfig
    screen: Screen
    intake: Intake
    filter: Filter | None = None
    quarantine: QuarantineSink | None = None


class Service(Protocol):
    """A part with a life of its own (the shared counters' lease, the directory's refresh,
    the shared database): started before the listeners, stopped after them, in reverse."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class NodeParts:
    """What a node is made of, built once by the composition root (roles/build.py)."""

    config: NodeConfig
    spool: Spool
    trace: TraceStore
    pool: ConnectionPool
    scheduler: Scheduler
    servers: list[SmtpServer]
    wiring: Wiring
    worker: int = 0
    workers: int = 1
    services: list[Service] = field(default_factory=list)


class Node:
    """A running node: starts and stops its parts in order, serves until a signal."""

    def __init__(
        self, parts: NodeParts, *, rewire: Callable[[NodeConfig], Wiring] | None = None
    ) -> None:
        self.config = parts.config
        self.worker = parts.worker
        self.workers = parts.workers
        self.spool = parts.spool
        self.trace = parts.trace
        self.pool = parts.pool
        self.scheduler = parts.scheduler
        self.servers = parts.servers
        self.wiring = parts.wiring
        self.services = parts.services
        self.rewire = rewire
        self._expiry: asyncio.Task[None] | None = None
        self._expiring: asyncio.Future[list[str]] | None = None  # its round in progress
        self._learning: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()

    @property
    def filter(self) -> Filter | None:
        return self.wiring.filter

    @property
    def quarantine(self) -> QuarantineSink | None:
        return self.wiring.quarantine

    def reload(self) -> bool:
        """Re-read the config file and apply it to new connections (SIGHUP).

        Connections in flight finish on the configuration they started with. A config
        that does not load, or that changes the listeners (which needs new sockets: a
        restart), is refused and the running configuration stays, as Postfix's reload does.
        """
        if self.rewire is None:
            log.error("reload refused: this node was not built from a config file")
            return False
        try:
            new = load_config(self.config.file, data_dir=self.config.data_dir)
            if new.listeners != self._bound_listeners():
                raise ConfigError(
                    new.file, "listeners", "changed", "the same listeners (restart to change)"
                )
            wiring = self.rewire(new)
            for server in self.servers:
                server.reconfigure(screen=wiring.screen, open_inbound=wiring.intake.open)
        except Exception as exc:
            log.error("reload refused, keeping the running configuration: %s", exc)
            return False
        self.scheduler.reconfigure(new)
        self.config, self.wiring = new, wiring
        log.info("configuration reloaded from %s", new.file)
        return True

    def _bound_listeners(self) -> list[Listener]:
        """The running listeners, with the port the kernel chose where the config said 0."""
        return [
            dataclasses.replace(s.listener, port=s.port) if s.listener.port == 0 else s.listener
            for s in self.servers
        ]

    @property
    def ports(self) -> list[int]:
        """The bound port of each listener (useful with port = 0)."""
        return [s.port for s in self.servers]

    async def _learn_from_folders(self) -> None:
        """A host: every `learn_interval`, what users moved in or out of Junk trains the
        filter (delivery/feedback.py)."""
        while True:
            await asyncio.sleep(self.config.host.learn_interval)
            try:
                found = await asyncio.to_thread(learn_for_node, self.config)
                if found.ham or found.spam:
                    log.info("folder feedback: learnt %d ham, %d spam", found.ham, found.spam)
            except Exception as exc:
                log.error("folder feedback failed: %s", exc)

    async def _expire_quarantine(self) -> None:
        """Delete quarantined messages past their retention: at start, then every hour."""
        expire = getattr(self.quarantine, "expire", None)
        if expire is None:
            return
        while True:
            # shielded: a stop waits for a round in progress (`stop`), so the messages it
            # deleted are traced as expired before the trace closes
            self._expiring = asyncio.ensure_future(asyncio.to_thread(expire))
            try:
                gone = await asyncio.shield(self._expiring)
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
        for service in self.services:
            await service.start()
        await self.scheduler.start()
        if self.quarantine is not None and self.worker == 0:
            self._expiry = asyncio.create_task(self._expire_quarantine())
        learns = self.config.role == "host" and self.config.filter is not None
        if learns and self.config.host.learn_interval > 0 and self.worker == 0:
            self._learning = asyncio.create_task(self._learn_from_folders())
        for server in self.servers:
            await server.start()
        self.metrics_server = await metrics.start(self)  # /metrics, /healthz (issue 14)
        log.info(
            "node %s worker %d/%d listening on %s (event loop %s)",
            self.config.name,
            self.worker,
            self.workers,
            ", ".join(f"{s.listener.address}:{s.port}/{s.listener.tls}" for s in self.servers),
            type(asyncio.get_running_loop()).__module__.split(".")[0],
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
        for task in (self._expiry, self._learning):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self._expiring is not None:
            await asyncio.gather(self._expiring, return_exceptions=True)
        await self.scheduler.stop(grace)
        self.pool.close()
        self.spool.close()
        await asyncio.to_thread(self.trace.close)  # writes the backlog: may wait on the database
        for service in reversed(self.services):
            await service.stop()
        self._stopped.set()

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def drain(self, within: float, grace: float = 10.0) -> None:
        """Leave the service without losing mail: close the listeners (new connections are
        refused, so senders use the next MX), let sessions in a transaction finish for
        `grace` s, then deliver what this worker holds for up to `within` s."""
        log.info(
            "node %s worker %d draining: listeners closed; delivering %d spooled message(s)"
            " for up to %.0f s",
            self.config.name,
            self.worker,
            len(self.spool.owned_ids()),
            within,
        )
        await asyncio.gather(*(s.stop(grace) for s in self.servers))
        await self.scheduler.drain(within)

    def _drained(self) -> None:
        """After a drain: say what stayed in the spool (delivered at the next start)."""
        left = self.spool.owned_ids()
        log.info(
            "node %s worker %d drained: %d message(s) left in the spool%s",
            self.config.name,
            self.worker,
            len(left),
            f" ({', '.join(left[:20])}{' ...' if len(left) > 20 else ''})" if left else "",
        )
        if self.workers == 1:  # with workers, the supervisor clears it when all are done
            clear_drain(self.spool.path)

    async def run(self) -> None:
        """Serve until SIGTERM or SIGINT, or until a drain is asked; then stop gracefully
        (a SIGTERM during a drain cuts it short: what is left stays spooled)."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signal.SIGHUP, self.reload)
        await self.start()
        stopped = asyncio.ensure_future(stop.wait())
        asked = asyncio.ensure_future(self.scheduler.drain_asked.wait())
        await asyncio.wait({stopped, asked}, return_when=asyncio.FIRST_COMPLETED)
        draining = not stop.is_set()
        if draining:
            drain = asyncio.ensure_future(self.drain(self.scheduler.drain_timeout))
            await asyncio.wait({stopped, drain}, return_when=asyncio.FIRST_COMPLETED)
            drain.cancel()
            await asyncio.gather(drain, return_exceptions=True)
        for task in (stopped, asked):
            task.cancel()
        await self.stop()
        if draining:
            self._drained()
