"""Jobs per second through one SQLite file: hyperqueue against raw SQLite and its peers.

Measures, in one run on this machine (N no-op jobs, 10,000 by default):

- ceiling: raw SQLite on hyperqueue's own job table (the same schema and indexes),
  plain apsw calls in one thread (the library and SQLite build ``SQLiteStorage`` uses),
  WAL, synchronous=NORMAL. One full cycle is an insert, a claim (``UPDATE ...
  RETURNING``) and a completion. Once with one statement per transaction, once with
  100 jobs per transaction (executemany, one claim statement for 100 rows): the second
  is the ceiling a batching queue can approach.
- hyperqueue end to end: ``SQLiteStorage`` under ``hq.Queue``, enqueue N jobs, then a
  worker pool with concurrency 10 runs them all. The enqueue is timed three ways: one
  ``await task.enqueue()`` after another (each a transaction of its own), from 100
  concurrent producers (group commit shares transactions), and ``enqueue_many`` in
  chunks of 100. End to end = N / (enqueue time + run time).
- peers, installed from PyPI: huey's ``SqliteHuey`` (a thread consumer with 10 workers)
  and persist-queue's ``SQLiteAckQueue`` (10 threads doing get + ack), same N, each
  enqueueing one job per call. They use Python's ``sqlite3`` (on files of their own).
- latency: enqueue-to-start across processes. A worker pool runs in a child process;
  this process enqueues 200 jobs/s for 3 s; each job returns the time it started, and
  latency is that minus the job's ``created_at``. p50 / p99 in ms.

Each figure is the median of ``--repeats`` runs (3 by default), each on a fresh file in
a temporary folder; ratios are against the figures of the same run.
Run: ``.venv/bin/python benchmarks/bench_sqlite.py`` (about 60 s;
``pip install 'hyperqueue-jobs[sqlite]' huey persist-queue``). ``--quick`` uses N=2,000 and
1 repeat.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import anyio
from _chart import bar_chart

import hyperqueue as hq
from hyperqueue._ids import IdFactory
from hyperqueue_sqlite import SQLiteStorage
from hyperqueue_sqlite._rows import COLUMNS, INSERT, job_to_row
from hyperqueue_sqlite._schema import MIGRATIONS

CONCURRENCY = 10
PRODUCERS = 100  # concurrent producers in the "concurrent" enqueue mode


def median_of(repeats: int, run: Callable[[], float]) -> float:
    return statistics.median(run() for _ in range(repeats))


# -- ceiling: raw SQLite (apsw) on the same table -----------------------------------------


def raw_sqlite(n: int, per_tx: int) -> float:
    """Full cycles per second with ``per_tx`` jobs per transaction."""
    import apsw

    with tempfile.TemporaryDirectory() as folder:
        db = apsw.Connection(str(Path(folder) / "raw.db"))  # autocommit: explicit BEGINs
        conn = db.cursor()  # one cursor, reused, as the storage's driver does
        conn.execute("PRAGMA journal_mode = WAL").fetchall()
        conn.execute("PRAGMA synchronous = NORMAL")
        for migration in MIGRATIONS:  # the same schema and indexes as the storage's
            for statement in migration:
                conn.execute(statement)
        new_id = IdFactory()
        now = time.time()
        rows = [job_to_row(hq.Job(id=new_id(now), task="noop", created_at=now, run_at=now))]
        rows = [(new_id(now), *rows[0][1:]) for _ in range(n)]
        claim = (
            "UPDATE jobs SET status = 'running', attempts = attempts + 1, token = token + 1, "
            "started_at = ?, lease_until = ?, worker = 'w' WHERE seq IN (SELECT seq FROM jobs "
            "WHERE status = 'pending' AND queue = 'default' AND task = 'noop' AND priority = 2 "
            "AND tenant IS NULL AND run_at <= ? "
            f"ORDER BY run_at, seq LIMIT ?) RETURNING {COLUMNS}"
        )
        done = (
            "UPDATE jobs SET status = 'completed', finished_at = ?, lease_until = NULL "
            "WHERE id = ? AND status = 'running' AND token = ?"
        )
        started = time.perf_counter()
        for i in range(0, n, per_tx):
            chunk = rows[i : i + per_tx]
            if per_tx == 1:
                conn.execute(INSERT, chunk[0])
                claimed = conn.execute(claim, (now, now + 30, now, 1)).fetchall()
                conn.execute(done, (now, claimed[0][0], claimed[0][20]))
            else:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(INSERT, chunk)
                conn.execute("COMMIT")
                conn.execute("BEGIN IMMEDIATE")
                claimed = conn.execute(claim, (now, now + 30, now, per_tx)).fetchall()
                conn.execute("COMMIT")
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(done, [(now, row[0], row[20]) for row in claimed])
                conn.execute("COMMIT")
        elapsed = time.perf_counter() - started
        db.close()
    return n / elapsed


def raw_enqueue_hops(n: int) -> float:
    """Inserts per second, one per transaction, each handed to one database thread and
    awaited from the event loop: the ceiling of a single producer awaiting each enqueue."""
    import apsw

    async def main() -> float:
        with tempfile.TemporaryDirectory() as folder:
            db = apsw.Connection(str(Path(folder) / "raw.db"))
            conn = db.cursor()
            conn.execute("PRAGMA journal_mode = WAL").fetchall()
            conn.execute("PRAGMA synchronous = NORMAL")
            for migration in MIGRATIONS:
                for statement in migration:
                    conn.execute(statement)
            new_id = IdFactory()
            now = time.time()
            row = job_to_row(hq.Job(id=new_id(now), task="noop", created_at=now, run_at=now))
            loop = asyncio.get_running_loop()
            with ThreadPoolExecutor(1) as thread:  # the connection lives in one thread
                started = time.perf_counter()
                for _ in range(n):
                    values = (new_id(now), *row[1:])
                    await loop.run_in_executor(thread, conn.execute, INSERT, values)
                elapsed = time.perf_counter() - started
            db.close()
        return n / elapsed

    return asyncio.run(main())


def raw_in_thread(n: int, per_tx: int) -> float:
    out: list[float] = []
    thread = threading.Thread(target=lambda: out.append(raw_sqlite(n, per_tx)))
    thread.start()
    thread.join()
    return out[0]


# -- hyperqueue ------------------------------------------------------------------------


def file_bytes_per_job(n: int) -> tuple[float, float]:
    """Bytes per job in the SQLite file (closed, so the WAL is checkpointed into it):
    with n no-op jobs pending, then with the same jobs completed."""

    def size(path: Path) -> float:
        return sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / n

    async def main() -> tuple[float, float]:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "jobs.db"
            done = anyio.Event()
            finished = 0

            def make_queue() -> hq.Queue:
                queue = hq.Queue(SQLiteStorage(path))

                @queue.task
                async def noop() -> None:
                    nonlocal finished
                    finished += 1
                    if finished == n:
                        done.set()

                return queue

            async with make_queue() as queue:
                for _ in range(0, n, 100):
                    await queue.enqueue_many([hq.Submission(task="noop")] * 100)
            pending = size(path)
            async with make_queue() as queue, queue.worker(concurrency=CONCURRENCY):
                await done.wait()
            return pending, size(path)

    return asyncio.run(main())


def hyperqueue_run(
    n: int, enqueue_mode: str, prefetch: int | Literal["auto"] = "auto"
) -> tuple[float, float]:
    """(seconds to enqueue n jobs, seconds for the pool to run them)."""

    async def main() -> tuple[float, float]:
        with tempfile.TemporaryDirectory() as folder:
            queue = hq.Queue(SQLiteStorage(Path(folder) / "jobs.db"))
            done = anyio.Event()
            finished = 0

            @queue.task
            async def noop() -> None:
                nonlocal finished
                finished += 1
                if finished == n:
                    done.set()

            async with queue:
                started = time.perf_counter()
                if enqueue_mode == "sequential":
                    for _ in range(n):
                        await noop.enqueue()
                elif enqueue_mode == "concurrent":

                    async def producer(count: int) -> None:
                        for _ in range(count):
                            await noop.enqueue()

                    async with anyio.create_task_group() as tg:
                        for _ in range(PRODUCERS):
                            tg.start_soon(producer, n // PRODUCERS)
                else:
                    for _ in range(0, n, 100):
                        await queue.enqueue_many([hq.Submission(task="noop")] * 100)
                enqueued = time.perf_counter()
                async with queue.worker(concurrency=CONCURRENCY, prefetch=prefetch):
                    await done.wait()
                ran = time.perf_counter()  # after the drain stored the last outcomes
                counts = (await queue.stats())["default"]
                assert counts.completed == n, counts
                return enqueued - started, ran - enqueued

    return asyncio.run(main())


# -- peers -----------------------------------------------------------------------------


def huey_run(n: int) -> float:
    import logging

    from huey import SqliteHuey  # type: ignore[import-untyped]

    logging.getLogger("huey").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as folder:
        huey = SqliteHuey(filename=str(Path(folder) / "huey.db"), results=False)
        finished = threading.Semaphore(0)

        @huey.task()  # type: ignore[untyped-decorator]
        def noop() -> None:
            finished.release()

        started = time.perf_counter()
        for _ in range(n):
            noop()
        consumer = huey.create_consumer(workers=CONCURRENCY, worker_type="thread", periodic=False)
        consumer.start()
        for _ in range(n):
            finished.acquire()
        elapsed = time.perf_counter() - started
        consumer.stop(graceful=True)
    return n / elapsed


def persist_queue_run(n: int) -> float:
    from persistqueue import SQLiteAckQueue
    from persistqueue.exceptions import Empty

    with tempfile.TemporaryDirectory() as folder:
        queue = SQLiteAckQueue(str(Path(folder) / "pq"), multithreading=True, auto_commit=True)
        started = time.perf_counter()
        for i in range(n):
            queue.put(i)

        def consume() -> None:
            while True:
                try:
                    item = queue.get(block=False)
                except Empty:
                    return
                queue.ack(item)

        threads = [threading.Thread(target=consume) for _ in range(CONCURRENCY)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        assert queue.size == 0
    return n / elapsed


# -- latency across processes ------------------------------------------------------------


def make_queue(db: str) -> hq.Queue:
    queue = hq.Queue(SQLiteStorage(db))

    @queue.task
    async def stamp() -> float:
        return time.time()

    return queue


async def serve_worker(db: str) -> None:
    """The child process: a pool that runs until its stdin closes."""
    queue = make_queue(db)
    async with queue, queue.worker(concurrency=CONCURRENCY):
        print("ready", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.read)


def latency(rate: float = 200.0, seconds: float = 3.0) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as folder:
        db = str(Path(folder) / "jobs.db")
        child = subprocess.Popen(
            [sys.executable, __file__, "--serve-worker", db],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None and child.stdin is not None
            assert child.stdout.readline() == "ready\n"
            delays = asyncio.run(produce_at(db, rate, seconds))
        finally:
            if child.stdin is not None:
                child.stdin.close()
            child.wait(10)
            if child.stdout is not None:
                child.stdout.close()
    delays.sort()
    return delays[len(delays) // 2], delays[int(len(delays) * 0.99)]


async def produce_at(db: str, rate: float, seconds: float) -> list[float]:
    """Enqueue ``rate`` jobs per second; each one's start minus its creation, in ms."""
    queue = make_queue(db)
    async with queue:
        jobs = []
        start = time.perf_counter()
        for i in range(int(rate * seconds)):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await anyio.sleep(delay)
            jobs.append(await queue.tasks["stamp"].enqueue())
        delays = []
        for job in jobs:
            done = await queue.wait(job.id, timeout=30)
            delays.append((done.result - job.created_at) * 1000)
    return delays


