"""Reading the trace: one row per recipient, and one message's hops across nodes.

The trace holds events; an administrator asks about messages. Events are joined into one
message when they share a Message-ID (with or without angle brackets), a queue id, or when
one hop's reply names the next hop's queue id ("250 ... queued as X"), so a message that
passed a gateway and a mailbox host — both writing to one shared store — is one trace. Each
recipient of it is one row (the reference's message trace), whose status is the latest
status that the furthest hop gave it.
"""

from __future__ import annotations

import datetime
import re
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from mxflow.store.sql import Database
from mxflow.store.trace import TraceEvent, TraceSource, query_events, trace_database

_QUEUED_AS = re.compile(r"queued as ([A-Za-z0-9]+)")
_CHUNK = 400
_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")


def bare_message_id(text: str) -> str:
    """`<a@b>` and `a@b` are the same Message-ID."""
    return text.strip().strip("<>").strip()


@dataclass
class RecipientRow:
    """One recipient of one message: the reference's message-trace row."""

    id: str  # the trace id: the bare Message-ID, else the first queue id
    message_id: str
    recipient: str
    status: str
    sender: str
    from_ip: str
    to_ip: str
    size: int
    subject: str
    received: float
    updated: float
    queue_ids: list[str] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return dict(vars(self))


@dataclass
class Hop:
    """What one node did with one queue id: its events in order."""

    node: str
    queue_id: str
    events: list[TraceEvent]

    @property
    def started(self) -> float:
        return self.events[0].ts


@dataclass
class MessageTrace:
    id: str
    message_id: str
    rows: list[RecipientRow]
    hops: list[Hop]


class _Groups:
    """Union-find over 'q:QUEUE_ID' and 'm:MESSAGE_ID' keys."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, key: str) -> str:
        self.parent.setdefault(key, key)
        while self.parent[key] != key:
            self.parent[key] = self.parent[self.parent[key]]
            key = self.parent[key]
        return key

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra


def _links(event: TraceEvent) -> list[str]:
    keys = [f"q:{event.queue_id}"]
    if event.message_id:
        keys.append(f"m:{bare_message_id(event.message_id)}")
    if event.event == "delivered" and (m := _QUEUED_AS.search(event.reply or event.detail)):
        keys.append(f"q:{m.group(1)}")
    return keys


def group_events(events: Iterable[TraceEvent]) -> list[list[TraceEvent]]:
    """The events split into messages (each oldest first), newest message first."""
    groups = _Groups()
    listed = list(events)
    for event in listed:
        keys = _links(event)
        for key in keys[1:]:
            groups.union(keys[0], key)
    by_root: dict[str, list[TraceEvent]] = {}
    for event in listed:
        by_root.setdefault(groups.find(f"q:{event.queue_id}"), []).append(event)
    messages = [sorted(evs, key=lambda e: e.ts) for evs in by_root.values()]
    return sorted(messages, key=lambda evs: evs[0].ts, reverse=True)


def _first(values: Iterable[str]) -> str:
    return next((v for v in values if v), "")


def rows_of(events: list[TraceEvent]) -> list[RecipientRow]:
    """One row per recipient of one message's events (oldest first)."""
    message_id = _first(e.message_id for e in events)
    trace_id = bare_message_id(message_id) or events[0].queue_id
    node_start: dict[str, float] = {}
    for e in events:
        node_start.setdefault(e.node, e.ts)
    received = [e for e in events if e.event == "received"]
    rows = []
    recipients = dict.fromkeys(e.recipient.lower() for e in events if e.recipient)
    for rcpt in recipients:
        mine = [e for e in events if e.recipient.lower() == rcpt]
        with_status = [e for e in mine if e.status]
        last = max(with_status, key=lambda e: (node_start[e.node], e.ts), default=mine[-1])
        delivered = [e for e in mine if e.event == "delivered" and e.to_ip]
        if not any(e.event == "received" for e in mine) and rcpt == _first(
            e.sender.lower() for e in events
        ):
            continue  # the DSN notice to the sender, not a recipient of this message
        rows.append(
            RecipientRow(
                id=trace_id,
                message_id=message_id,
                recipient=rcpt,
                status=last.status,
                sender=_first(e.sender for e in events),
                from_ip=_first(e.from_ip for e in received),
                to_ip=delivered[-1].to_ip if delivered else "",
                size=next((e.size for e in received if e.size), 0),
                subject=_first(e.subject for e in events),
                received=events[0].ts,
                updated=mine[-1].ts,
                queue_ids=list(dict.fromkeys(e.queue_id for e in mine)),
                nodes=list(dict.fromkeys(e.node for e in mine)),
            )
        )
    return rows


def hops_of(events: list[TraceEvent]) -> list[Hop]:
    hops: dict[tuple[str, str], Hop] = {}
    for e in events:
        hops.setdefault((e.node, e.queue_id), Hop(e.node, e.queue_id, [])).events.append(e)
    return sorted(hops.values(), key=lambda h: h.started)


