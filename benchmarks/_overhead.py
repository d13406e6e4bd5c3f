"""Shared by the per-call benchmarks: time N calls of each case against N bare awaits.

Rounds repeat with the cases shuffled, and the garbage collector is off while a loop
runs, so drift on a shared machine hits every case alike; report the median.
"""

from __future__ import annotations

import gc
import random
import time
from collections.abc import Awaitable, Callable

Loop = Callable[[int], Awaitable[None]]
BARE = "bare await noop()"


async def noop() -> None:
    return None


async def bare(n: int) -> None:
    for _ in range(n):
        await noop()


async def timed(loop: Loop, n: int) -> float:
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        await loop(n)
        return time.perf_counter() - start
    finally:
        gc.enable()


async def measure(
    cases: dict[str, Loop], calls: int, repeats: int, *, warmup: int = 1000
) -> dict[str, list[float]]:
    """Per-call overhead over ``bare``, in microseconds, for each repeat; ``BARE`` holds
    the bare call's own cost."""
    overheads: dict[str, list[float]] = {name: [] for name in cases}
    overheads[BARE] = []
    names = list(cases)
    for loop in (bare, *cases.values()):
        await loop(warmup)
    for _ in range(repeats):
        random.shuffle(names)
        base = await timed(bare, calls)
        for name in names:
            elapsed = await timed(cases[name], calls)
            overheads[name].append((elapsed - base) / calls * 1e6)
        overheads[BARE].append(base / calls * 1e6)
    return overheads
