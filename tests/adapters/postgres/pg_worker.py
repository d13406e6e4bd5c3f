"""A worker or a producer process on a shared PostgreSQL database, for the crash tests
of ``test_postgres_processes.py`` (run as a script: ``python pg_worker.py MODE DSN ...``).

- ``worker DSN LOG NAME``: a pool of 4 runners with a 1 s lease; every run of a job
  appends ``start <id>`` then ``end <id>`` to LOG; prints ``ready`` once running and
  drains on SIGTERM.
- ``freeze DSN NAME``: claims one job with a 1 s lease, prints its id and token, then
  waits for a line on stdin (frozen meanwhile) and tries to finish it: prints
  ``accepted`` or ``refused``.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import anyio

import hyperqueue as hq
from hyperqueue_postgres import PostgresStorage

LEASE = 1.0


def make_queue(dsn: str, log: str | None = None) -> hq.Queue:
    queue = hq.Queue(PostgresStorage(dsn, poll_interval=0.2))

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


async def worker(dsn: str, log: str, name: str) -> None:
    queue = make_queue(dsn, log)
    async with queue:
        with anyio.open_signal_receiver(signal.SIGTERM) as signals:
            async with queue.worker(concurrency=4, lease=LEASE, name=name, drain_timeout=5):
                print("ready", flush=True)
                async for _ in signals:
                    break


async def freeze(dsn: str, name: str) -> None:
    storage = PostgresStorage(dsn)
    await storage.open()
    try:
        [job] = await storage.claim(None, limit=1, now=time.time(), lease=LEASE, worker=name)
        print(job.id, job.token, flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)
        outcome = hq.Outcome(id=job.id, token=job.token, status=hq.JobStatus.COMPLETED)
        [done] = await storage.finish([outcome], now=time.time())
        print("refused" if done is None else "accepted", flush=True)
    finally:
        await storage.aclose()


def main(argv: list[str]) -> None:
    mode, dsn, *rest = argv
    if mode == "worker":
        anyio.run(worker, dsn, rest[0], rest[1], backend="asyncio")
    elif mode == "freeze":
        anyio.run(freeze, dsn, rest[0], backend="asyncio")
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
