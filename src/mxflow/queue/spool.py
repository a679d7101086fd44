"""The durable spool: a message is acknowledged only once it is on disk and fsync'd.

Layout under the spool directory (plain files, so `mxflow queue` works on a running node):

    queue/<id>          a message: `MXSPOOL 1\\n`, one JSON envelope line, the raw bytes
    state/<id>.json     per-recipient delivery state (absent: every recipient pending)
    control/<id>.<op>   a request from the CLI (`retry`, `flush`, `hold`, `release`,
                        `delete`) the owning worker picks up
    control/drain       `mxflow queue drain`: every worker of the node stops accepting,
                        delivers what it holds and exits (JSON: the timeout)

A message file is written in place under its final name (no temporary file and rename):
on ext4 the fsync of a new file also commits its directory entry, so a message costs ONE
journal commit instead of two (write+fsync, rename, fsync dir). The envelope records the
body's size; a file whose size does not match was still being written (or was cut short
by a crash before its fsync, so never acknowledged): readers skip it, recovery removes it.

Group commit: `enqueue` hands the message to one committer task; the committer takes every
message waiting at that moment (write + fsync each file, four threads in parallel so the
fsyncs share journal commits; then ONE fsync of queue/ for the whole batch, which is what
POSIX asks for and is nearly free after the file fsyncs) and only then resolves each
caller's future: each 250 waits for its own fsync, while concurrent sessions share the
directory fsync and the thread hand-off. When no batch is being written, the message goes
to the writer thread at once (a lone sender does not wait a turn of the event loop);
messages that arrive while a batch is being written gather into the next one.
State files are replaced atomically but not fsync'd: losing one after a crash only
repeats a delivery attempt (at-least-once), never loses mail. A delivered message is
unlinked from a background thread (see `remove_later`).

Several worker processes may share one spool: a queue id carries the index of the worker
that created it, and a worker handles only ids it owns (`index % workers`), also after a
restart with a different number of workers.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import os
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mxflow.durable import fsync_dir
from mxflow.errors import MxflowError

MAGIC = b"MXSPOOL 1\n"
REMOVE_INTERVAL = 0.1  # s: delivered messages are unlinked in batches at most this often

PENDING = "pending"
DEFERRED = "deferred"
DELIVERED = "delivered"
BOUNCED = "bounced"


@dataclass
class Envelope:
    """What the SMTP transaction said about a message, stored with it."""

    queue_id: str
    mail_from: str
    rcpt_tos: list[str]
    received_at: float
    message_id: str = ""
    client_ip: str = ""
    helo: str = ""
    smtputf8: bool = False
    body_8bit: bool = False
    is_dsn: bool = False
    size: int = -1  # length of the raw message; lets a reader tell a complete file
    action: str = ""  # the filter's verdict when one ran ("deliver", "junk")

    def to_json(self) -> bytes:
        # vars, not asdict: the fields are plain values, and asdict's deep copy cost 11 µs
        # of the 14 on every message's way to its fsync
        return json.dumps(vars(self), separators=(",", ":")).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> Envelope:
        fields: dict[str, Any] = json.loads(data)
        return cls(**fields)


@dataclass
class RecipientState:
    status: str = PENDING
    reply: str = ""  # last reply or error, e.g. "451 4.3.0 try later (mx1.example)"
    attempts: int = 0


@dataclass
class QueueState:
    """Delivery state of one message: per recipient, plus the next attempt time."""

    rcpts: dict[str, RecipientState] = field(default_factory=dict)
    attempts: int = 0
    next_attempt: float = 0.0
    warned: bool = False  # the sender was told the message is delayed
    # Why the message is held (never attempted until released), or None. Kept in the
    # state file, so a hold survives a restart.
    held: str | None = None

    def pending(self) -> list[str]:
        return [r for r, s in self.rcpts.items() if s.status in (PENDING, DEFERRED)]

    def to_json(self) -> str:
        return json.dumps(
            {
                "rcpts": {r: asdict(s) for r, s in self.rcpts.items()},
                "attempts": self.attempts,
                "next_attempt": self.next_attempt,
                "warned": self.warned,
                "held": self.held,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> QueueState:
        data = json.loads(text)
        held = data.get("held")
        return cls(
            rcpts={r: RecipientState(**s) for r, s in data["rcpts"].items()},
            attempts=int(data.get("attempts", 0)),
            next_attempt=float(data.get("next_attempt", 0.0)),
            warned=bool(data.get("warned", False)),
            held=str(held) if held is not None else None,
        )


# What `mxflow queue` may ask the running owner of a message (control/<id>.<op>).
CONTROL_OPS = ("retry", "flush", "hold", "release", "delete")


@dataclass
class _Commit:
    """One group commit in flight: its callers, the names it makes durable, the write."""

    batch: list[tuple[str, bytes, bytes, asyncio.Future[None]]]
    fresh: list[str]
    written: asyncio.Future[None]


class SpoolError(MxflowError):
    """A spool file is missing, incomplete or not a spool file."""


# `mxflow queue drain` leaves this in the control directory. Unlike the per-message
# requests it is not taken by one worker: every worker of the node must see it, so it
# stays until the node has stopped (the process that owns the data dir removes it, and
# removes a stale one at start: a drain asked of a node that then died is not carried
# out by the next start).
DRAIN_REQUEST = "drain"


def request_drain(spool_dir: Path, timeout: float) -> None:
    """Ask the node running on `spool_dir` to drain within `timeout` seconds."""
    control = spool_dir / "control"
    tmp = control / f".drain.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"timeout": timeout, "asked": time.time()}))
    os.replace(tmp, control / DRAIN_REQUEST)


def drain_requested(spool_dir: Path) -> float | None:
    """The timeout of the pending drain request, or None when there is none."""
    try:
        data = json.loads((spool_dir / "control" / DRAIN_REQUEST).read_text())
        return max(0.0, float(data["timeout"]))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        return 0.0  # a damaged request still asks to drain: deliver nothing more, stop


def clear_drain(spool_dir: Path) -> None:
    """Forget a drain request (the node stopped, or a stale one found at start)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(spool_dir / "control" / DRAIN_REQUEST)


