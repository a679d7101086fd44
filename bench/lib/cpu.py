"""CPU seconds a process tree has used (user + system, its reaped children included).

Throughput on a shared 2-core machine moves with whatever else runs; the CPU a relay
spends per message does much less, so relay.py reports both. The tree is the process and
every descendant alive now; what exited and was reaped is in its parent's cutime/cstime.
"""

from __future__ import annotations

import os
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _stats() -> dict[int, tuple[int, float]]:
    """pid -> (ppid, cpu seconds incl. reaped children) for every process we can read."""
    found: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        ppid = int(fields[1])
        utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
        found[int(entry.name)] = (ppid, (utime + stime + cutime + cstime) / TICK)
    return found


def tree_cpu_seconds(root: int) -> float:
    stats = _stats()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            total += stats[pid][1]
        todo += children.get(pid, [])
    return total
