"""A runner's run of buffered jobs: when each job's start is taken and stored, and the
choices made once (a queue's storage and clock, a task's plain path, the prefetch's
time per job) that keep a short job cheap."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import hyperqueue as hq
from hyperqueue._prefetch import AdaptivePrefetch
from hyperqueue.testing import FakeClock

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def guard(seconds: float = 10.0) -> AsyncIterator[None]:
    """A real-time safety net so a broken test fails instead of hanging."""
    with anyio.fail_after(seconds):
        yield


async def test_a_long_job_shows_its_start_while_it_runs(queue: hq.Queue, clock: FakeClock) -> None:
    release = anyio.Event()

    @queue.task
    async def slow() -> None:
        await release.wait()

    job = await slow.enqueue()
    async with guard(), queue.worker():
        await anyio.wait_all_tasks_blocked()
        began = clock.now()
        assert (await queue.get(job.id)).started_at is None, "stored with its end if short"
        await clock.advance(0.02)  # past the 10 ms a start waits for its job's end
        await anyio.wait_all_tasks_blocked()
        assert (await queue.get(job.id)).started_at == began, "stored alone while it runs"
        release.set()
        done = await queue.wait(job.id)
    assert done.started_at == began and done.finished_at == began + 0.02


async def test_a_failed_run_keeps_its_start(queue: hq.Queue, clock: FakeClock) -> None:
    @queue.task
    async def broken(x: int) -> None:
        raise ValueError(x)

    job = await broken.enqueue(1)
    async with guard(), queue.worker():
        done = await queue.wait(job.id)
    assert done.status is hq.JobStatus.FAILED and done.started_at == clock.now()


async def test_the_start_is_taken_after_the_hooks_are_entered(
    clock: FakeClock,
) -> None:
    class SlowEnter:
        async def __aenter__(self) -> None:
            await clock.sleep(1.0)

        async def __aexit__(self, *exc: object) -> None:
            return None

    queue = hq.Queue(clock=clock, hooks=[lambda run: SlowEnter()])

    @queue.task
    async def quick() -> None:
        pass

    job = await quick.enqueue()
    async with guard(), queue.worker():
        await anyio.wait_all_tasks_blocked()
        claimed_at = clock.now()
        await clock.advance(1.0)
        done = await queue.wait(job.id)
    assert done.started_at == claimed_at + 1.0, "when the function was called"


class FlakyStarts(hq.MemoryStorage):
    """Memory storage whose first ``failures`` stores of starts fail."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def mark_started(self, starts: Sequence[tuple[str, int, float]]) -> list[bool]:
        if self.failures:
            self.failures -= 1
            raise hq.StorageError("database is locked")
        return await super().mark_started(starts)


async def test_a_start_that_failed_to_store_is_stored_on_the_next_try(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    queue = hq.Queue(FlakyStarts(failures=1), clock=clock)
    release = anyio.Event()

    @queue.task
    async def slow() -> None:
        await release.wait()

    job = await slow.enqueue()
    async with guard(), queue.worker():
        await anyio.wait_all_tasks_blocked()
        began = clock.now()
        await clock.advance(0.02)  # the first store fails
        await anyio.wait_all_tasks_blocked()
        assert (await queue.get(job.id)).started_at is None
        assert "storing the starts of 1 jobs failed" in caplog.text
        await clock.advance(0.1)  # tried again 50 ms later, then after 10 ms
        await anyio.wait_all_tasks_blocked()
        assert (await queue.get(job.id)).started_at == began
        release.set()
        done = await queue.wait(job.id)
    assert done.started_at == began


async def test_a_drained_run_hands_its_job_back_with_its_start(
    queue: hq.Queue, clock: FakeClock
) -> None:
    @queue.task
    async def forever() -> None:
        await anyio.sleep_forever()

    job = await forever.enqueue()
    async with guard(), queue.worker(drain_timeout=0.0):
        await anyio.wait_all_tasks_blocked()
        began = clock.now()
    back = await queue.get(job.id)
    assert back.status is hq.JobStatus.PENDING and back.attempts == 0
    assert back.started_at == began


async def test_a_storage_or_clock_set_after_the_queue_is_made_is_the_one_used() -> None:
    class Counting(hq.MemoryStorage):
        enqueued = 0

        async def enqueue(self, jobs: Sequence[hq.Job], **kwargs: Any) -> list[hq.Job]:
            self.enqueued += len(jobs)
            return await super().enqueue(jobs, **kwargs)

    queue = hq.Queue()

    @queue.task
    async def noop() -> None:
        pass

    storage, clock = Counting(), FakeClock(start=1_800_000_000.0)
    queue.storage, queue.clock = storage, clock
    job = await noop.enqueue()
    assert storage.enqueued == 1, "a subclass's enqueue is called, not the fast path"
    assert job.created_at == job.run_at == 1_800_000_000.0
    assert await storage.get(job.id) == job


async def test_the_task_options_go_into_every_job(queue: hq.Queue) -> None:
    @queue.task(queue="mail", priority="high", timeout=5.0, retry=hq.Retry(3), max_rescues=2)
    async def send(to: str) -> None:
        pass

    first, second = await send.enqueue("a"), await send.enqueue("b")
    for job, to in ((first, "a"), (second, "b")):
        assert (job.task, job.queue, job.priority) == ("send", "mail", hq.Priority.HIGH)
        assert (job.timeout, job.max_attempts, job.max_rescues) == (5.0, 3, 2)
        assert job.args == (to,) and job.kwargs == {} and job.status is hq.JobStatus.PENDING
    assert first.id < second.id and first.kwargs is not second.kwargs


def test_one_record_of_many_jobs_weighs_as_one_record_per_job() -> None:
    one_by_one, at_once = AdaptivePrefetch(10), AdaptivePrefetch(10)
    for prefetch in (one_by_one, at_once):
        prefetch.record(0.004)
    for _ in range(7):
        one_by_one.record(0.0001)
    at_once.record(0.0001, jobs=7)
    assert at_once._mean == pytest.approx(one_by_one._mean)
    at_once.record(0.002, jobs=10_000)  # so many that the older mean no longer counts
    assert at_once._mean == pytest.approx(0.002)
