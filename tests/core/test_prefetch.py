"""Adaptive prefetch, the default: big claims for short jobs, and no job held for long.

A pool left to decide claims beyond its free runners only as many jobs as it starts
within a few milliseconds, and hands back to the storage any job of a claim that still
waits 10 ms after it, so a slower batch than the estimate expected is taken by an idle
pool instead of waiting behind this one's busy runners.
"""

from __future__ import annotations

import anyio
import pytest

import hyperqueue as hq
from hyperqueue._prefetch import HOLD_LIMIT, AdaptivePrefetch
from hyperqueue.testing import FakeClock

pytestmark = pytest.mark.anyio


def test_the_extra_claim_grows_while_batches_start_in_time_and_shrinks_when_not() -> None:
    prefetch = AdaptivePrefetch(concurrency=10)
    assert prefetch.extra == 0, "nothing claimed beyond free runners before a job has run"
    prefetch.record(0.000_01)
    assert prefetch.extra == 10, "then one extra job per runner, as a first guess"
    prefetch.batch_started(0.001)
    prefetch.batch_started(0.001)
    assert prefetch.extra == 40, "doubled after each batch started within 5 ms"
    for _ in range(5):
        prefetch.batch_started(0.001)
    assert prefetch.extra == 90, "capped at 9 per runner"
    prefetch.batch_started(0.009)  # 90 extra took 9 ms: 50 fit in the target
    assert prefetch.extra == 50
    prefetch.held_too_long()
    assert prefetch.extra == 25


def test_the_cap_per_runner_can_be_set() -> None:
    prefetch = AdaptivePrefetch(concurrency=10, cap_per_runner=19)
    prefetch.record(0.000_01)
    for _ in range(10):
        prefetch.batch_started(0.001)
    assert prefetch.extra == 190


def test_runners_time_per_job_bounds_the_extra_claim() -> None:
    prefetch = AdaptivePrefetch(concurrency=10)
    for _ in range(5):
        prefetch.batch_started(0.0)
    prefetch.record(0.001)  # 10 runners at 1 ms a job start at most 10 a millisecond
    assert prefetch.extra == 50
    for _ in range(30):
        prefetch.record(0.2)
    assert prefetch.extra == 0, "jobs of 200 ms: only free runners claim"


@pytest.mark.parametrize("bad", [-1, "fast", True, 1.5])
def test_prefetch_takes_auto_or_a_count(bad: object) -> None:
    with pytest.raises(ValueError, match="prefetch must be 'auto' or an int >= 0"):
        hq.Queue().worker(prefetch=bad)  # type: ignore[arg-type]


async def test_short_jobs_are_claimed_in_big_batches_by_default(clock: FakeClock) -> None:
    queue = hq.Queue(clock=clock)
    release = anyio.Event()

    @queue.task
    async def quick() -> None:
        pass

    @queue.task
    async def hold() -> None:
        await release.wait()

    warm = [await quick.enqueue() for _ in range(60)]
    with anyio.fail_after(10):
        async with queue.worker(concurrency=2) as worker:
            for job in warm:
                await queue.wait(job.id)
            held = [await hold.enqueue() for _ in range(50)]
            await anyio.wait_all_tasks_blocked()
            # two run, the rest wait in the buffer: one claim, not twenty
            assert worker.stats().running == 2
            # 2 + 19 per runner on the memory storage (9 on the others)
            assert (await queue.stats())["default"].running == 40
            release.set()
            for job in held:
                await queue.wait(job.id)


async def test_jobs_held_past_the_limit_go_back_and_an_idle_pool_runs_them(
    clock: FakeClock,
) -> None:
    storage = hq.MemoryStorage()
    busy = hq.Queue(storage, clock=clock)
    idle = hq.Queue(storage, clock=clock)
    for queue in (busy, idle):

        @queue.task(name="quick")
        async def quick() -> None:
            pass

        @queue.task(name="slow")
        async def slow() -> None:
            await clock.sleep(1.0)

    warm = [await busy.enqueue("quick") for _ in range(10)]
    with anyio.fail_after(10):
        async with busy.worker(concurrency=1, name="busy"):
            for job in warm:
                await busy.wait(job.id)
            # the estimate says jobs take no time: one claim takes all ten slow ones
            slow_jobs = [await busy.enqueue("slow") for _ in range(10)]
            await anyio.wait_all_tasks_blocked()
            assert (await busy.stats())["default"].running == 10
            async with idle.worker(concurrency=9, name="idle", prefetch=0):
                await anyio.wait_all_tasks_blocked()
                assert (await idle.stats())["default"].running == 10, "none free to take"
                await clock.advance(HOLD_LIMIT)  # nine still wait: they go back, now
                await anyio.wait_all_tasks_blocked()
                running = await idle.list_jobs(status=hq.JobStatus.RUNNING)
                assert sorted(job.worker or "" for job in running.items) == ["busy"] + ["idle"] * 9
                await clock.advance(1.0)
                done = [await idle.wait(job.id) for job in slow_jobs]
    assert all(job.status is hq.JobStatus.COMPLETED and job.attempts == 1 for job in done), (
        "handed back without spending an attempt"
    )
    assert sorted(job.worker or "" for job in done).count("idle") == 9
