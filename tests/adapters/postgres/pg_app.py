"""A worker process on PostgreSQL for the tests of this folder (run as a script).

``python pg_app.py`` reads ``HQ_DSN`` (the database), ``HQ_LEASE`` (seconds, default
30) and ``HQ_LOG`` (a file each run appends ``start|end <pid> <job id>`` to), runs a
worker pool of concurrency 4 until SIGTERM, and prints ``ready`` once it claims.
Task ``slow(seconds)`` sleeps, then returns the pid of the process that ran it.
"""

from __future__ import annotations

import os
import signal
import sys

import anyio

import hyperqueue as hq
from hyperqueue_postgres import PostgresStorage


def _log(kind: str) -> None:
    path = os.environ.get("HQ_LOG")
    if path:
        line = f"{kind} {os.getpid()} {hq.current_job().id}\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


def make_queue(dsn: str) -> hq.Queue:
    queue = hq.Queue(PostgresStorage(dsn))

    @queue.task
    async def slow(seconds: float) -> int:
        _log("start")
        await anyio.sleep(seconds)
        _log("end")
        return os.getpid()

    return queue


queue = make_queue("postgresql://set-by-the-command-line/--dsn")
"""For ``hyperqueue worker pg_app:queue --dsn ...``, which puts it on its database."""


async def main() -> None:
    queue = make_queue(os.environ["HQ_DSN"])
    lease = float(os.environ.get("HQ_LEASE", "30"))
    async with queue:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as received:
            async with queue.worker(concurrency=4, lease=lease):
                print("ready", flush=True)
                async for _ in received:
                    break


if __name__ == "__main__":
    anyio.run(main)
    sys.exit(0)