def in_domains(row: RecipientRow, domains: Collection[str] | None) -> bool:
    """Whether a domain administrator of `domains` may see the row (None: everyone)."""
    if domains is None:
        return True
    for address in (row.recipient, row.sender):
        if address.rpartition("@")[2].lower() in domains:
            return True
    return False


def _chunks(values: list[str]) -> Iterable[list[str]]:
    for i in range(0, len(values), _CHUNK):
        yield values[i : i + _CHUNK]


def _expand(db: Database, seeds: list[TraceEvent]) -> list[TraceEvent]:
    """Every event of the messages `seeds` belong to (two rounds of joining keys)."""
    seen: dict[tuple[object, ...], TraceEvent] = {}
    events = list(seeds)
    queue_ids: set[str] = set()
    message_ids: set[str] = set()
    for _ in range(3):
        new_q = {e.queue_id for e in events} - queue_ids
        new_q |= {m.group(1) for e in events if (m := _QUEUED_AS.search(e.reply))} - queue_ids
        new_m = {bare_message_id(e.message_id) for e in events if e.message_id} - message_ids
        if not new_q and not new_m:
            break
        queue_ids |= new_q
        message_ids |= new_m
        events = []
        for chunk in _chunks(sorted(new_q)):
            events += query_events(db, f"queue_id IN ({','.join('?' * len(chunk))})", chunk)
        forms = [f for m in sorted(new_m) for f in (m, f"<{m}>")]
        for chunk in _chunks(forms):
            events += query_events(db, f"message_id IN ({','.join('?' * len(chunk))})", chunk)
        for e in events:
            seen[(e.ts, e.node, e.queue_id, e.event, e.recipient, e.detail)] = e
    return sorted(seen.values(), key=lambda e: e.ts)


def parse_when(text: str, *, now: float | None = None) -> float:
    """A time: ISO 8601 (UTC unless it says otherwise), or "2h" / "30m" / "1d" ago."""
    now = time.time() if now is None else now
    if m := _RELATIVE.match(text):
        return now - float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    try:
        when = datetime.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r}: expected a time like 2026-12-04T13:00 or 2h") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


@dataclass
class TraceQuery:
    """What to look for; every field is optional. Sender and recipient match a part of
    the address (case-insensitive), status exactly."""

    sender: str = ""
    recipient: str = ""
    since: float | None = None
    until: float | None = None
    status: str = ""
    message_id: str = ""
    limit: int = 500


def search(
    source: TraceSource, q: TraceQuery, *, domains: Collection[str] | None = None
) -> list[RecipientRow]:
    """Recipient rows matching `q`, newest first; `domains` limits them to those domains.

    `source` is the node's trace Database (SQLite or the shared PostgreSQL) or the path of
    a SQLite trace file."""
    where: list[str] = ["1 = 1"]
    args: list[object] = []
    if q.since is not None:
        where.append("ts >= ?")
        args.append(q.since)
    if q.until is not None:
        where.append("ts <= ?")
        args.append(q.until)
    if q.message_id:
        bare = bare_message_id(q.message_id)
        where.append("message_id IN (?, ?)")
        args += [bare, f"<{bare}>"]
    if q.recipient:
        where.append("LOWER(recipient) LIKE ?")  # PostgreSQL's LIKE minds case, SQLite's not
        args.append(f"%{q.recipient.lower()}%")
    if q.sender:
        where.append("LOWER(sender) LIKE ?")
        args.append(f"%{q.sender.lower()}%")
    with trace_database(source) as db:
        seeds = query_events(db, " AND ".join(where), args, newest=q.limit * 20)
        expanded = _expand(db, seeds)
    rows: list[RecipientRow] = []
    for events in group_events(expanded):
        for row in rows_of(events):
            if _matches(row, q) and in_domains(row, domains):
                rows.append(row)
    rows.sort(key=lambda r: r.received, reverse=True)
    return rows[: q.limit]


def _matches(row: RecipientRow, q: TraceQuery) -> bool:
    if q.status and row.status.lower() != q.status.lower():
        return False
    if q.recipient and q.recipient.lower() not in row.recipient:
        return False
    if q.sender and q.sender.lower() not in row.sender.lower():
        return False
    if q.since is not None and row.updated < q.since:
        return False
    return not (q.until is not None and row.received > q.until)


def show(
    source: TraceSource, trace_id: str, *, domains: Collection[str] | None = None
) -> MessageTrace | None:
    """One message by Message-ID (with or without brackets) or queue id; None if unknown
    (or outside `domains`)."""
    bare = bare_message_id(trace_id)
    with trace_database(source) as db:
        seeds = query_events(
            db, "message_id IN (?, ?) OR queue_id = ?", (bare, f"<{bare}>", trace_id.strip())
        )
        if not seeds:
            return None
        expanded = _expand(db, seeds)
    groups = group_events(expanded)
    events = groups[0] if len(groups) == 1 else max(groups, key=len)
    rows = [r for r in rows_of(events) if in_domains(r, domains)]
    if domains is not None and not rows:
        return None
    message_id = _first(e.message_id for e in events)
    return MessageTrace(
        id=bare_message_id(message_id) or events[0].queue_id,
        message_id=message_id,
        rows=rows,
        hops=hops_of(events),
    )
