"""Failed-login throttling for the submission port, per client address and per account.

Password guessing is cheap for the guesser and costly for us (each guess is a scrypt
hash), so after `MAX_FAILURES` failed logins from one address, or for one account,
within `WINDOW` seconds, AUTH is answered at once with `454 4.7.0` and no hash is
computed: a throttled client costs nothing and holds nothing open (no delay is added).
An IPv6 client is counted by its /64, which one subscriber usually holds whole. A
successful login clears its account's count (not its address's: one good password must
not buy an address more guesses at other accounts).

The counters live in memory, bounded by `MAX_KEYS` (the oldest are dropped first), and
start empty when the node starts or reloads its configuration.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable

MAX_FAILURES = 10
WINDOW = 900.0  # seconds
MAX_KEYS = 100_000


def address_key(ip: str) -> str:
    """The key an address is counted under: itself, or its /64 for IPv6."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return f"ip:{ip[:64]}"
    if addr.version == 6:
        return "ip:" + str(ipaddress.ip_network(f"{addr}/64", strict=False))
    return f"ip:{addr}"


class LoginThrottle:
    """Failure counts per key (`ip:...`, `user:...`) in a fixed window from the first."""

    def __init__(
        self,
        max_failures: int = MAX_FAILURES,
        window: float = WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.clock = clock
        self._failures: dict[str, tuple[int, float]] = {}  # key -> (count, first failure)

    def _count(self, key: str) -> int:
        entry = self._failures.get(key)
        if entry is None:
            return 0
        if self.clock() - entry[1] > self.window:
            del self._failures[key]
            return 0
        return entry[0]

    def blocked(self, ip: str, account: str | None = None) -> bool:
        """Whether this address (or account) has used up its failures."""
        if self._count(address_key(ip)) >= self.max_failures:
            return True
        return account is not None and self._count(f"user:{account}") >= self.max_failures

    def failed(self, ip: str, account: str) -> None:
        now = self.clock()
        for key in (address_key(ip), f"user:{account[:320]}"):
            count = self._count(key)
            first = self._failures[key][1] if count else now
            self._failures.pop(key, None)  # re-inserted last: the dict stays oldest-first
            self._failures[key] = (count + 1, first)
        while len(self._failures) > MAX_KEYS:
            del self._failures[next(iter(self._failures))]

    def succeeded(self, account: str) -> None:
        self._failures.pop(f"user:{account}", None)
