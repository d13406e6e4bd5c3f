"""Search, exact counts, dead-letter groups and bulk actions on one SQLite file.

Fills a fresh file with N jobs (100,000 by default): 80% completed, 15% failed with
one of 20 kinds of error (numbers and ids varying from job to job), 5% pending; tasks,
queues and tenants spread over a few names. Then times, each the median of 5 calls:

- ``count``: a filter of status and queue only (read from the counts table), and one
  with a task glob, an error substring and a time window (counts rows);
- ``search``: the first page (100) of ``status:failed task:fetch_* error:timeout``;
- ``error_groups``: the first call (computes and stores the fingerprint of every failed
  job, 2,000 per transaction) once, then later calls;
- ``cancel_matching``: every pending job, 500 per transaction, jobs per second;
- ``retry_matching`` of one fingerprint group, jobs per second.

Run: ``.venv/bin/python benchmarks/bench_search.py`` (about 30 s); ``--jobs`` changes N;
``--dsn postgresql://...`` runs it on a PostgreSQL database instead (its ``hq_`` tables
must be empty: use a database of its own).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import anyio

import hyperqueue as hq
from hyperqueue.abc import Storage
from hyperqueue_sqlite import SQLiteStorage

T0 = 1_700_000_000.0
ERRORS = [f"TimeoutError: kind {k} timed out after {{n}}.5s for id {{n}}" for k in range(10)] + [
    f"ValueError: bad record {{n}} in batch 'b{{n}}' (kind {k})" for k in range(10)
]


async def fill(storage: Storage, n: int) -> None:
    ids = hq.Queue()._new_id
    for start in range(0, n, 5000):
        jobs = [
            hq.Job(
                id=ids(T0 + i / 1000),
                task=f"fetch_{i % 5}" if i % 2 else f"store_{i % 3}",
                queue=f"q{i % 4}",
                tenant=f"t{i % 7}",
                created_at=T0 + i / 1000,
                run_at=T0 if i % 20 else T0 + 10**6,  # 5% wait (pending)
            )
            for i in range(start, min(start + 5000, n))
        ]
        await storage.enqueue(jobs, now=T0, key_ttl=None)
        claimed = await storage.claim(None, limit=5000, now=T0 + 1, lease=60, worker="w")
        outcomes = [
            hq.Outcome(
                id=j.id,
                token=j.token,
                status=hq.JobStatus.FAILED if k % 6 == 0 else hq.JobStatus.COMPLETED,
                error=ERRORS[k % len(ERRORS)].format(n=k) if k % 6 == 0 else None,
            )
            for k, j in enumerate(claimed)
        ]
        await storage.finish(outcomes, now=T0 + 2)


async def median(call: Callable[[], Awaitable[Any]], times: int = 5) -> float:
    spent = []
    for _ in range(times):
        began = time.perf_counter()
        await call()
        spent.append(time.perf_counter() - began)
    return statistics.median(spent)


async def main(n: int, dsn: str | None) -> None:
    with tempfile.TemporaryDirectory() as folder:
        storage: Storage = SQLiteStorage(Path(folder) / "search.db")
        if dsn is not None:
            from hyperqueue_postgres import PostgresStorage

            storage = PostgresStorage(dsn)
        await storage.open()
        began = time.perf_counter()
        await fill(storage, n)
        print(f"filled {n:,} jobs in {time.perf_counter() - began:.1f} s")
        now = T0 + 10
        simple = hq.JobFilter.parse("status:failed queue:q1", now=now)
        rich = hq.JobFilter.parse("task:fetch_* error:timeout since:1h tenant:t3", now=now)
        for name, where in (("count simple", simple), ("count rich", rich)):
            found = await storage.count(where)
            ms = await median(partial(storage.count, where)) * 1000
            print(f"{name:<24} {ms:8.2f} ms  ({found:,} jobs)")
        page = hq.JobFilter.parse("status:failed task:fetch_* error:timeout", now=now)
        ms = await median(lambda: storage.search(page, limit=100)) * 1000
        print(f"{'search first page':<24} {ms:8.2f} ms")
        began = time.perf_counter()
        groups = await storage.error_groups(hq.JobFilter())
        first = time.perf_counter() - began
        failed = sum(g.count for g in groups)
        print(f"{'groups, first call':<24} {first * 1000:8.2f} ms  ({failed:,} failed jobs)")
        ms = await median(lambda: storage.error_groups(hq.JobFilter())) * 1000
        print(f"{'groups, later calls':<24} {ms:8.2f} ms  ({len(groups)} groups)")
        queue = hq.Queue(storage)
        for name, action, where in (
            ("cancel pending", queue.cancel_matching, hq.JobFilter(status=(hq.JobStatus.PENDING,))),
            (
                "retry one group",
                queue.retry_matching,
                hq.JobFilter(fingerprint=groups[0].fingerprint),
            ),
        ):
            began = time.perf_counter()
            changed = await action(where)
            spent = time.perf_counter() - began
            print(f"{name:<24} {changed / spent:8,.0f} jobs/s  ({changed:,} jobs)")
        await storage.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--dsn", default=None)
    options = parser.parse_args()
    anyio.run(main, options.jobs, options.dsn, backend="asyncio")
