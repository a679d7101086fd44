"""The lab's node configurations written as TOML files, for nodes that run as processes.

`--nodes 2` starts each gateway node as `mxflow serve --config FILE`, so it can be killed
for real; its configuration is the same dict the in-process nodes are built from, written
the way an administrator would write it. Python reads TOML (tomllib) but does not write
it, and the lab's tables need only strings, numbers, booleans, arrays of those, tables and
arrays of tables: that is all this writes (a test reads every file back with tomllib).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {type(value).__name__} {value!r}")


def _is_tables(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)


def _table(path: list[str], table: Mapping[str, Any], out: list[str]) -> None:
    scalars = {k: v for k, v in table.items() if not isinstance(v, Mapping) and not _is_tables(v)}
    for key, value in scalars.items():
        out.append(f"{_key(key)} = {_value(value)}")
    for key, value in table.items():
        if isinstance(value, Mapping):
            name = [*path, _key(key)]
            out += ["", f"[{'.'.join(name)}]"]
            _table(name, value, out)
        elif _is_tables(value):
            for item in value:
                name = [*path, _key(key)]
                out += ["", f"[[{'.'.join(name)}]]"]
                _table(name, item, out)


def dumps(data: Mapping[str, Any]) -> str:
    """`data` as TOML text."""
    out: list[str] = []
    _table([], data, out)
    return "\n".join(out).lstrip("\n") + "\n"


def write(path: Path, data: Mapping[str, Any], comment: str = "") -> None:
    """Write `data` to `path` as TOML, with `comment` lines on top."""
    head = "".join(f"# {line}\n" for line in comment.splitlines())
    path.write_text(head + dumps(data))
