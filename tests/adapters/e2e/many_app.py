"""The queues that the processes of ``test_many_processes.py`` serve and work for.

``python -m hyperqueue_cli serve|worker many_app:ATTRIBUTE`` imports this module (the
tests put this folder on ``PYTHONPATH``); the tests import it too, to enqueue.

- ``queue``: ``work(i)`` returns ``i``; ``slow(seconds)`` sleeps, then returns the pid
  of the process that ran it; ``suicide()`` kills its own process with SIGKILL. Each
  run appends ``start|end <pid> <job id>`` to the file named by ``MANY_APP_LOG`` (when set).
- ``old_queue``: only task ``old`` (a worker from before a deploy);
  ``new_queue``: tasks ``old`` and ``new`` (after it).
"""

from __future__ import annotations

import os
import signal

import anyio

import hyperqueue as hq
from hyperqueue.abc import Storage

__all__ = ["make_queue", "new_queue", "old_queue", "queue", "rolling_queue"]


def _log(kind: str) -> None:
    path = os.environ.get("MANY_APP_LOG")
    if not path:
        return
    line = f"{kind} {os.getpid()} {hq.current_job().id}\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def make_queue(storage: Storage | None = None) -> hq.Queue:
    queue = hq.Queue(storage) if storage is not None else hq.Queue()

    @queue.task
    async def work(i: int) -> int:
        _log("start")
        _log("end")
        return i

    @queue.task
    async def slow(seconds: float) -> int:
        _log("start")
        await anyio.sleep(seconds)
        _log("end")
        return os.getpid()

    @queue.task
    async def suicide() -> None:
        _log("start")
        await anyio.sleep(0.3)  # the jobs claimed alongside finish first
        os.kill(os.getpid(), signal.SIGKILL)

    return queue


def rolling_queue(storage: Storage | None = None, *, new: bool = True) -> hq.Queue:
    queue = hq.Queue(storage) if storage is not None else hq.Queue()

    @queue.task
    async def old(i: int) -> str:
        return f"old {i}"

    if new:

        @queue.task
        async def new(i: int) -> str:
            return f"new {i}"

    return queue


queue = make_queue()
old_queue = rolling_queue(new=False)
new_queue = rolling_queue()
