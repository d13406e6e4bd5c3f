"""Two paths of PostgresStorage on their own: the claim's latency, and what NOTIFY
costs 100 concurrent producers.

- claim: enqueue one job, then claim it (one pooled connection, no other load), 400
  times; p50 / p90 / p99 in ms. A claim commits without waiting for the WAL flush,
  so it should stay well under an enqueue's commit on the same disk.
- notify: 100 producers enqueue 3,000 jobs one per call on one storage while another
  connection LISTENs, with ``notify=True`` (the default: at most one notifying
  transaction in flight, and a trailing NOTIFY) against ``notify=False`` (the ceiling:
  no notification at all), interleaved, median of 3. PostgreSQL serializes the
  commits of notifying transactions through their WAL flush, so without the gate the
  first figure was about half the second.

``python benchmarks/bench_postgres_paths.py [--dsn postgresql://127.0.0.1/test]``: each
part runs in a database of its own, created and dropped here.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import time
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from _chart import bar_chart

import hyperqueue as hq
from hyperqueue_postgres import PostgresStorage

DEFAULT_DSN = "postgresql://127.0.0.1:5432/test"


def with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


async def fresh_database(admin: str) -> str:
    name = f"hq_paths_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def drop_database(admin: str, name: str) -> None:
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def claim_latency(admin: str, rounds: int = 400) -> list[float]:
    name = await fresh_database(admin)
    try:
        storage = PostgresStorage(with_database(admin, name))
        await storage.open()
        try:
            queue = hq.Queue(storage)

            @queue.task
            async def noop() -> None:
                pass

            took: list[float] = []
            for _ in range(rounds):
                job = await noop.enqueue()
                started = time.perf_counter()
                claimed = await storage.claim(
                    None, limit=10, now=time.time() + 0.001, lease=30, worker="bench"
                )
                took.append(time.perf_counter() - started)
                assert [j.id for j in claimed] == [job.id]
        finally:
            await storage.aclose()
    finally:
        await drop_database(admin, name)
    return sorted(took)


async def producers(admin: str, notify: bool, n: int = 3000, count: int = 100) -> float:
    name = await fresh_database(admin)
    dsn = with_database(admin, name)
    try:
        queue = hq.Queue(PostgresStorage(dsn, notify=notify))

        @queue.task
        async def noop(i: int) -> None:
            pass

        async with queue:
            listener = await asyncpg.connect(dsn)  # as worker processes would listen
            await listener.add_listener("hq_work", lambda *_: None)

            async def produce(first: int) -> None:
                for i in range(first, n, count):
                    await noop.enqueue(i)

            started = time.perf_counter()
            await asyncio.gather(*(produce(k) for k in range(count)))
            elapsed = time.perf_counter() - started
            await listener.close()
    finally:
        await drop_database(admin, name)
    return n / elapsed


async def main(admin: str, repeats: int) -> None:
    took = await claim_latency(admin)

    def q(p: float) -> float:
        return took[min(len(took) - 1, int(len(took) * p))] * 1000

    print(f"claim of one due job: p50 {q(0.5):.2f} ms, p90 {q(0.9):.2f} ms, p99 {q(0.99):.2f} ms")
    rates: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(repeats):  # interleaved, so drift spreads over both
        for notify in (True, False):
            rates[notify].append(await producers(admin, notify))
    on, off = statistics.median(rates[True]), statistics.median(rates[False])
    print(f"100 producers, one job per call, notify=True (default): {on:,.0f} enqueues/s")
    print(f"100 producers, one job per call, notify=False (ceiling): {off:,.0f} enqueues/s")
    print(f"ratio: {on / off:.2f} of no notifications at all")
    bar_chart(
        "postgres_notify",
        "100 producers enqueueing one job per call on one PostgresStorage, a listener "
        f"elsewhere (median of {repeats})",
        {"hyperqueue, notify=True (default)": on, "no notifications (notify=False)": off},
        unit="enqueues/s",
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default=DEFAULT_DSN, help="server and a database to connect to")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.dsn, args.repeats))
