"""Running a worker pool from a script, until SIGTERM or SIGINT asks it to drain."""

from __future__ import annotations

import signal
from collections.abc import Sequence

import anyio

from ._queue import Queue

__all__ = ["run_worker"]


async def run_worker(
    queue: Queue,
    *,
    concurrency: int = 10,
    queues: Sequence[str] | None = None,
    lease: float = 30.0,
    drain_timeout: float = 30.0,
    signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT),
) -> None:
    """Run workers for ``queue`` until one of ``signals`` arrives, then drain and return.

    Draining stops claiming, lets running jobs finish for up to ``drain_timeout``
    seconds, then cancels the rest and hands them back as pending for another worker.
    Use from a script: ``anyio.run(hq.run_worker, queue)``.
    """
    async with queue:
        with anyio.open_signal_receiver(*signals) as received:
            async with queue.worker(
                concurrency=concurrency, queues=queues, lease=lease, drain_timeout=drain_timeout
            ):
                async for _ in received:
                    break
