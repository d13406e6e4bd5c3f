"""Claims under fair share between tenants: their cost against the FIFO claim, per backend.

Tenants take turns by their running jobs: a claim's order is (priority, k, run_at, seq),
k the tenant's running jobs plus the job's place in its tenant's line (see "Fair share
between tenants" in the workers guide). The claims here run on without finishing, so
every tenant's running count grows as the claims go. Its cost must grow with the
tenants, their running jobs and the claim's size, never with how many jobs each tenant
has waiting. For each backend (memory, SQLite, and PostgreSQL when
``--dsn`` reaches a server), on a fresh storage each time, it times claims of 10 (the
median of ``--claims`` claims after the first, and the first alone):

- ceiling: T x P pending jobs without a tenant (T = 100 tenants, P = 1,000 jobs each by
  default): the FIFO claim, as it was before fair share;
- fair share: T tenants with P / 10 and with P pending jobs each, enqueued one tenant
  after the other (the order in which a FIFO claim would starve the last tenant): the
  ratio to the ceiling, and whether the P / 10 and P figures stay alike.

Run: ``.venv/bin/python benchmarks/bench_fair_share.py`` (about a minute with
PostgreSQL); ``--dsn`` names a server and a database to create the bench databases from
(default ``postgresql://postgres@127.0.0.1:5432/test``; ``--dsn ''`` skips PostgreSQL).
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import anyio

import hyperqueue as hq
from hyperqueue.abc import Storage
from hyperqueue_sqlite import SQLiteStorage

T0 = 1_700_000_000.0
LIMIT = 10
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"


@asynccontextmanager
async def memory() -> AsyncIterator[Storage]:
    storage = hq.MemoryStorage()
    await storage.open()
    yield storage
    await storage.aclose()


@asynccontextmanager
async def sqlite() -> AsyncIterator[Storage]:
    with tempfile.TemporaryDirectory() as folder:
        storage = SQLiteStorage(Path(folder) / "fair.db")
        await storage.open()
        try:
            yield storage
        finally:
            await storage.aclose()


def postgres(dsn: str) -> Callable[[], AbstractAsyncContextManager[Storage]]:
    @asynccontextmanager
    async def open_one() -> AsyncIterator[Storage]:
        import asyncpg

        from hyperqueue_postgres import PostgresStorage

        name = f"bench_fair_{secrets.token_hex(4)}"
        admin = await asyncpg.connect(dsn)
        await admin.execute(f"CREATE DATABASE {name}")
        storage = PostgresStorage(dsn.rsplit("/", 1)[0] + f"/{name}")
        try:
            await storage.open()
            yield storage
        finally:
            await storage.aclose()
            await admin.execute(f"DROP DATABASE {name}")
            await admin.close()

    return open_one


async def fill(storage: Storage, tenants: int, per_tenant: int) -> None:
    """``per_tenant`` jobs of each of ``tenants`` tenants, one tenant after the other
    (no tenant at all when ``tenants`` is 0: ``per_tenant`` untenanted jobs)."""
    ids = hq.Queue()._new_id
    names: list[str | None] = [f"tenant-{t:03d}" for t in range(tenants)] or [None]
    jobs = [
        hq.Job(id=ids(T0), task="noop", tenant=name, created_at=T0, run_at=T0)
        for name in names
        for _ in range(per_tenant)
    ]
    for start in range(0, len(jobs), 2000):
        await storage.enqueue(jobs[start : start + 2000], now=T0, key_ttl=None)


async def time_claims(storage: Storage, claims: int) -> tuple[float, float, int]:
    """(first claim, median of the later ones) in ms, and the tenants of the first."""
    spent: list[float] = []
    tenants = 0
    for n in range(claims + 1):
        began = time.perf_counter()
        jobs = await storage.claim(
            None, limit=LIMIT, now=T0 + 1, lease=60.0, worker="w", tasks=("noop",)
        )
        spent.append(time.perf_counter() - began)
        assert len(jobs) == LIMIT
        if n == 0:
            tenants = len({job.tenant for job in jobs})
    return spent[0] * 1000, statistics.median(spent[1:]) * 1000, tenants


async def main(tenants: int, per_tenant: int, claims: int, dsn: str) -> None:
    backends: list[tuple[str, Callable[[], AbstractAsyncContextManager[Storage]]]] = [
        ("memory", memory),
        ("SQLite", sqlite),
    ]
    if dsn:
        backends.append(("PostgreSQL", postgres(dsn)))
    total = tenants * per_tenant
    print(f"claims of {LIMIT}; median of {claims} claims after the first (ms)\n")
    print(f"{'backend':<11} {'backlog':<34} {'first':>8} {'median':>8} {'x FIFO':>7}  tenants")
    for label, opener in backends:
        ceiling = 0.0
        scenarios = [
            (f"{total:,} jobs, no tenant (FIFO)", 0, total),
            (f"{tenants} tenants x {per_tenant // 10:,}", tenants, per_tenant // 10),
            (f"{tenants} tenants x {per_tenant:,}", tenants, per_tenant),
        ]
        for name, count, each in scenarios:
            async with opener() as storage:
                await fill(storage, count, each)
                first, median, seen = await time_claims(storage, claims)
            if count == 0:
                ceiling = median
            ratio = median / ceiling
            print(f"{label:<11} {name:<34} {first:8.3f} {median:8.3f} {ratio:7.2f}  {seen}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--per-tenant", type=int, default=1000)
    parser.add_argument("--claims", type=int, default=50)
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    options = parser.parse_args()
    anyio.run(main, options.tenants, options.per_tenant, options.claims, options.dsn)
