"""Reading a client: command lines, BDAT chunks and DATA, from our own buffer.

DATA is read in large chunks and its end found with `bytearray.find`, so the cost per
message is a few C-level passes over the bytes, whatever their line count. Past a
threshold, DATA still arriving is parked in an unlinked temporary file (written from a
thread): forty clients that each send 24 MB and never finish once held a gigabyte of
memory; now they hold a few hundred kilobytes each, and the disk space is freed by the
kernel when the file is closed, also after a crash.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mxflow.errors import MxflowError

READ_CHUNK = 256 * 1024
MAX_COMMAND = 4096
SPILL_THRESHOLD = 512 * 1024


@dataclass
class Spill:
    """Where a node parks DATA past `threshold` bytes, and how much it has parked."""

    directory: Path
    threshold: int = SPILL_THRESHOLD
    parked_bytes: int = 0  # in all, since start (for tests and metrics)


class _Parked:
    """One message's parked prefix: an unlinked temporary file, created on first use."""

    def __init__(self, spill: Spill | None) -> None:
        self.spill = spill
        self.file: int | None = None
        self.size = 0

    def wanted(self, buffered: int) -> bool:
        return self.spill is not None and buffered > self.spill.threshold

    async def park(self, buf: bytearray, *, keep: int) -> None:
        assert self.spill is not None
        cut = len(buf) - keep
        chunk = bytes(buf[:cut])
        del buf[:cut]
        if self.file is None:
            self.spill.directory.mkdir(parents=True, exist_ok=True)
            self.file = await asyncio.to_thread(_unlinked_file, self.spill.directory)
        await asyncio.to_thread(_write_all, self.file, chunk)
        self.size += len(chunk)
        self.spill.parked_bytes += len(chunk)

    async def take(self) -> bytes:
        """Everything parked, in order (b"" when nothing was)."""
        if self.file is None:
            return b""
        return await asyncio.to_thread(os.pread, self.file, self.size, 0)

    def drop(self) -> None:
        if self.file is not None:
            os.close(self.file)
            self.file = None
        self.size = 0


def _unlinked_file(directory: Path) -> int:
    fd, name = tempfile.mkstemp(dir=directory, prefix="data-")
    os.unlink(name)
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class Closed(MxflowError):
    """The client went away (or must be dropped)."""


class LineTooLong(Closed):
    """A command line longer than any SMTP command may be."""


class InputBuffer:
    """Our own read buffer over a StreamReader: lines for commands, big chunks for DATA.

    Owning the buffer lets DATA read far ahead without losing pipelined commands that
    follow the end of data, and lets STARTTLS discard plaintext sent ahead of the handshake.
    """

    def __init__(
        self, reader: asyncio.StreamReader, *, spill: Spill | None = None, idle: float = 300.0
    ) -> None:
        self.reader = reader
        self.buf = bytearray()
        self.spill = spill
        self.idle = idle  # the longest wait for the next bytes (RFC 5321 4.5.3.2)

    async def _fill(self, *, idle: bool = False) -> None:
        """Read what has arrived; with `idle`, waiting at most `self.idle` for it (DATA and
        BDAT: a command line's wait is bounded by the caller, once per line)."""
        if not idle:
            chunk = await self.reader.read(READ_CHUNK)
        else:
            async with asyncio.timeout(self.idle):
                chunk = await self.reader.read(READ_CHUNK)
        if not chunk:
            raise Closed
        self.buf += chunk

    def buffered(self) -> int:
        inner = getattr(self.reader, "_buffer", b"")
        return len(self.buf) + len(inner)

    def discard(self) -> None:
        self.buf.clear()
        inner = getattr(self.reader, "_buffer", None)
        if isinstance(inner, bytearray):
            inner.clear()

    async def readline(self) -> bytes:
        start = 0
        while True:
            i = self.buf.find(b"\n", start)
            if i >= MAX_COMMAND:  # a whole over-long line that arrived in one read
                raise LineTooLong
            if i >= 0:
                line = bytes(self.buf[: i + 1])
                del self.buf[: i + 1]
                return line
            if len(self.buf) > MAX_COMMAND:
                raise LineTooLong
            start = len(self.buf)
            await self._fill()

    async def read_exact(self, size: int, *, keep: bool) -> bytes:
        """The next `size` octets (a BDAT chunk); dropped as they arrive when not `keep`."""
        parts: list[bytes] = []
        remaining = size
        while remaining:
            if not self.buf:
                await self._fill(idle=True)
            take = min(remaining, len(self.buf))
            if keep:
                parts.append(bytes(self.buf[:take]))
            del self.buf[:take]
            remaining -= take
        return b"".join(parts)

    async def read_data(self, max_size: int) -> tuple[bytes, bool]:
        """Everything up to `<CRLF>.<CRLF>` (not dot-unstuffed); True when it was too big.

        The data is searched with a virtual CRLF in front, so an empty message (".\\r\\n")
        and a first line of "." end it too. Too-big data is discarded as it arrives; past
        `spill.threshold` what has arrived waits in an unlinked temporary file, so clients
        that never finish their DATA hold disk, not memory.
        """
        self.buf[0:0] = b"\r\n"
        pos, too_big = 0, False
        parked = _Parked(self.spill)
        try:
            while True:
                i = self.buf.find(b"\r\n.\r\n", pos)
                if i >= 0:
                    break
                if parked.size + len(self.buf) > max_size + 8:
                    too_big = True
                    parked.drop()
                    del self.buf[:-4]
                elif parked.wanted(len(self.buf)):
                    await parked.park(self.buf, keep=4)  # a split end marker stays here
                pos = max(0, len(self.buf) - 4)
                await self._fill(idle=True)
            data = b"" if too_big else (await parked.take() + bytes(self.buf[: i + 2]))[2:]
        finally:
            parked.drop()
        del self.buf[: i + 5]
        return data, too_big
