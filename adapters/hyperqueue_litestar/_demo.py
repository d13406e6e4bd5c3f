"""A few small tasks to try the server with: ``hyperqueue serve`` with no APP serves these.

``add`` returns at once, ``sleep`` takes a while (and reports progress), ``flaky``
fails at random and is retried, ``fail`` always fails (to see the dead-letter queue).
"""

from __future__ import annotations

import random

import anyio

import hyperqueue as hq
from hyperqueue.abc import Storage

__all__ = ["demo_queue"]


def demo_queue(storage: Storage | None = None) -> hq.Queue:
    """A queue over ``storage`` with the demo tasks registered (live streams resume
    from the storage's event log, so the bus needs no history)."""
    queue = hq.Queue(storage)

    @queue.task
    async def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    @queue.task(timeout=600.0)
    async def sleep(seconds: float = 1.0) -> float:
        """Sleep for ``seconds`` (at most 600), reporting progress every tenth."""
        seconds = min(max(seconds, 0.0), 600.0)
        for step in range(10):
            await anyio.sleep(seconds / 10)
            await hq.report_progress({"done": (step + 1) / 10})
        return seconds

    @queue.task(retry=hq.Retry(5, backoff=0.1, max_backoff=2.0, jitter=0.1))
    async def flaky(failure_rate: float = 0.5) -> str:
        """Fail with probability ``failure_rate``; retried up to 5 attempts."""
        if random.random() < failure_rate:  # a demo, not cryptography
            raise RuntimeError("flaky failed this time")
        return "ok"

    @queue.task
    async def fail(message: str = "this task always fails") -> None:
        """Always fail: the job ends in the dead-letter queue."""
        raise RuntimeError(message)

    @queue.task
    async def echo(value: object = None) -> object:
        """Return the value it was given."""
        return value

    return queue
