from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

import hyperqueue as hq
from hyperqueue.testing import StorageContract


class TestMemoryStorage(StorageContract):
    @pytest.fixture
    async def storage(self, anyio_backend: object) -> AsyncIterator[hq.MemoryStorage]:
        storage = hq.MemoryStorage()
        await storage.open()
        yield storage
        await storage.aclose()


T0 = 1_700_000_000.0
PENDING, RUNNING = hq.JobStatus.PENDING, hq.JobStatus.RUNNING
COMPLETED, FAILED, CANCELLED = hq.JobStatus.COMPLETED, hq.JobStatus.FAILED, hq.JobStatus.CANCELLED


def _job(n: int, queue: str = "default", tenant: str | None = None) -> hq.Job:
    return hq.Job(id=f"{n:04d}", task="t", queue=queue, tenant=tenant, created_at=T0, run_at=T0)


@pytest.mark.anyio
async def test_a_claim_skips_cancelled_jobs_and_still_takes_its_limit_in_order() -> None:
    storage = hq.MemoryStorage()
    await storage.enqueue([_job(n) for n in range(10)], now=T0, key_ttl=None)
    for n in (1, 3, 5, 7):
        await storage.cancel(f"{n:04d}", now=T0)
    first = await storage.claim(None, limit=4, now=T0, lease=10.0, worker="w")
    assert [job.id for job in first] == ["0000", "0002", "0004", "0006"]
    rest = await storage.claim(None, limit=4, now=T0, lease=10.0, worker="w")
    assert [job.id for job in rest] == ["0008", "0009"]
    counts = (await storage.counts())["default"]
    assert (counts[PENDING], counts[RUNNING], counts[CANCELLED]) == (0, 6, 4)


@pytest.mark.anyio
async def test_one_finish_of_jobs_of_several_queues_counts_each_queue() -> None:
    storage = hq.MemoryStorage()
    queues = ["a", "a", "b", "a", "b", "a"]
    jobs = [_job(n, queue, tenant="t1" if n == 5 else None) for n, queue in enumerate(queues)]
    await storage.enqueue(jobs, now=T0, key_ttl=None)
    claimed = []
    for queue in ("a", "b"):
        claimed += await storage.claim([queue], limit=10, now=T0, lease=10.0, worker="w")
    by_id = {job.id: job for job in claimed}
    statuses = [COMPLETED, COMPLETED, COMPLETED, COMPLETED, FAILED, COMPLETED]
    outcomes = [
        hq.Outcome(id=job.id, token=by_id[job.id].token, status=status)
        for job, status in zip(jobs, statuses, strict=True)
    ]
    stored = await storage.finish(outcomes, now=T0 + 1)
    assert [job.status if job else None for job in stored] == statuses
    counts = await storage.counts()
    assert (counts["a"][RUNNING], counts["a"][COMPLETED]) == (0, 4)
    assert (counts["b"][RUNNING], counts["b"][COMPLETED], counts["b"][FAILED]) == (0, 1, 1)
