"""Reading a client, without I/O: command lines, and the end of DATA, out of our own buffer.

The connection (connection.py) appends what the socket delivers to one `bytearray` and
asks this module what is in it. A command line is cut only within its limit, so a client
that never sends a line end holds at most `MAX_COMMAND` octets. DATA is searched for its
end with `bytearray.find`, so the cost per message is a few C-level passes over the bytes,
whatever their line count.

Past a threshold, DATA still arriving is parked in an unlinked temporary file (written from
a thread): forty clients that each send 24 MB and never finish once held a gigabyte of
memory; now they hold a few hundred kilobytes each, and the disk space is freed by the
kernel when the file is closed, also after a crash.
"""

from __future__ import annotations

import asyncio
import enum
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mxflow.errors import MxflowError

MAX_COMMAND = 4096
SPILL_THRESHOLD = 512 * 1024
_END = b"\r\n.\r\n"


@dataclass
class Spill:
    """Where a node parks DATA past `threshold` bytes, and how much it has parked."""

    directory: Path
    threshold: int = SPILL_THRESHOLD
    parked_bytes: int = 0  # in all, since start (for tests and metrics)


class Closed(MxflowError):
    """The client went away (or must be dropped)."""


class LineTooLong(Closed):
    """A command line longer than any SMTP command may be."""


def take_line(buf: bytearray) -> bytes | None:
    """The next command line (with its line end), cut out of `buf`; None until it is whole.

    Raises LineTooLong once `buf` holds more than `MAX_COMMAND` octets without a line end
    among the first `MAX_COMMAND`: the search never looks further than that.
    """
    i = buf.find(b"\n", 0, MAX_COMMAND)
    if i < 0:
        if len(buf) > MAX_COMMAND:
            raise LineTooLong
        return None
    line = bytes(buf[: i + 1])
    del buf[: i + 1]
    return line


class Scan(enum.Enum):
    """What `DataTransfer.scan` found in the buffer."""

    MORE = "more"  # no end yet: wait for more bytes
    PARK = "park"  # no end yet, and the buffer is past the spill threshold: park it first
    END = "end"  # the end of the data is in the buffer


class DataTransfer:
    """One DATA transmission: finds `<CRLF>.<CRLF>` in the connection's buffer.

    The buffer is searched with a virtual CRLF in front, so an empty message (".\\r\\n")
    and a first line of "." end it too. Too-big data is discarded as it arrives (the last
    four octets stay, in case they begin the end marker); past `spill.threshold` the caller
    parks what has arrived (`park`, off the event loop), so clients that never finish hold
    disk, not memory.
    """

    def __init__(self, buf: bytearray, max_size: int, spill: Spill | None) -> None:
        buf[0:0] = b"\r\n"
        self.max_size = max_size
        self.parked = Parked(spill)
        self.too_big = False
        self._pos = 0
        self._end = -1

    def scan(self, buf: bytearray) -> Scan:
        """Look at what has arrived since the last scan (nothing is read twice)."""
        i = buf.find(_END, self._pos)
        if i >= 0:
            self._end = i
            return Scan.END
        if self.parked.size + len(buf) > self.max_size + 8:
            self.too_big = True
            self.parked.drop()
            del buf[:-4]
        elif self.parked.wanted(len(buf)):
            return Scan.PARK
        self._pos = max(0, len(buf) - 4)
        return Scan.MORE

    def cut(self, buf: bytearray) -> bytes:
        """After `Scan.PARK`: what has arrived, but a split end marker, cut out of `buf` for
        `parked.write` (cut at once, so bytes arriving meanwhile are scanned first)."""
        self._pos = 0
        return self.parked.cut(buf, keep=4)

    def take(self, buf: bytearray) -> bytes:
        """After `Scan.END` with nothing parked: the data (not dot-unstuffed), cut out of
        `buf` with its end marker; b"" when it was too big."""
        assert self._end >= 0 and self.parked.file is None
        with memoryview(buf) as view:
            data = b"" if self.too_big else bytes(view[2 : self._end + 2])
        del buf[: self._end + 5]
        return data

    async def take_parked(self, buf: bytearray) -> bytes:
        """After `Scan.END` with a parked prefix: the whole data, read back off the loop."""
        assert self._end >= 0
        try:
            data = (await self.parked.take() + bytes(buf[: self._end + 2]))[2:]
        finally:
            self.parked.drop()
        del buf[: self._end + 5]
        return data


class Parked:
    """One message's parked prefix: an unlinked temporary file, created on first use."""

    def __init__(self, spill: Spill | None) -> None:
        self.spill = spill
        self.file: int | None = None
        self.size = 0
        self._writing: asyncio.Future[None] | None = None  # a write in a worker thread

    def wanted(self, buffered: int) -> bool:
        return self.spill is not None and buffered > self.spill.threshold

    @staticmethod
    def cut(buf: bytearray, *, keep: int) -> bytes:
        cut = len(buf) - keep
        chunk = bytes(buf[:cut])
        del buf[:cut]
        return chunk

    async def write(self, chunk: bytes) -> None:
        """Append `chunk` to the file (created on first use), from a worker thread."""
        assert self.spill is not None
        if self.file is None:
            self.spill.directory.mkdir(parents=True, exist_ok=True)
            self.file = await asyncio.to_thread(_unlinked_file, self.spill.directory)
        self._writing = asyncio.ensure_future(asyncio.to_thread(_write_all, self.file, chunk))
        await asyncio.shield(self._writing)  # cancelled or not, the thread writes on
        self._writing = None
        self.size += len(chunk)
        self.spill.parked_bytes += len(chunk)

    async def take(self) -> bytes:
        """Everything parked, in order (b"" when nothing was)."""
        if self.file is None:
            return b""
        return await asyncio.to_thread(os.pread, self.file, self.size, 0)

    def drop(self) -> None:
        """Close the file (freeing its space); after a write still running in its thread
        has finished, so the descriptor number is never reused under it."""
        file, writing = self.file, self._writing
        self.file, self._writing = None, None
        self.size = 0
        if file is None:
            return
        if writing is not None and not writing.done():
            writing.add_done_callback(lambda _: os.close(file))
        else:
            os.close(file)


def _unlinked_file(directory: Path) -> int:
    fd, name = tempfile.mkstemp(dir=directory, prefix="data-")
    os.unlink(name)
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
