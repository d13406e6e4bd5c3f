"""A worker or a producer process on a shared SQLite file, for the crash tests.

Run with ``sys.executable mp_app.py MODE DB ...``:

- ``worker DB LOG NAME``: a pool of 4 runners with a 1 s lease; every run of a job
  appends ``start <id>`` then ``end <id>`` to LOG; prints ``ready`` once running and
  drains on SIGTERM.
- ``produce DB COUNT``: enqueues COUNT jobs from 4 concurrent tasks and prints each
  job's id once its enqueue returned.
"""

from __future__ import annotations

import os
import signal
import sys

import anyio

import hyperqueue as hq
from hyperqueue_sqlite import SQLiteStorage

LEASE = 1.0


def make_queue(db: str, log: str | None = None) -> hq.Queue:
    queue = hq.Queue(SQLiteStorage(db))

    @queue.task
    async def work(i: int, ms: int) -> int:
        job = hq.current_job()
        if log is not None:
            _append(log, f"start {job.id}\n")
        await anyio.sleep(ms / 1000)
        if log is not None:
            _append(log, f"end {job.id}\n")
        return i

    return queue


def _append(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


async def worker(db: str, log: str, name: str) -> None:
    queue = make_queue(db, log)
    async with queue:
        with anyio.open_signal_receiver(signal.SIGTERM) as signals:
            async with queue.worker(concurrency=4, lease=LEASE, name=name, drain_timeout=5):
                print("ready", flush=True)
                async for _ in signals:
                    break


async def produce(db: str, count: int) -> None:
    queue = make_queue(db)
    work = queue.tasks["work"]
    async with queue:

        async def producer(start: int) -> None:
            for i in range(start, count, 4):
                job = await work.options(max_attempts=3).enqueue(i, 0)
                print(job.id, flush=True)

        async with anyio.create_task_group() as tg:
            for start in range(4):
                tg.start_soon(producer, start)


def main(argv: list[str]) -> None:
    mode, db, *rest = argv
    if mode == "worker":
        anyio.run(worker, db, rest[0], rest[1])
    elif mode == "produce":
        anyio.run(produce, db, int(rest[0]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
