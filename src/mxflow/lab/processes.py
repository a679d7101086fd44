"""A lab node that runs as its own `mxflow serve` process, so `kill -9` is real.

`--nodes 2` runs each gateway node like this: its own config file, data directory, spool,
loopback address and log file. The lab starts it, kills it with SIGKILL (no clean-up,
exactly what a crashed machine does to the process), starts it again on the same data
directory, and finally makes it leave with `mxflow queue drain`, as an operator would.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from mxflow.lab.peers import LAB_ID
from mxflow.queue.spool import Spool, SpoolError

START_TIMEOUT = 30.0
_RECOVERED = re.compile(r"recovered (\d+) queued messages")


@dataclass
class Drained:
    """What `mxflow queue drain` did to one node."""

    node: str
    held: int  # messages in its spool when the drain was asked
    status: int  # of `mxflow queue drain`: 0 = the node left an empty spool
    node_status: int | None  # of the node process: 0 = it exited by itself
    output: str
    seconds: float


@dataclass
class NodeProcess:
    """One node: `mxflow serve --config CONFIG --data-dir DATA_DIR`, logging to LOG."""

    name: str
    address: str
    port: int
    config: Path
    data_dir: Path
    starts: int = 0
    proc: asyncio.subprocess.Process | None = field(default=None, repr=False)

    @property
    def log(self) -> Path:
        return self.data_dir.parent / f"{self.name}.log"

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    async def start(self) -> None:
        """Start the process (again) and wait until it listens."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "mxflow", "serve", "--config", str(self.config),
                "--data-dir", str(self.data_dir), "--log-level", "INFO",
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
            )  # fmt: skip
        self.starts += 1
        deadline = time.monotonic() + START_TIMEOUT
        while not await self._listening():
            if self.proc.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"lab node {self.name} did not start; see {self.log}")
            await asyncio.sleep(0.05)

    async def _listening(self) -> bool:
        try:
            _, writer = await asyncio.open_connection(self.address, self.port)
        except OSError:
            return False
        writer.close()
        return True

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def kill_now(self) -> None:
        """SIGKILL: the process ends mid-work, with no chance to clean up (see `kill`)."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)

    async def kill(self) -> None:
        """SIGKILL, and wait until the process is gone."""
        assert self.proc is not None
        self.kill_now()
        await self.proc.wait()

    async def stop(self) -> None:
        """SIGTERM and wait (the end of a run that went wrong)."""
        if not self.running:
            return
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), 30)
        except TimeoutError:
            await self.kill()

    def spooled(self) -> dict[str, str]:
        """Lab id -> queue id of each complete message in its spool (acknowledged by this
        node, not yet removed: delivered or not)."""
        spool = Spool(self.spool_dir)
        found = {}
        for queue_id in spool.ids():
            with contextlib.suppress(SpoolError, OSError):
                _, raw = spool.load(queue_id)
                if m := LAB_ID.search(raw.partition(b"\r\n\r\n")[0]):
                    found[m.group(1).decode()] = queue_id
        return found

    def recovered(self) -> list[int]:
        """What each start found in its spool ("recovered N queued messages" in its log)."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return [int(n) for n in _RECOVERED.findall(text)]

    async def drain(self, within: float) -> Drained:
        """`mxflow queue drain`: the node stops accepting, delivers what it holds, exits."""
        started = time.monotonic()
        held = len(Spool(self.spool_dir).ids())
        command = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mxflow", "queue", "--config", str(self.config),
            "--data-dir", str(self.data_dir), "drain", "--timeout", f"{within:g}",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await command.communicate()
        node_status = None
        if self.proc is not None:
            with contextlib.suppress(TimeoutError):
                node_status = await asyncio.wait_for(self.proc.wait(), 30)
        return Drained(
            self.name,
            held,
            command.returncode if command.returncode is not None else -1,
            node_status,
            out.decode(errors="replace").strip(),
            round(time.monotonic() - started, 1),
        )
