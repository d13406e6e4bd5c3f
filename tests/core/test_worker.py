"""The worker pool: running, retrying, timing out, cancelling, leases and draining."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.lowlevel
import pytest

import hyperqueue as hq
from hyperqueue.testing import FakeClock

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def guard(seconds: float = 10.0) -> AsyncIterator[None]:
    """A real-time safety net so a broken test fails instead of hanging."""
    with anyio.fail_after(seconds):
        yield


async def test_worker_runs_jobs_and_stores_results(queue: hq.Queue) -> None:
    @queue.task
    async def add(a: int, b: int) -> int:
        return a + b

    jobs = [await add.enqueue(i, i) for i in range(20)]
    async with guard(), queue.worker(concurrency=4):
        done = [await queue.wait(job.id) for job in jobs]
    assert [j.result for j in done] == [2 * i for i in range(20)]
    assert all(j.status is hq.JobStatus.COMPLETED and j.attempts == 1 for j in done)
    assert all(j.finished_at is not None and j.started_at is not None for j in done)
    stats = await queue.stats()
    assert stats["default"].completed == 20 and stats["default"].total == 20


async def test_idle_worker_starts_new_work_without_time_passing(
    queue: hq.Queue, clock: FakeClock
) -> None:
    ran = anyio.Event()

    @queue.task
    async def ping() -> None:
        ran.set()

    async with guard(), queue.worker():
        await anyio.wait_all_tasks_blocked()  # the pool is idle, waiting
        before = clock.now()
        await ping.enqueue()
        await ran.wait()
        assert clock.now() == before, "woken by the enqueue, not by a timer"


async def test_delayed_job_runs_when_its_time_comes(queue: hq.Queue, clock: FakeClock) -> None:
    @queue.task
    async def later() -> float:
        return clock.now()

    async with guard(), queue.worker():
        job = await later.options(delay=30.0).enqueue()
        await clock.advance(29.9)
        assert (await queue.get(job.id)).status is hq.JobStatus.PENDING
        await clock.advance(0.1)
        done = await queue.wait(job.id)
    assert done.result == pytest.approx(job.created_at + 30.0)


async def test_priorities_decide_the_order_of_runs(queue: hq.Queue) -> None:
    order: list[str] = []

    @queue.task
    async def record(name: str) -> None:
        order.append(name)

    for name, priority in [("l", "low"), ("n", "normal"), ("h", "high"), ("c", "critical")]:
        await record.options(priority=priority).enqueue(name)
    last = await record.options(priority="low").enqueue("l2")
    async with guard(), queue.worker(concurrency=1):
        await queue.wait(last.id)
    assert order == ["c", "h", "n", "l", "l2"]


async def test_concurrency_limits_jobs_running_at_once(queue: hq.Queue) -> None:
    running = 0
    peak = 0
    release = anyio.Event()

    @queue.task
    async def hold() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await release.wait()
        running -= 1

    jobs = [await hold.enqueue() for _ in range(10)]
    async with guard(), queue.worker(concurrency=3) as worker:
        await anyio.wait_all_tasks_blocked()
        assert running == 3 and worker.stats().running == 3
        assert (await queue.stats())["default"].running == 3
        release.set()
        for job in jobs:
            await queue.wait(job.id)
    assert peak == 3


async def test_failures_retry_with_backoff_then_succeed(queue: hq.Queue, clock: FakeClock) -> None:
    calls: list[float] = []
    seen: list[str] = []
    queue.events.subscribe(lambda e: seen.append(type(e).__name__))

    @queue.task(retry=hq.Retry(3, backoff=2.0, jitter=0.0))
    async def flaky() -> str:
        calls.append(clock.now())
        if len(calls) < 3:
            raise ConnectionError(f"try {len(calls)}")
        return "ok"

    job = await flaky.enqueue()
    assert job.max_attempts == 3
    async with guard(), queue.worker():
        await anyio.wait_all_tasks_blocked()
        waiting = await queue.get(job.id)
        assert waiting.status is hq.JobStatus.PENDING
        assert waiting.error == "ConnectionError: try 1"
        assert waiting.run_at == pytest.approx(calls[0] + 2.0)
        await clock.advance(2.0)
        await clock.advance(4.0)
        done = await queue.wait(job.id)
    assert done.status is hq.JobStatus.COMPLETED and done.result == "ok"
    assert done.attempts == 3
    assert [round(t - calls[0], 6) for t in calls] == [0.0, 2.0, 6.0]
    assert seen.count("JobRetrying") == 2 and seen[-1] == "JobCompleted"


async def test_exhausted_attempts_land_in_the_dead_letters_and_can_be_replayed(
    queue: hq.Queue, clock: FakeClock
) -> None:
    healthy = False

    @queue.task(retry=hq.Retry(2, backoff=1.0, jitter=0.0))
    async def fragile(n: int) -> int:
        if not healthy:
            raise ValueError(f"bad {n}")
        return n

    job = await fragile.enqueue(7)
    async with guard(), queue.worker():
        await anyio.wait_all_tasks_blocked()
        await clock.advance(1.0)
        failed = await queue.wait(job.id)
        assert failed.status is hq.JobStatus.FAILED and failed.attempts == 2
        assert failed.error == "ValueError: bad 7"
        assert failed.traceback is not None and "raise ValueError" in failed.traceback
        dead = await queue.dead_letters()
        assert [j.id for j in dead.items] == [job.id]

        healthy = True
        replayed = await queue.retry(job.id)
        assert replayed.status is hq.JobStatus.PENDING and replayed.attempts == 0
        done = await queue.wait(job.id)
    assert done.status is hq.JobStatus.COMPLETED and done.result == 7
    assert (await queue.dead_letters()).items == []


async def test_only_chosen_exceptions_are_retried(queue: hq.Queue) -> None:
    @queue.task(retry=hq.Retry(5, on=(ConnectionError, TimeoutError)))
    async def strict() -> None:
        raise KeyError("not transient")

    job = await strict.enqueue()
    async with guard(), queue.worker():
        done = await queue.wait(job.id)
    assert done.status is hq.JobStatus.FAILED and done.attempts == 1
    assert done.error is not None and done.error.startswith("KeyError")


async def test_timeout_fails_the_attempt(queue: hq.Queue, clock: FakeClock) -> None:
    cleaned_up = anyio.Event()

    @queue.task(timeout=5.0, retry=hq.Retry(2, backoff=1.0, jitter=0.0, on=TimeoutError))
    async def stuck() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            cleaned_up.set()

    job = await stuck.enqueue()
    async with guard(), queue.worker():
        await anyio.wait_all_tasks_blocked()
        await clock.advance(5.0)
        assert cleaned_up.is_set()
        retrying = await queue.get(job.id)
        assert retrying.status is hq.JobStatus.PENDING
        assert retrying.error is not None and retrying.error.startswith("JobTimeout")
        await clock.advance(1.0)
        await clock.advance(5.0)
        done = await queue.wait(job.id)
    assert done.status is hq.JobStatus.FAILED and done.attempts == 2


async def test_per_job_timeout_overrides_the_task_default(
    queue: hq.Queue, clock: FakeClock
) -> None:
    @queue.task
    async def slow() -> str:
        await clock.sleep(10.0)
        return "done"

    quick = await slow.options(timeout=1.0).enqueue()
    patient = await slow.enqueue()
    async with guard(), queue.worker():
        await anyio.wait_all_tasks_blocked()
        await clock.advance(10.0)
        assert (await queue.wait(quick.id)).status is hq.JobStatus.FAILED
        assert (await queue.wait(patient.id)).result == "done"


async def test_cancel_pending_and_running_jobs(queue: hq.Queue) -> None:
    started = anyio.Event()
    cancelled_inside = anyio.Event()

    @queue.task
    async def long() -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            cancelled_inside.set()
            raise

    @queue.task
    async def quick() -> str:
        return "fine"

    running_job = await long.enqueue()
    async with guard(), queue.worker(concurrency=1):
        await started.wait()
        pending_job = await quick.enqueue()
        assert (await queue.cancel(pending_job.id)).status is hq.JobStatus.CANCELLED
        cancelled = await queue.cancel(running_job.id)
        assert cancelled.status is hq.JobStatus.CANCELLED
        await cancelled_inside.wait()
        # the pool carries on with other work afterwards
        after = await quick.enqueue()
        assert (await queue.wait(after.id)).result == "fine"
    stats = (await queue.stats())["default"]
    assert (stats.cancelled, stats.failed, stats.completed) == (2, 0, 1)
    assert (await queue.get(pending_job.id)).started_at is None
    with pytest.raises(hq.InvalidTransition):
        await queue.cancel(after.id)


async def test_cancelled_job_can_be_retried(queue: hq.Queue) -> None:
    @queue.task
    async def one() -> int:
        return 1

    job = await one.enqueue()
    await queue.cancel(job.id)
    await queue.retry(job.id)
    async with guard(), queue.worker():
        assert (await queue.wait(job.id)).result == 1


async def test_heartbeat_keeps_the_lease_of_a_long_job(queue: hq.Queue, clock: FakeClock) -> None:
    runs = 0

    @queue.task
    async def marathon() -> str:
        nonlocal runs
        runs += 1
        await clock.sleep(300.0)
        return "finished"

    job = await marathon.enqueue()
    async with guard(), queue.worker(lease=30.0):
        await anyio.wait_all_tasks_blocked()
        for _ in range(30):
            await clock.advance(10.0)
        done = await queue.wait(job.id)
    assert done.result == "finished" and done.attempts == 1 and runs == 1


async def test_expired_lease_of_a_crashed_worker_is_rescued_and_fenced(
    queue: hq.Queue, clock: FakeClock
) -> None:
    @queue.task(retry=hq.Retry(3))
    async def work() -> str:
        return "second try"

    job = await work.enqueue()
    # a worker in another process claims the job, then dies without a word
    [claimed] = await queue.storage.claim(None, limit=1, now=clock.now(), lease=30.0, worker="dead")
    async with guard(), queue.worker(lease=30.0) as worker:
        await anyio.wait_all_tasks_blocked()
        assert (await queue.get(job.id)).status is hq.JobStatus.RUNNING
        await clock.advance(40.0)  # past the lease, and past a rescue round
        done = await queue.wait(job.id)
        assert worker.stats().rescued == 1 and worker.stats().retried == 0
    # the lost worker spent no attempt: this is the first that ran to the end
    assert done.result == "second try" and done.attempts == 1 and done.rescues == 1
    late = hq.Outcome(id=job.id, token=claimed.token, status=hq.JobStatus.FAILED, error="zombie")
    assert await queue.storage.finish([late], now=clock.now()) == [None]
    assert (await queue.get(job.id)).status is hq.JobStatus.COMPLETED


async def test_job_cancelled_elsewhere_is_stopped_by_the_heartbeat(clock: FakeClock) -> None:
    storage = hq.MemoryStorage()
    here = hq.Queue(storage, clock=clock)
    elsewhere = hq.Queue(storage, clock=clock)  # e.g. the API server's queue
    stopped = anyio.Event()

    @here.task
    async def long() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            stopped.set()

    job = await long.enqueue()
    async with guard(), here.worker(lease=30.0) as worker:
        await anyio.wait_all_tasks_blocked()
        await elsewhere.cancel(job.id)
        assert not stopped.is_set()
        await clock.advance(10.0)  # next heartbeat finds the claim gone
        await stopped.wait()
        assert worker.stats().lost == 1
    assert (await here.get(job.id)).status is hq.JobStatus.CANCELLED


async def test_drain_lets_running_jobs_finish(queue: hq.Queue, clock: FakeClock) -> None:
    @queue.task
    async def slow() -> str:
        await clock.sleep(5.0)
        return "made it"

    job = await slow.enqueue()
    async with guard(), anyio.create_task_group() as tg:

        async def advance() -> None:
            await clock.advance(5.0)

        async with queue.worker(drain_timeout=30.0):
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(advance)
    assert (await queue.get(job.id)).result == "made it"


async def test_drain_deadline_hands_unfinished_jobs_back(queue: hq.Queue, clock: FakeClock) -> None:
    started = anyio.Event()

    @queue.task
    async def endless() -> None:
        started.set()
        await anyio.sleep_forever()

    job = await endless.enqueue()
    queued = await endless.enqueue()
    async with (
        guard(),
        anyio.create_task_group() as tg,
        queue.worker(concurrency=1, drain_timeout=10.0),
    ):
        await started.wait()
        tg.start_soon(clock.advance, 10.0)
    back = await queue.get(job.id)
    assert back.status is hq.JobStatus.PENDING and back.attempts == 0
    assert (await queue.get(queued.id)).status is hq.JobStatus.PENDING
    stats = (await queue.stats())["default"]
    assert (stats.pending, stats.running) == (2, 0)


async def test_an_error_in_the_body_releases_claimed_jobs(queue: hq.Queue) -> None:
    started = anyio.Event()

    @queue.task
    async def endless() -> None:
        started.set()
        await anyio.sleep_forever()

    job = await endless.enqueue()

    async def host() -> None:
        async with guard(), queue.worker():
            await started.wait()
            raise RuntimeError("host broke")

    with pytest.raises(RuntimeError, match="host broke"):
        await host()
    back = await queue.get(job.id)
    assert back.status is hq.JobStatus.PENDING and back.attempts == 0


async def test_progress_and_current_job_inside_a_task(queue: hq.Queue) -> None:
    proceed = anyio.Event()
    progress_events: list[object] = []
    queue.events.subscribe(lambda e: progress_events.append(e.job.progress), hq.JobProgress)

    @queue.task
    async def report() -> str:
        await hq.report_progress({"done": 1, "of": 2})
        await proceed.wait()
        return hq.current_job().id

    job = await report.enqueue()
    async with guard(), queue.worker():
        await anyio.wait_all_tasks_blocked()
        assert (await queue.get(job.id)).progress == {"done": 1, "of": 2}
        proceed.set()
        done = await queue.wait(job.id)
    assert done.result == job.id
    assert progress_events == [{"done": 1, "of": 2}]
    with pytest.raises(LookupError):
        hq.current_job()


async def test_transitions_are_published_in_order(queue: hq.Queue) -> None:
    seen: list[tuple[str, str]] = []
    queue.events.subscribe(lambda e: seen.append((type(e).__name__, e.job.status)))

    @queue.task
    async def ok() -> None:
        return None

    job = await ok.enqueue()
    async with guard(), queue.worker():
        await queue.wait(job.id)
    assert seen == [
        ("JobEnqueued", "pending"),
        ("JobStarted", "running"),
        ("JobCompleted", "completed"),
    ]


async def test_wait_gives_up_after_its_timeout(queue: hq.Queue, clock: FakeClock) -> None:
    @queue.task
    async def never() -> None: ...

    job = await never.enqueue()  # no worker runs it
    async with guard(), anyio.create_task_group() as tg:
        tg.start_soon(clock.advance, 5.0)
        with pytest.raises(hq.JobTimeout, match="still pending"):
            await queue.wait(job.id, timeout=5.0)


async def test_a_job_waits_for_a_worker_that_knows_its_task(clock: FakeClock) -> None:
    """A rolling deploy: the old worker lacks the new task, the new worker has it."""
    storage = hq.MemoryStorage()
    producer = hq.Queue(storage, clock=clock)
    old = hq.Queue(storage, clock=clock)
    new = hq.Queue(storage, clock=clock)

    @producer.task
    async def added_in_v2() -> str:
        return "never here"

    @old.task
    async def legacy() -> None: ...

    @new.task(name="added_in_v2")
    async def added_in_v2_new() -> str:
        return "v2"

    job = await added_in_v2.enqueue()
    async with guard(), old.worker(name="old"):
        await anyio.wait_all_tasks_blocked()
        await clock.advance(60.0)
        assert (await producer.get(job.id)).status is hq.JobStatus.PENDING
        [unserved] = await producer.unserved()
        assert (unserved.task, unserved.pending) == ("added_in_v2", 1)
        assert (await producer.stats())["default"].unserved == 1
        assert [w.name for w in await producer.workers()] == ["old"]
        async with new.worker(name="new"):
            done = await new.wait(job.id)
    assert done.status is hq.JobStatus.COMPLETED and done.result == "v2"
    assert done.attempts == 1
    assert await producer.unserved() == []
    assert await producer.workers() == []  # both left


async def test_results_are_stored_in_json_form(queue: hq.Queue) -> None:
    @queue.task
    async def shaped() -> object:
        return {"when": dt.date(2026, 1, 2), "set": (1, 2)}

    @queue.task
    async def unserializable() -> object:
        return object()

    a, b = await shaped.enqueue(), await unserializable.enqueue()
    async with guard(), queue.worker():
        assert (await queue.wait(a.id)).result == {"when": "2026-01-02", "set": [1, 2]}
        bad = await queue.wait(b.id)
    assert bad.status is hq.JobStatus.FAILED and bad.error is not None


async def test_typed_arguments_reach_the_task_as_their_types(queue: hq.Queue) -> None:
    @queue.task
    async def typed(when: dt.date, count: int = 1) -> str:
        assert isinstance(when, dt.date)
        return f"{when.year}:{count}"

    job = await typed.enqueue(dt.date(2026, 11, 23), count=3)
    async with guard(), queue.worker():
        assert (await queue.wait(job.id)).result == "2026:3"


class FlakyStorage(hq.MemoryStorage):
    """Memory storage whose claim and finish fail a set number of times first."""

    def __init__(self, claim_failures: int = 0, finish_failures: int = 0) -> None:
        super().__init__()
        self.claim_failures = claim_failures
        self.finish_failures = finish_failures

    async def claim(self, *args: object, **kwargs: object) -> list[hq.Job]:  # type: ignore[override]
        if self.claim_failures:
            self.claim_failures -= 1
            raise hq.StorageError("database is locked")
        return await super().claim(*args, **kwargs)  # type: ignore[arg-type]

    async def finish(self, *args: object, **kwargs: object) -> list[hq.Job | None]:  # type: ignore[override]
        if self.finish_failures:
            self.finish_failures -= 1
            raise hq.StorageError("disk I/O error")
        return await super().finish(*args, **kwargs)  # type: ignore[arg-type]


async def test_worker_outlives_storage_errors_and_loses_no_outcome(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    storage = FlakyStorage(claim_failures=2, finish_failures=3)
    queue = hq.Queue(storage, clock=clock)
    runs = 0

    @queue.task
    async def once() -> str:
        nonlocal runs
        runs += 1
        return "stored"

    job = await once.enqueue()
    async with guard(), queue.worker():
        for _ in range(10):  # back-offs of 50 ms, 100 ms, ... on the fake clock
            await clock.advance(0.5)
        done = await queue.wait(job.id)
    assert done.result == "stored" and runs == 1
    assert storage.claim_failures == storage.finish_failures == 0
    assert "storage failed while claiming jobs" in caplog.text
    assert "storing 1 job outcomes failed" in caplog.text


async def test_prefetch_claims_beyond_concurrency(queue: hq.Queue) -> None:
    release = anyio.Event()

    @queue.task
    async def hold() -> None:
        await release.wait()

    jobs = [await hold.enqueue() for _ in range(10)]
    async with guard(), queue.worker(concurrency=2, prefetch=3) as worker:
        await anyio.wait_all_tasks_blocked()
        assert worker.stats().running == 2
        # two run, three wait in the pool's buffer under a renewed lease
        assert (await queue.stats())["default"].running == 5
        release.set()
        for job in jobs:
            await queue.wait(job.id)
    assert (await queue.stats())["default"].completed == 10


async def test_retry_on_result_reruns_until_the_result_is_accepted(
    queue: hq.Queue, clock: FakeClock
) -> None:
    answers = iter([503, 502, 200])

    @queue.task(retry=hq.Retry(3, backoff=1.0, jitter=0.0, on_result=lambda r: r >= 500))
    async def call() -> int:
        return next(answers)

    job = await call.enqueue()
    async with guard(), queue.worker():
        await anyio.wait_all_tasks_blocked()
        assert (await queue.get(job.id)).error == "result 503 asks for a retry"
        await clock.advance(1.0)
        await clock.advance(2.0)
        done = await queue.wait(job.id)
    assert done.result == 200 and done.attempts == 3 and done.status is hq.JobStatus.COMPLETED


async def test_open_breaker_defers_jobs_without_spending_attempts(
    clock: FakeClock,
) -> None:
    queue = hq.Queue(
        clock=clock, breakers=hq.BreakerRegistry(clock=clock, failure_threshold=2, open_for=30.0)
    )
    healthy = False

    @queue.task(breaker="payments", retry=hq.Retry(5, backoff=1.0, jitter=0.0))
    async def charge(n: int) -> int:
        if not healthy:
            raise ConnectionError("gateway down")
        return n

    first, second = await charge.enqueue(1), await charge.enqueue(2)
    async with guard(), queue.worker(concurrency=1) as worker:
        await anyio.wait_all_tasks_blocked()
        await clock.advance(1.0)  # both failed once: the breaker opened
        assert queue.breakers.get("payments").state is hq.BreakerState.OPEN
        third = await charge.enqueue(3)
        await anyio.wait_all_tasks_blocked()
        deferred = await queue.get(third.id)
        assert deferred.status is hq.JobStatus.PENDING and deferred.attempts == 0
        assert deferred.run_at == pytest.approx(queue.breakers.get("payments").retry_at)
        healthy = True
        await clock.advance(30.0)  # half-open: a trial passes and closes it
        done = [await queue.wait(j.id) for j in (first, second, third)]
        assert worker.stats().deferred >= 1
    assert [j.result for j in done] == [1, 2, 3]
    assert done[2].attempts == 1, "deferrals did not count as attempts"


async def test_rate_limited_task_defers_jobs_over_the_limit(
    queue: hq.Queue, clock: FakeClock
) -> None:
    started: list[float] = []

    @queue.task(rate_limit="2/second")
    async def ping(n: int) -> None:
        started.append(clock.now())

    jobs = [await ping.enqueue(n) for n in range(5)]
    async with guard(), queue.worker():
        await anyio.wait_all_tasks_blocked()
        assert len(started) == 2
        for _ in range(3):
            await clock.advance(1.0)
        for job in jobs:
            done = await queue.wait(job.id)
            assert done.status is hq.JobStatus.COMPLETED and done.attempts == 1
    t0 = started[0]
    assert [round(t - t0) for t in started] == [0, 0, 1, 1, 2]


async def test_rate_limit_per_key_from_the_arguments(queue: hq.Queue) -> None:
    @queue.task(rate_limit="1/minute", rate_limit_key=lambda customer: customer)
    async def bill(customer: str) -> str:
        return customer

    jobs = [await bill.enqueue(c) for c in ("a", "b", "a")]
    async with guard(), queue.worker():
        assert (await queue.wait(jobs[0].id)).result == "a"
        assert (await queue.wait(jobs[1].id)).result == "b"
        await anyio.wait_all_tasks_blocked()
        assert (await queue.get(jobs[2].id)).status is hq.JobStatus.PENDING


async def test_async_subscribers_run_inside_async_with_queue(queue: hq.Queue) -> None:
    seen: list[str] = []

    async def record(event: hq.JobEvent) -> None:
        await anyio.lowlevel.checkpoint()
        seen.append(f"{type(event).__name__}:{event.job.status}")

    queue.events.subscribe_async(record, "job.*")

    @queue.task(rate_limit="1/hour")
    async def once() -> int:
        return 1

    first, second = await once.enqueue(), await once.enqueue()
    async with guard(), queue, queue.worker():
        await queue.wait(first.id)
        await anyio.wait_all_tasks_blocked()
    assert "JobCompleted:completed" in seen
    assert "JobDeferred:pending" in seen, "the second job waited for the rate limit"
    assert (await queue.get(second.id)).status is hq.JobStatus.PENDING


async def test_tenant_cap_limits_its_running_jobs_without_spending_attempts(
    clock: FakeClock,
) -> None:
    queue = hq.Queue(clock=clock, tenant_limits={"acme": 2})
    release = anyio.Event()
    running: dict[str, int] = {"acme": 0, "globex": 0}
    peak: dict[str, int] = {"acme": 0, "globex": 0}

    @queue.task
    async def work(tenant: str) -> None:
        running[tenant] += 1
        peak[tenant] = max(peak[tenant], running[tenant])
        await release.wait()
        running[tenant] -= 1

    jobs = [await work.options(tenant="acme").enqueue("acme") for _ in range(5)]
    jobs += [await work.options(tenant="globex").enqueue("globex") for _ in range(2)]
    async with guard(), queue.worker(concurrency=10):
        await anyio.wait_all_tasks_blocked()
        assert running == {"acme": 2, "globex": 2}
        release.set()
        for _ in range(6):
            await clock.advance(0.5)  # the deferred acme jobs come back two at a time
        done = [await queue.wait(job.id) for job in jobs]
    assert peak == {"acme": 2, "globex": 2}
    assert all(j.status is hq.JobStatus.COMPLETED and j.attempts == 1 for j in done)
