"""Where CPU-heavy authentication work runs, so the event loop never stalls on it.

Canonicalising a body and pure-Python RSA (dkimpy) are ordinary CPU work: for a normal
message a worker thread is enough. For a large one it is not: dkimpy canonicalises the
whole body in single regex passes, each holding the GIL for as long as it runs (about
0.3 s for a 3 MB body, measured), which a thread cannot hide from the loop. Large
messages therefore go to a small process pool (spawned, not forked: forking a process
that runs an event loop and threads is unsafe).
"""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import ParamSpec, TypeVar

LARGE_MESSAGE = 512 * 1024
"""Bytes from which verification, signing and sealing run in a separate process."""

P = ParamSpec("P")
R = TypeVar("R")


@functools.cache
def process_pool() -> ProcessPoolExecutor:
    """The shared pool for large messages, started on first use."""
    return ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn"))


async def run_heavy(size: int, func: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Run `func` off the event loop: in a thread, or in a process when `size` is large.

    `func` must be a module-level function with picklable arguments and result.
    """
    if size < LARGE_MESSAGE:
        return await asyncio.to_thread(func, *args, **kwargs)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(process_pool(), functools.partial(func, *args, **kwargs))
