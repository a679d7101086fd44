"""Postfix's smtp-sink as the final destination, with its running message counter."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from pathlib import Path

from lib import procs

_MESG = re.compile(rb"mesg=(\d+)")


class Sink:
    """`smtp-sink -c` on host:port; `count` is the number of messages it has received."""

    def __init__(self, host: str, port: int, log: Path, tool: str = "smtp-sink") -> None:
        self.host, self.port, self.log, self.tool = host, port, log, tool
        self.proc: subprocess.Popen[bytes] | None = None
        self.count = 0
        self._lock = threading.Lock()

    def start(self) -> None:
        if not procs.port_free(self.host, self.port):
            raise RuntimeError(f"{self.host}:{self.port} is already in use")
        # -c: counters on stdout; -u root: required when started as root; -m: up to 1000 sessions.
        self.proc = procs.start(
            [self.tool, "-c", "-u", "root", "-m", "1000", f"{self.host}:{self.port}", "1024"],
            self.log,
            stdout=subprocess.PIPE,
        )
        threading.Thread(target=self._read, daemon=True).start()
        procs.wait_port(self.host, self.port, 10, self.proc)

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        tail = b""
        while chunk := os.read(fd, 65536):
            tail = (tail + chunk)[-256:]
            found = _MESG.findall(tail)
            if found:
                with self._lock:
                    self.count = max(self.count, int(found[-1]))

    def received(self) -> int:
        with self._lock:
            return self.count

    def wait_for(self, total: int, timeout: float) -> float | None:
        """Block until `total` messages have arrived; the monotonic time they had, or None."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.received() >= total:
                return time.monotonic()
            time.sleep(0.005)
        return None

    def stop(self) -> None:
        procs.stop(self.proc)
