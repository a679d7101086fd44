"""The dashboard's numbers, from the trace store and the quarantine, and its chart.

Messages per hour by verdict count distinct queue ids per hour: accepted (received; SCL 5+
when the server said so: junk), quarantined, rejected (5xx at DATA) and deferred by the
client (4xx). The chart is inline SVG built here: no script, no external library.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from markupsafe import Markup, escape

from mxflow.store.sql import Database
from mxflow.store.trace import TraceSource, trace_database

VERDICTS = (
    ("accepted", "Accepted", "#2f855a"),
    ("junk", "Junk", "#d69e2e"),
    ("quarantined", "Quarantined", "#dd6b20"),
    ("rejected", "Rejected", "#c53030"),
)
_CASE = """
CASE
  WHEN event = 'quarantined' THEN 'quarantined'
  WHEN event = 'rejected' THEN 'rejected'
  WHEN scl >= 5 THEN 'junk'
  ELSE 'accepted'
END
"""


@dataclass
class Dashboard:
    hours: list[float]  # the start of each hour
    series: dict[str, list[int]]  # verdict -> count per hour
    totals: dict[str, int]
    top_sources: list[tuple[str, int]]
    top_senders: list[tuple[str, int]]


def _hour(db: Database) -> str:
    """The hour an event falls in, counted from the first (a `?`): SQLite's CAST truncates,
    PostgreSQL's rounds, so there it is FLOOR."""
    if db.dialect == "sqlite":
        return "CAST((ts - ?) / 3600 AS INTEGER)"
    return "CAST(FLOOR((ts - ?) / 3600) AS INTEGER)"


def _counts(
    db: Database, first: float, series: dict[str, list[int]]
) -> tuple[Counter[str], Counter[str]]:
    """The trace's part of the board: verdicts per hour into `series`; rejected sources
    and senders."""
    sources: Counter[str] = Counter()
    senders: Counter[str] = Counter()
    hours = len(next(iter(series.values())))
    rows = db.query(
        f"SELECT {_hour(db)}, {_CASE}, COUNT(DISTINCT queue_id)"
        " FROM events WHERE ts >= ? AND (event IN ('quarantined', 'rejected')"
        " OR (event = 'received' AND detail NOT LIKE 'DSN for%'"
        " AND detail NOT LIKE 'released from quarantine%')) GROUP BY 1, 2",
        (first, first),
    )
    for hour, verdict, count in rows:
        if 0 <= hour < hours and verdict in series:
            series[verdict][hour] += count
    for ip, count in db.query(
        "SELECT from_ip, COUNT(DISTINCT queue_id) FROM events WHERE ts >= ?"
        " AND event = 'rejected' AND from_ip != '' GROUP BY 1",
        (first,),
    ):
        sources[str(ip)] += int(count)
    for sender, count in db.query(
        "SELECT sender, COUNT(DISTINCT queue_id) FROM events WHERE ts >= ?"
        " AND event = 'received' AND sender != '' GROUP BY 1 ORDER BY 2 DESC LIMIT 10",
        (first,),
    ):
        senders[str(sender)] += int(count)
    return sources, senders


def dashboard(trace: TraceSource, quarantine: Any, *, hours: int = 24) -> Dashboard:
    """The last `hours` of the trace (the node's Database, or a SQLite file if it exists)."""
    now = time.time()
    first = (int(now // 3600) - hours + 1) * 3600
    starts = [float(first + 3600 * i) for i in range(hours)]
    series = {key: [0] * hours for key, _, _ in VERDICTS}
    sources: Counter[str] = Counter()
    senders: Counter[str] = Counter()
    if isinstance(trace, Database) or Path(trace).is_file():
        with trace_database(trace) as db:
            sources, senders = _counts(db, first, series)
    if quarantine is not None:
        for entry in quarantine.list(state=None):
            if entry.ts >= first and entry.client_ip:
                sources[entry.client_ip] += 1
    return Dashboard(
        hours=starts,
        series=series,
        totals={key: sum(values) for key, values in series.items()},
        top_sources=sources.most_common(8),
        top_senders=senders.most_common(8),
    )


def chart_svg(board: Dashboard, *, width: int = 720, height: int = 220) -> Markup:
    """A stacked bar chart, one bar per hour, as inline SVG (escaped; no script)."""
    pad_l, pad_b, pad_t = 36, 22, 10
    plot_w, plot_h = width - pad_l - 6, height - pad_b - pad_t
    n = len(board.hours)
    totals = [sum(board.series[k][i] for k, _, _ in VERDICTS) for i in range(n)]
    top = max([*totals, 1])
    step = plot_w / max(n, 1)
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="Messages per hour by verdict, last {n} hours" '
        'xmlns="http://www.w3.org/2000/svg">'
    ]
    for frac in (0.0, 0.5, 1.0):
        y = pad_t + plot_h * (1 - frac)
        parts.append(
            f'<line x1="{pad_l}" x2="{width - 4}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{pad_l - 6}" y="{y + 4:.1f}" class="axis" text-anchor="end">'
            f"{round(top * frac)}</text>"
        )
    for i, start in enumerate(board.hours):
        x = pad_l + i * step + step * 0.15
        y = pad_t + plot_h
        for key, label, colour in VERDICTS:
            count = board.series[key][i]
            if not count:
                continue
            h = plot_h * count / top
            y -= h
            hour = time.strftime("%H:00", time.gmtime(start))
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{step * 0.7:.1f}" height="{h:.1f}" '
                f'fill="{colour}"><title>{escape(hour)} {escape(label)}: {count}</title></rect>'
            )
        if i % 3 == 0:
            parts.append(
                f'<text x="{x + step * 0.35:.1f}" y="{height - 6}" class="axis" '
                f'text-anchor="middle">{time.strftime("%H", time.gmtime(start))}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))
