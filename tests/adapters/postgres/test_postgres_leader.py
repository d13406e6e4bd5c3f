"""Leader leases on PostgreSQL: one storage object at a time sweeps for lost jobs and
prunes, and another takes over when the leader stops (its process died, froze, or
closed its storage)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

import hyperqueue as hq
from hyperqueue import Job
from hyperqueue._ids import IdFactory
from hyperqueue.testing import FakeClock
from hyperqueue_postgres import PostgresStorage, retention_service

pytestmark = pytest.mark.anyio
T0 = 1_700_000_000.0
DAY = 86_400.0
_ids = IdFactory()


def make(task: str = "t") -> Job:
    return Job(id=_ids(T0), task=task, created_at=T0, run_at=T0)


@pytest.fixture
async def first(pg_dsn: str) -> AsyncIterator[PostgresStorage]:
    storage = PostgresStorage(pg_dsn)
    await storage.open()
    yield storage
    await storage.aclose()


@pytest.fixture
async def second(pg_dsn: str, first: PostgresStorage) -> AsyncIterator[PostgresStorage]:
    """Another process, as far as the database can tell."""
    storage = PostgresStorage(pg_dsn)
    await storage.open()
    yield storage
    await storage.aclose()


async def test_a_lease_has_one_holder_until_it_runs_out(
    first: PostgresStorage, second: PostgresStorage
) -> None:
    term = await first.lead("sweep", now=T0, ttl=10)
    assert term is not None
    assert await second.lead("sweep", now=T0 + 5, ttl=10) is None
    assert await first.lead("sweep", now=T0 + 9, ttl=10) == term  # kept: same term
    assert await second.lead("sweep", now=T0 + 18, ttl=10) is None  # renewed until T0 + 19
    taken = await second.lead("sweep", now=T0 + 19, ttl=10)
    assert taken == term + 1  # a new holder, a new term: a fencing token
    assert await first.lead("sweep", now=T0 + 20, ttl=10) is None
    # leases of other names are apart
    assert await first.lead("prune", now=T0 + 20, ttl=10) is not None
    with pytest.raises(ValueError, match="ttl"):
        await first.lead("sweep", now=T0, ttl=0)


async def test_closing_the_storage_hands_its_leases_over_at_once(pg_dsn: str) -> None:
    leaving = PostgresStorage(pg_dsn)
    await leaving.open()
    assert await leaving.lead("sweep", now=T0, ttl=60) is not None
    await leaving.aclose()
    staying = PostgresStorage(pg_dsn)
    await staying.open()
    try:
        assert await staying.lead("sweep", now=T0 + 1, ttl=60) is not None
    finally:
        await staying.aclose()


async def test_only_the_leader_sweeps_and_another_takes_over_when_it_stops(
    first: PostgresStorage, second: PostgresStorage
) -> None:
    lost = make()
    await first.enqueue([lost], now=T0, key_ttl=None)
    assert await first.claim(None, limit=1, now=T0, lease=30, worker="gone") != []
    # both pools call rescue every 10 s; the first to call leads
    for at in (T0, T0 + 10, T0 + 20):
        assert await first.rescue(now=at) == []
        assert await second.rescue(now=at + 1) == []
    # the job's lease ran out at T0 + 30: the leader rescues it, the other does nothing
    assert await second.rescue(now=T0 + 31) == []
    [rescued] = await first.rescue(now=T0 + 32)
    assert rescued.id == lost.id and rescued.status is hq.JobStatus.PENDING
    # the leader stops calling (its process froze); its lease (3 x 10 s) runs out and
    # the other pool's next call takes over the sweeps
    await first.claim(None, limit=1, now=T0 + 33, lease=30, worker="gone")
    assert await second.rescue(now=T0 + 41) == []  # the leader's lease holds until T0 + 62
    assert await second.rescue(now=T0 + 51) == []
    assert await second.rescue(now=T0 + 61) == []
    [again] = await second.rescue(now=T0 + 71)
    assert again.id == lost.id and again.rescues == 2


async def test_one_retention_service_of_several_prunes(
    first: PostgresStorage, second: PostgresStorage, tmp_path: Path
) -> None:
    """Two processes run the retention service on one database: every old job is
    archived exactly once, by the leader alone."""
    jobs = [make() for _ in range(3)]
    await first.enqueue(jobs, now=T0, key_ttl=None)
    claimed = await first.claim(None, limit=3, now=T0, lease=30, worker="w")
    await first.finish(
        [hq.Outcome(id=j.id, token=j.token, status=hq.JobStatus.COMPLETED) for j in claimed],
        now=T0,
    )
    clock = FakeClock(start=T0 + 8 * DAY)
    services = [
        retention_service(s, keep_for=7 * DAY, archive_dir=tmp_path / name, clock=clock)
        for s, name in ((first, "a"), (second, "b"))
    ]
    with anyio.fail_after(20):
        async with hq.Supervisor(clock=clock) as one, hq.Supervisor(clock=clock) as two:
            one.add(services[0])
            two.add(services[1])
            await clock.advance(0)
            while any(s.stats().runs < 1 for s in services):  # noqa: ASYNC110
                await anyio.sleep(0.01)
    assert await first.get(jobs[0].id) is None
    folders = [tmp_path / name for name in ("a", "b")]
    archived = [f for folder in folders if folder.exists() for f in folder.iterdir()]
    assert len(archived) == 1  # one leader pruned; the other left it alone
