"""How many inbound connections a node holds at once, kept under its file-descriptor limit.

Past the limit, asyncio's accept() fails with EMFILE on every wake-up (a traceback each
time) and fresh clients are locked out while slow ones hold every descriptor. So the node
raises its soft RLIMIT_NOFILE as far as the hard limit allows, and admits at most
`max_connections` — never more than three quarters of the descriptors, less a reserve for
the spool, the trace, DNS and outbound delivery — answering the rest `421 4.7.0` at once.
"""

from __future__ import annotations

import resource

RESERVE = 128  # descriptors kept for everything but inbound sessions
TARGET_NOFILE = 65536


def raise_nofile_limit() -> int:
    """Raise the soft descriptor limit toward the hard one; the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = TARGET_NOFILE if hard == resource.RLIM_INFINITY else min(hard, TARGET_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    return int(soft) if soft != resource.RLIM_INFINITY else TARGET_NOFILE


class ConnectionBudget:
    """The node's inbound connections across all its listeners."""

    def __init__(self, max_connections: int, nofile: int | None = None) -> None:
        nofile = raise_nofile_limit() if nofile is None else nofile
        self.capacity = max(1, min(max_connections, (nofile - RESERVE) * 3 // 4))
        self.open = 0

    def admit(self) -> bool:
        """Take a place for a new connection; False when the node is full."""
        if self.open >= self.capacity:
            return False
        self.open += 1
        return True

    def release(self) -> None:
        self.open -= 1