# -- report ------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--serve-worker", metavar="DB")
    args = parser.parse_args()
    if args.serve_worker:
        asyncio.run(serve_worker(args.serve_worker))
        return
    n, repeats = (2_000, 1) if args.quick else (args.n, args.repeats)
    import sqlite3

    import apsw

    print(f"N={n:,} no-op jobs, concurrency {CONCURRENCY}, median of {repeats}")
    print(
        f"SQLite {apsw.sqlite_lib_version()} (apsw {apsw.apsw_version()}; the peers use "
        f"Python's sqlite3, SQLite {sqlite3.sqlite_version}), Python {sys.version.split()[0]}, "
        f"pid {os.getpid()}"
    )
    print()

    figures: dict[str, float] = {}
    figures["raw SQLite (apsw), 1 op per transaction"] = median_of(
        repeats, lambda: raw_in_thread(n, 1)
    )
    figures["raw SQLite (apsw), 100 jobs per transaction"] = median_of(
        repeats, lambda: raw_in_thread(n, 100)
    )
    figures["raw SQLite (apsw), 1 insert per transaction, thread hop"] = median_of(
        repeats, lambda: raw_enqueue_hops(n)
    )
    ceiling = figures["raw SQLite (apsw), 100 jobs per transaction"]
    modes: list[tuple[str, int | Literal["auto"]]] = [
        ("sequential", "auto"),
        ("concurrent", "auto"),
        ("enqueue_many", "auto"),
        ("enqueue_many", 0),
        ("enqueue_many", 90),
    ]
    for mode, prefetch in modes:
        runs = [hyperqueue_run(n, mode, prefetch) for _ in range(repeats)]
        enqueue = statistics.median(r[0] for r in runs)
        run = statistics.median(r[1] for r in runs)
        total = statistics.median(r[0] + r[1] for r in runs)
        suffix = "" if prefetch == "auto" else f", prefetch={prefetch}"
        if prefetch == "auto":
            figures[f"hyperqueue, enqueue ({mode})"] = n / enqueue
        if mode == "enqueue_many":
            figures[f"hyperqueue, run (worker pool{suffix})"] = n / run
        figures[f"hyperqueue, end to end ({mode} enqueue{suffix})"] = n / total
    figures["huey SqliteHuey, end to end"] = median_of(repeats, lambda: huey_run(n))
    figures["persist-queue SQLiteAckQueue, end to end"] = median_of(
        repeats, lambda: persist_queue_run(n)
    )
    huey = figures["huey SqliteHuey, end to end"]
    pq = figures["persist-queue SQLiteAckQueue, end to end"]

    print(f"{'':46} {'jobs/s':>9} {'us/job':>8} {'x huey':>7} {'x pq':>6} {'of ceiling':>10}")
    for name, rate in figures.items():
        print(
            f"{name:46} {rate:9,.0f} {1e6 / rate:8.1f} {rate / huey:7.1f} {rate / pq:6.1f} "
            f"{rate / ceiling:10.0%}"
        )
    hop = figures["raw SQLite (apsw), 1 insert per transaction, thread hop"]
    single = figures["hyperqueue, enqueue (sequential)"]
    print()
    print(f"single producer: {single / hop:.2f} of raw SQLite inserting through a thread hop")
    bar_chart(
        "sqlite",
        f"N={n:,} no-op jobs on one SQLite file, concurrency {CONCURRENCY} (default settings "
        "unless named)",
        figures,
    )
    pending_bytes, completed_bytes = file_bytes_per_job(n)
    print(
        f"bytes per job in the SQLite file: {pending_bytes:,.0f} pending, "
        f"{completed_bytes:,.0f} completed (no-op jobs, file closed)"
    )
    lat = [latency() for _ in range(repeats)]
    p50 = statistics.median(p for p, _ in lat)
    p99 = statistics.median(p for _, p in lat)
    print()
    print(f"enqueue-to-start across processes at 200 jobs/s: p50 {p50:.2f} ms, p99 {p99:.2f} ms")


if __name__ == "__main__":
    main()
