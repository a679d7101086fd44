"""JSON log lines (`[log] format = "json"`): one object per line, for log shippers.

The text format (`TIME NODE[WORKER] LOGGER LEVEL message`) is for people; a log pipeline
would have to parse it back. Each JSON line carries the same facts as separate fields:
`time` (UTC, ISO 8601 with milliseconds), `node`, `logger`, `level`, `message`, and
`exception` (the traceback text) when there is one. The engine's messages keep their
`key=value` form inside `message`, unchanged, so text and JSON logs say the same thing.
"""

from __future__ import annotations

import datetime
import json
import logging


class JsonFormatter(logging.Formatter):
    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        entry: dict[str, object] = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "node": self.node,
            "logger": record.name,
            "level": record.levelname,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def use_json(node: str) -> None:
    """Switch every handler of the root logger to JSON lines."""
    for handler in logging.getLogger().handlers:
        handler.setFormatter(JsonFormatter(node))
