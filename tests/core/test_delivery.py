"""The delivery contract inside one process: starts, templates, cursors, waiters,
breakers, pauses and the event log (DESIGN "Delivery across processes and hosts")."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager

import anyio
import pytest

import hyperqueue as hq
from hyperqueue.testing import FakeClock

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def guard(seconds: float = 10.0) -> AsyncIterator[None]:
    with anyio.fail_after(seconds):
        yield


async def test_a_claimed_job_has_not_started_until_its_function_is_called(
    queue: hq.Queue, clock: FakeClock
) -> None:
    gate = anyio.Event()
    started: list[str] = []
    queue.events.subscribe(lambda e: started.append(e.job.id), hq.JobStarted)

    @queue.task
    async def slow() -> None:
        await gate.wait()

    first, second = await slow.enqueue(), await slow.enqueue()
    async with guard(), queue, queue.worker(concurrency=1, prefetch=1):
        await anyio.wait_all_tasks_blocked()
        buffered = await queue.get(second.id)
        assert buffered.status is hq.JobStatus.RUNNING  # claimed, waiting in the buffer
        assert buffered.started_at is None and started == [first.id]
        await clock.advance(1.0)
        gate.set()
        done = await queue.wait(second.id)
    assert started == [first.id, second.id]
    first_done = await queue.get(first.id)
    assert first_done.started_at is not None and done.started_at is not None
    assert done.started_at >= first_done.started_at + 1.0  # not the claim time


async def test_templates_fill_what_the_enqueue_leaves_unset(queue: hq.Queue) -> None:
    @queue.task
    async def export(day: str) -> None: ...

    queue.template("nightly", queue="reports", priority="low", timeout=600.0, max_attempts=5)
    job = await export.options(template="nightly").enqueue("2026-11-29")
    assert (job.queue, job.priority, job.timeout, job.max_attempts) == (
        "reports",
        hq.Priority.LOW,
        600.0,
        5,
    )
    mine = await queue.enqueue("export", args=["x"], template="nightly", priority="high")
    assert mine.priority is hq.Priority.HIGH and mine.queue == "reports"
    with pytest.raises(hq.OptionError, match="unknown template 'weekly'"):
        await export.options(template="weekly").enqueue("x")
    with pytest.raises(hq.OptionError):
        queue.template("bad", max_attempts=0)


async def test_a_cursor_keeps_the_filters_of_its_listing(queue: hq.Queue) -> None:
    @queue.task
    async def send() -> None: ...

    for i in range(6):
        await send.options(queue="mail" if i % 2 else "other").enqueue()
    page = await queue.list_jobs(queue="mail", limit=2)
    assert page.next_cursor is not None
    second = await queue.list_jobs(cursor=page.next_cursor, limit=2)  # filters not repeated
    assert [j.queue for j in page.items + second.items] == ["mail"] * 3
    with pytest.raises(hq.OptionError, match="other filters"):
        await queue.list_jobs(queue="other", cursor=page.next_cursor)
    with pytest.raises(hq.OptionError, match="cursor"):
        await queue.list_jobs(cursor="not-a-cursor")


async def test_waits_that_time_out_leave_nothing_behind(queue: hq.Queue) -> None:
    @queue.task
    async def never() -> None: ...

    job = await never.enqueue()
    for _ in range(3):
        with pytest.raises(hq.JobTimeout):
            await queue.wait(job.id, timeout=0.0)
    assert queue._waiters == {}


async def test_a_half_open_breaker_defers_jobs_to_a_later_trial(
    queue: hq.Queue, clock: FakeClock
) -> None:
    breaker = hq.CircuitBreaker("svc", failure_threshold=1, open_for=10.0, clock=clock)
    breaker.record_failure()  # open
    await clock.advance(10.0)  # half-open: one trial slot
    assert breaker.allow()  # an outside call holds the trial
    calls: list[int] = []

    @queue.task(breaker=breaker)
    async def call(i: int) -> None:
        calls.append(i)

    jobs = [await call.enqueue(i) for i in range(5)]
    deferred: list[hq.JobDeferred] = []
    queue.events.subscribe(deferred.append, hq.JobDeferred)
    async with guard(), queue, queue.worker():
        await anyio.wait_all_tasks_blocked()
        assert calls == []
        assert len(deferred) == 5  # once each, not a spin
        for event in deferred:
            assert event.job.run_at >= clock.now() + 1.0  # a tenth of open_for
        breaker.record_success()  # the trial passed: closed
        await clock.advance(1.0)
        for job in jobs:
            done = await queue.wait(job.id)
            assert done.status is hq.JobStatus.COMPLETED and done.attempts == 1
    assert sorted(calls) == list(range(5))


async def test_a_breaker_error_from_the_task_itself_is_an_ordinary_failure(
    queue: hq.Queue,
) -> None:
    @queue.task(retry=hq.Retry(2, on=hq.CircuitOpenError, backoff=0.0, jitter=0.0))
    async def downstream() -> None:
        raise hq.CircuitOpenError("their-breaker", 0.0, 0.0)

    job = await downstream.enqueue()
    async with guard(), queue, queue.worker():
        done = await queue.wait(job.id)
    assert done.status is hq.JobStatus.FAILED and done.attempts == 2  # the limit applies


async def test_a_paused_pool_claims_nothing_until_resumed(
    queue: hq.Queue, clock: FakeClock
) -> None:
    @queue.task
    async def work() -> str:
        return "done"

    async with guard(), queue, queue.worker() as worker:
        worker.pause()
        job = await work.enqueue()
        await clock.advance(5.0)
        assert (await queue.get(job.id)).status is hq.JobStatus.PENDING
        assert worker.stats().paused
        worker.resume()
        assert (await queue.wait(job.id)).result == "done"


async def test_a_read_only_mode_stops_claims(queue: hq.Queue, clock: FakeClock) -> None:
    modes = hq.ModeController(clock=clock)

    @queue.task
    async def work() -> None: ...

    modes.set(hq.Mode.READ_ONLY)
    async with guard(), queue, queue.worker(modes=modes):
        job = await work.enqueue()
        await clock.advance(1.0)
        assert (await queue.get(job.id)).status is hq.JobStatus.PENDING
        modes.clear()
        await clock.advance(0.25)
        done = await queue.wait(job.id)
    assert done.status is hq.JobStatus.COMPLETED


async def test_the_event_log_serves_every_transition_from_any_id(queue: hq.Queue) -> None:
    @queue.task
    async def add(a: int, b: int) -> int:
        return a + b

    start = await queue.storage.last_event_id()
    job = await add.enqueue(1, 2)
    async with guard(), queue, queue.worker():
        await queue.wait(job.id)
        seen: list[hq.StoredEvent] = []
        async with aclosing(queue.event_log(after=start)) as log:
            async for entry in log:
                seen.append(entry)
                if entry.type == "job.completed":
                    break
    assert [e.type for e in seen] == ["job.enqueued", "job.started", "job.completed"]
    assert seen[-1].job.result == 3


async def test_tenant_quotas_refuse_what_would_pass_them(queue: hq.Queue) -> None:
    queue.tenant_quotas = {"acme": 1}

    @queue.task
    async def work() -> None: ...

    await work.options(tenant="acme").enqueue()
    with pytest.raises(hq.QuotaExceeded):
        await work.options(tenant="acme").enqueue()
    await work.options(tenant="other").enqueue()