_counter = itertools.count(secrets.randbelow(1 << 16))


def owner_of(queue_id: str, workers: int) -> int:
    """The worker index that handles `queue_id` when `workers` processes share the spool."""
    try:
        return int(queue_id[13:15], 16) % max(workers, 1)
    except ValueError:
        return 0


def _size(entry: os.DirEntry[str]) -> int:
    try:
        return entry.stat().st_size
    except FileNotFoundError:
        return 0


class Spool:
    """One node's spool directory (see the module docstring for the layout)."""

    def __init__(
        self,
        path: str | Path,
        *,
        worker: int = 0,
        workers: int = 1,
        fsync: bool = True,
        preallocate: int = 0,
    ) -> None:
        self.path = Path(path)
        self.worker = worker
        self.workers = workers
        self.fsync = fsync
        self.queue = self.path / "queue"
        self.state = self.path / "state"
        self.control = self.path / "control"
        for d in (self.queue, self.state, self.control):
            d.mkdir(parents=True, exist_ok=True)
        self._batch: list[tuple[str, bytes, bytes, asyncio.Future[None]]] = []
        self._committer: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._prealloc_executor: ThreadPoolExecutor | None = None
        self._writers: ThreadPoolExecutor | None = None
        self._removals: list[tuple[str, bool]] = []
        self._remover: asyncio.Task[None] | None = None
        self._remover_executor: ThreadPoolExecutor | None = None
        self.batches = 0  # number of group commits so far (for measurements)
        self.committed = 0
        # Ids whose empty files already exist durably (see `_preallocate`).
        self.preallocate = preallocate if fsync else 0
        self._reserved: collections.deque[str] = collections.deque()
        self._fresh: list[str] = []  # created, durable after the next batch's directory fsync
        self._handed_out: set[str] = set()  # reserved ids given out, not yet written
        self._refill: asyncio.Future[list[str]] | None = None

    # ----------------------------------------------------------------- ids

    def _make_id(self) -> str:
        """A unique, time-ordered id: 13 hex digits of µs, 2 of worker index, 5 of counter."""
        n = next(_counter) & 0xFFFFF
        return f"{time.time_ns() // 1000:013X}{self.worker & 0xFF:02X}{n:05X}"

    def new_queue_id(self) -> str:
        """The id for the next message (a preallocated one when there is one).

        A caller that takes an id and then does not `enqueue` under it (the message was
        refused) must `release_id` it.
        """
        if self._reserved:
            queue_id = self._reserved.popleft()
            self._handed_out.add(queue_id)
        else:
            queue_id = self._make_id()
        if self.preallocate and not self._reserved and not self._fresh:
            self._start_refill()  # ran out (or the first message): else refilled after commits
        return queue_id

    def release_id(self, queue_id: str) -> None:
        """Give back an id from `new_queue_id` that no message was stored under."""
        if queue_id in self._handed_out:
            self._handed_out.discard(queue_id)
            self.remove_later(queue_id, has_state=False)

    def _start_refill(self) -> None:
        if self._refill is not None and not self._refill.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._ensure_executors()
        fut = loop.run_in_executor(self._prealloc_executor, self._preallocate, self.preallocate)
        fut.add_done_callback(self._refilled)
        self._refill = fut

    def _refilled(self, fut: asyncio.Future[list[str]]) -> None:
        if not fut.cancelled() and fut.exception() is None:
            self._fresh.extend(fut.result())

    def _preallocate(self, count: int) -> list[str]:
        """Create `count` empty files named by future ids (not fsync'd here).

        A message written into such a file later needs only its own fsync to be durable
        (its directory entry already is): one journal commit per message instead of two,
        which halves the latency of a lone sender. Readers ignore empty files.

        The names become durable with the directory fsync of the next group commit (see
        `_commit_loop`): on ext4 that batch's file fsyncs have already committed them, so
        the refill costs no journal commit of its own. (An fsync here, every 32 messages,
        was the periodic 10-60 ms stall of a lone sender's 250.) Until then they are
        `_fresh`, not handed out.
        """
        ids = [self._make_id() for _ in range(count)]
        for queue_id in ids:
            os.close(os.open(self.queue / queue_id, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        return ids

    def _ensure_executors(self) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool")
            self._prealloc_executor = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="spool-p"
            )
            self._writers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="spool-w")

    def owns(self, queue_id: str) -> bool:
        return owner_of(queue_id, self.workers) == self.worker

    @staticmethod
    def valid_id(queue_id: str) -> bool:
        return len(queue_id) == 20 and all(c in "0123456789ABCDEF" for c in queue_id)

    # ----------------------------------------------------------------- writing

    async def enqueue(
        self,
        mail_from: str,
        rcpt_tos: list[str],
        raw: bytes,
        *,
        queue_id: str | None = None,
        message_id: str = "",
        client_ip: str = "",
        helo: str = "",
        smtputf8: bool = False,
        body_8bit: bool = False,
        is_dsn: bool = False,
        action: str = "",
    ) -> Envelope:
        """Store a message durably and return its envelope (`.queue_id`).

        Returns only after the message file and its directory entry are fsync'd; this is
        what quarantine release and DSN generation use to (re-)inject mail.
        """
        env = Envelope(
            queue_id=queue_id or self.new_queue_id(),
            mail_from=mail_from,
            rcpt_tos=list(rcpt_tos),
            received_at=time.time(),
            message_id=message_id,
            client_ip=client_ip,
            helo=helo,
            smtputf8=smtputf8,
            body_8bit=body_8bit,
            is_dsn=is_dsn,
            size=len(raw),
            action=action,
        )
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._batch.append((env.queue_id, MAGIC + env.to_json(), raw, fut))
        if self._committer is None or self._committer.done():
            # the writer thread starts on it now, not a turn of the event loop later (30 µs
            # of a lone sender's wait for its 250); later arrivals gather behind it
            self._committer = asyncio.create_task(self._commit_loop(self._submit_batch()))
        await fut
        return env

    async def inject(
        self, mail_from: str, rcpt_tos: list[str], raw: bytes, **envelope: Any
    ) -> Envelope:
        """`enqueue` from another process (e.g. quarantine release) and tell the node.

        The running node delivers only what it was told about; this leaves a `retry`
        request that the owning worker picks up within a second (or at its next start).
        """
        env = await self.enqueue(mail_from, rcpt_tos, raw, **envelope)
        self.request(env.queue_id, "retry")
        return env

    def _submit_batch(self) -> _Commit:
        """Hand every message waiting now to the writer thread (one group commit)."""
        self._ensure_executors()
        batch, self._batch = self._batch, []
        items = [(q, h, r, q in self._handed_out) for q, h, r, _ in batch]
        for q, *_ in batch:
            self._handed_out.discard(q)
        fresh, self._fresh = self._fresh, []  # created before this batch's fsyncs
        loop = asyncio.get_running_loop()
        written = loop.run_in_executor(self._executor, self._write_batch, items, bool(fresh))
        return _Commit(batch, fresh, written)

    async def _commit_loop(self, commit: _Commit) -> None:
        while True:
            try:
                await commit.written
            except Exception as exc:
                self._fresh[:0] = commit.fresh
                for *_, fut in commit.batch:
                    if not fut.done():
                        fut.set_exception(SpoolError(f"spool write failed: {exc}"))
            else:
                self._committed(commit)
            if not self._batch:
                return
            commit = self._submit_batch()

    def _committed(self, commit: _Commit) -> None:
        """A batch is on disk: its names are durable, its callers get their 250."""
        if self.fsync:
            self._reserved.extend(commit.fresh)
        else:
            self._fresh[:0] = commit.fresh
        self.batches += 1
        self.committed += len(commit.batch)
        for *_, fut in commit.batch:
            if not fut.done():
                fut.set_result(None)
        if self.preallocate and len(self._reserved) + len(self._fresh) < self.preallocate // 2:
            self._start_refill()

    def _write_one(self, item: tuple[str, bytes, bytes, bool]) -> str:
        queue_id, header, raw, exists = item
        flags = os.O_WRONLY if exists else os.O_WRONLY | os.O_CREAT | os.O_EXCL
        fd = os.open(self.queue / queue_id, flags, 0o600)
        try:
            view = memoryview(raw)
            done = os.writev(fd, [header, view])
            total = len(header) + len(raw)
            while done < total:  # short write: finish it
                off = done - len(header)
                if off < 0:
                    done += os.write(fd, header[done:])
                else:
                    done += os.write(fd, view[off:])
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        return queue_id

    def _write_batch(
        self, items: list[tuple[str, bytes, bytes, bool]], new_names: bool = False
    ) -> None:
        """Write (and fsync) the files in parallel, then one fsync of the directory.

        `new_names`: preallocated names were created since the last directory fsync; the
        directory fsync then makes them durable too.

        Concurrent fsyncs share journal commits on ext4 (about 3x cheaper each than one
        after the other at 100 KB); the directory fsync makes the new entries durable on
        any file system.
        """
        written: list[str] = []
        try:
            if len(items) == 1 or self._writers is None:
                written = [self._write_one(item) for item in items]
            else:
                futures = [self._writers.submit(self._write_one, item) for item in items]
                errors = []
                for fut in futures:
                    try:
                        written.append(fut.result())
                    except Exception as exc:
                        errors.append(exc)
                if errors:
                    raise errors[0]
            if self.fsync and (new_names or not all(exists for *_, exists in items)):
                fsync_dir(self.queue)  # only new names need it: handed-out ones are durable
        except BaseException:
            for queue_id, *_ in items:  # none of them is acknowledged: remove them all
                with contextlib.suppress(OSError):
                    os.unlink(self.queue / queue_id)
            raise

    # ----------------------------------------------------------------- reading / state

    def ids(self) -> list[str]:
        """Every queue id with a message (not the empty preallocated files), oldest first."""
        with os.scandir(self.queue) as entries:
            return sorted(e.name for e in entries if self.valid_id(e.name) and _size(e) > 0)

    def owned_ids(self) -> list[str]:
        return [q for q in self.ids() if self.owns(q)]

    def exists(self, queue_id: str) -> bool:
        return (self.queue / queue_id).exists()

    def load(self, queue_id: str) -> tuple[Envelope, bytes]:
        """The envelope and raw message of `queue_id` (raises SpoolError when absent)."""
        if not self.valid_id(queue_id):
            raise SpoolError(f"{queue_id!r} is not a queue id")
        try:
            data = (self.queue / queue_id).read_bytes()
        except FileNotFoundError:
            raise SpoolError(f"no message {queue_id} in {self.queue}") from None
        if not data.startswith(MAGIC):
            raise SpoolError(f"{queue_id}: not a spool file")
        nl = data.find(b"\n", len(MAGIC))
        try:
            env = Envelope.from_json(data[len(MAGIC) : nl])
        except (ValueError, TypeError):
            raise SpoolError(f"{queue_id}: incomplete spool file") from None
        raw = data[nl + 1 :]
        if nl < 0 or (env.size >= 0 and len(raw) != env.size):
            raise SpoolError(f"{queue_id}: incomplete spool file")
        return env, raw

    def load_envelope(self, queue_id: str) -> Envelope:
        """The envelope alone (raises SpoolError for a missing or incomplete file)."""
        try:
            with open(self.queue / queue_id, "rb") as f:
                if f.readline() != MAGIC:
                    raise SpoolError(f"{queue_id}: not a spool file")
                line = f.readline()
                env = Envelope.from_json(line)
                size = os.fstat(f.fileno()).st_size
        except FileNotFoundError:
            raise SpoolError(f"no message {queue_id} in {self.queue}") from None
        except (ValueError, TypeError):
            raise SpoolError(f"{queue_id}: incomplete spool file") from None
        if env.size >= 0 and size != len(MAGIC) + len(line) + env.size:
            raise SpoolError(f"{queue_id}: incomplete spool file")
        return env

    def complete(self, queue_id: str) -> bool:
        """True when `queue_id` is a whole message (not one being written, or cut short)."""
        try:
            self.load_envelope(queue_id)
        except (SpoolError, OSError):
            return False
        return True

    def load_state(self, queue_id: str, env: Envelope | None = None) -> QueueState:
        try:
            return QueueState.from_json((self.state / f"{queue_id}.json").read_text())
        except (FileNotFoundError, ValueError, KeyError):
            env = env or self.load_envelope(queue_id)
            return QueueState(rcpts={r: RecipientState() for r in env.rcpt_tos})

    def save_state(self, queue_id: str, state: QueueState) -> None:
        """Replace the state file atomically (not fsync'd: see the module docstring)."""
        tmp = self.state / f".{queue_id}.{os.getpid()}.tmp"
        tmp.write_text(state.to_json())
        os.replace(tmp, self.state / f"{queue_id}.json")

    def remove(self, queue_id: str) -> None:
        """Forget a finished (or deleted) message."""
        for p in (self.queue / queue_id, self.state / f"{queue_id}.json"):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()

    def remove_later(self, queue_id: str, *, has_state: bool = True) -> None:
        """Forget a finished message from a background thread, in batches.

        An unlink right after other files' fsyncs can wait on the journal for a
        millisecond or more; done on the event loop it stalls every session. Removals are
        gathered for `REMOVE_INTERVAL` and done together: one thread hand-off per message
        (a task, a worker thread woken, the event loop woken back) cost a lone sender
        about 5 context switches and 0.1 ms of CPU a message, beside its critical path.
        A removal lost in a crash only means one more delivery of that message
        (at-least-once), so the wait costs nothing in safety.
        """
        self._removals.append((queue_id, has_state))
        if self._remover is None or self._remover.done():
            self._remover = asyncio.create_task(self._remove_loop())

    async def _remove_loop(self) -> None:
        if self._remover_executor is None:
            self._remover_executor = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="spool-rm"
            )
        loop = asyncio.get_running_loop()
        while self._removals:
            await asyncio.sleep(REMOVE_INTERVAL)
            batch, self._removals = self._removals, []
            await loop.run_in_executor(self._remover_executor, self._remove_batch, batch)

    def _remove_batch(self, batch: list[tuple[str, bool]]) -> None:
        for queue_id, has_state in batch:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.queue / queue_id)
            if has_state:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.state / f"{queue_id}.json")

    def clean_incomplete(self) -> int:
        """At start: remove this worker's unused preallocated files and those cut short by
        a crash (never acknowledged); returns how many of the latter there were."""
        removed = 0
        with os.scandir(self.queue) as entries:
            names = [e.name for e in entries if self.valid_id(e.name) and self.owns(e.name)]
        for queue_id in names:
            path = self.queue / queue_id
            if not self.complete(queue_id):
                with contextlib.suppress(FileNotFoundError):
                    removed += path.stat().st_size > 0  # empty: an unused preallocation
                    path.unlink()
        return removed

    # ----------------------------------------------------------------- CLI control

    def request(self, queue_id: str, op: str, detail: str = "") -> None:
        """Ask the running owner of `queue_id` to carry out `op` (one of CONTROL_OPS).

        `detail` is stored in the request file (the reason of a `hold`); the file name is
        written last (rename), so the owner never reads a half-written request.
        """
        if op not in CONTROL_OPS:
            raise SpoolError(f"unknown operation {op!r}")
        tmp = self.control / f".{queue_id}.{op}.{os.getpid()}.tmp"
        tmp.write_text(detail or str(time.time()))
        os.replace(tmp, self.control / f"{queue_id}.{op}")

    def take_requests_with_detail(self) -> Iterator[tuple[str, str, str]]:
        """As `take_requests`, with each request's stored detail (the hold reason)."""
        try:
            names = os.listdir(self.control)
        except FileNotFoundError:
            return
        for name in names:
            queue_id, _, op = name.partition(".")
            if not self.valid_id(queue_id) or not self.owns(queue_id):
                continue
            path = self.control / name
            with contextlib.suppress(FileNotFoundError):
                detail = path.read_text(errors="replace")
                os.unlink(path)
                yield queue_id, op, detail

    def take_requests(self) -> Iterator[tuple[str, str]]:
        """Pending CLI requests for ids this worker owns; each is removed as it is taken."""
        for queue_id, op, _ in self.take_requests_with_detail():
            yield queue_id, op

    def close(self) -> None:
        """Finish pending writes and removals (call after the event loop work is done)."""
        if self._remover is not None and not self._remover.done():
            with contextlib.suppress(RuntimeError):  # its loop already closed
                self._remover.cancel()  # what it was waiting to remove is removed here
        self._removals += [(q, False) for q in (*self._reserved, *self._fresh, *self._handed_out)]
        self._reserved.clear()
        self._fresh.clear()
        self._handed_out.clear()
        if self._removals:
            self._remove_batch(self._removals)
            self._removals = []
        executors = (self._executor, self._prealloc_executor, self._writers, self._remover_executor)
        for executor in executors:
            if executor is not None:
                executor.shutdown(wait=True)
        self._executor = self._prealloc_executor = self._writers = self._remover_executor = None
