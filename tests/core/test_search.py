"""Search, counts and bulk actions through the Queue: each job changed as the one-job
operation would change it (events, interruption where it runs, waiters woken), in
batches, newest first; listings by filter page with a cursor that keeps the filter."""

from __future__ import annotations

import anyio
import pytest

import hyperqueue as hq
from hyperqueue.testing import FakeClock

pytestmark = pytest.mark.anyio


async def test_cancel_matching_interrupts_running_jobs_and_publishes_events(
    queue: hq.Queue,
) -> None:
    started = anyio.Event()
    ended = anyio.Event()
    stopped: list[str] = []

    @queue.task
    async def hold(n: int) -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            stopped.append(hq.current_job().id)
            ended.set()

    @queue.task
    async def other() -> None: ...

    seen: list[hq.JobCancelled] = []
    queue.events.subscribe(seen.append, hq.JobCancelled)
    jobs = [await hold.enqueue(i) for i in range(5)]
    spared = await other.options(delay=60).enqueue()
    async with queue, queue.worker(concurrency=1):
        with anyio.fail_after(5):
            await started.wait()
            assert await queue.cancel_matching(hq.JobFilter(task="hold"), batch=2) == 5
            waited = await queue.wait(jobs[0].id, timeout=5)
            await ended.wait()
    assert waited.status is hq.JobStatus.CANCELLED
    assert len(stopped) == 1  # the running one, interrupted where it ran
    assert sorted(e.job.id for e in seen) == sorted(j.id for j in jobs)
    assert (await queue.get(spared.id)).status is hq.JobStatus.PENDING
    assert await queue.cancel_matching(hq.JobFilter(task="hold")) == 0


async def test_retry_discard_and_dead_letter_groups(queue: hq.Queue) -> None:
    calls = {"n": 0}

    @queue.task
    async def fetch(url: str) -> None:
        calls["n"] += 1
        raise TimeoutError(f"no answer from {url} after {calls['n']}.5s")

    enqueued: list[hq.JobEnqueued] = []
    queue.events.subscribe(enqueued.append, hq.JobEnqueued)
    jobs = [await fetch.enqueue(f"'host{i}'") for i in range(4)]
    async with queue, queue.worker(concurrency=4):
        for job in jobs:
            await queue.wait(job.id, timeout=5)
        [group] = await queue.dead_letter_groups()
        assert (group.count, group.error_type) == (4, "TimeoutError")
        assert group.message == "no answer from ? after #s"
        where = hq.JobFilter(fingerprint=group.fingerprint)
        assert await queue.count_jobs(where) == 4
        enqueued.clear()
        assert await queue.retry_matching(where, batch=3) == 4
        assert sorted(e.job.id for e in enqueued) == sorted(j.id for j in jobs)
        for job in jobs:
            await queue.wait(job.id, timeout=5)
    assert calls["n"] == 8
    assert [g.count for g in await queue.dead_letter_groups()] == [4]
    assert await queue.discard_matching(hq.JobFilter(status=(hq.JobStatus.FAILED,))) == 4
    assert await queue.count_jobs() == 0
    with pytest.raises(hq.JobNotFound):
        await queue.get(jobs[0].id)
    with pytest.raises(hq.OptionError):
        await queue.cancel_matching(hq.JobFilter(), batch=0)
    with pytest.raises(hq.OptionError):
        await queue.dead_letter_groups(limit=0)


async def test_listing_by_filter_pages_with_a_cursor_that_keeps_it(
    queue: hq.Queue, clock: FakeClock
) -> None:
    @queue.task
    async def send(to: str) -> None: ...

    old = [await send.options(tenant="acme").enqueue("a") for _ in range(2)]
    await clock.advance(3600)
    new = [await send.options(tenant="acme").enqueue("b") for _ in range(3)]
    await send.options(tenant="globex").enqueue("c")
    where = hq.JobFilter.parse("since:10m", now=clock.now())
    first = await queue.list_jobs(where=where, tenant="acme", limit=2)
    assert [j.id for j in first.items] == [new[2].id, new[1].id]
    assert first.next_cursor is not None
    await clock.advance(3600)  # the window was fixed when the first page was read
    again = hq.JobFilter.parse("since:10m", now=clock.now())
    second = await queue.list_jobs(where=again, tenant="acme", cursor=first.next_cursor)
    alone = await queue.list_jobs(cursor=first.next_cursor)
    assert [j.id for j in second.items] == [j.id for j in alone.items] == [new[0].id]
    with pytest.raises(hq.OptionError, match="another filter"):
        await queue.list_jobs(tenant="globex", cursor=first.next_cursor)
    with pytest.raises(hq.OptionError, match="not a cursor"):
        await queue.list_jobs(where=where, cursor="nonsense")
    assert (await queue.list_jobs(where=where, tenant="acme", status="failed")).items == []
    assert (await queue.list_jobs(where=hq.JobFilter(tenant="x"), tenant="acme")).items == []
    assert await queue.count_jobs(hq.JobFilter.parse("until:1h", now=clock.now())) == 2
    assert {j.id for j in old} <= {j.id for j in (await queue.list_jobs()).items}
