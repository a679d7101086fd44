"""Structured logs for a running node, written without a syscall per line.

The engine logs one line per SMTP session and one per delivery attempt; at several
hundred messages a second, a `write()` per line is a noticeable share of the CPU on this
kind of machine. `BufferedStreamHandler` collects formatted lines and writes them in one
go from a small thread at most every `interval` seconds (and at once for WARNING and
above, and at exit), so a crash loses at most the last fraction of a second of INFO lines.
"""

from __future__ import annotations

import atexit
import logging
import sys
import threading
from typing import TextIO


class BufferedStreamHandler(logging.Handler):
    def __init__(self, stream: TextIO | None = None, interval: float = 0.2) -> None:
        super().__init__()
        self.stream = stream or sys.stderr
        self.interval = interval
        self._buffer: list[str] = []
        self._buffer_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
        except Exception:
            self.handleError(record)
            return
        with self._buffer_lock:
            self._buffer.append(line)
        if record.levelno >= logging.WARNING:
            self.flush()

    def flush(self) -> None:
        with self._buffer_lock:
            lines, self._buffer = self._buffer, []
        if lines:
            try:
                self.stream.write("".join(lines))
                self.stream.flush()
            except (OSError, ValueError):
                pass

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self.flush()
        super().close()


def setup_logging(level: str, name: str) -> None:
    """Log lines `TIME NODE[WORKER] LOGGER LEVEL key=value ...` to stderr, buffered."""
    handler = BufferedStreamHandler()
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s {name} %(name)s %(levelname)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
