"""Execution hooks wrap each run of a job; an OpenTelemetry API with no SDK records nothing.

These run without the SDK installed (the ``core`` tox env): the SDK's own tests are under
tests/adapters/otel/.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import anyio
import pytest
from opentelemetry import trace

import hyperqueue as hq
from hyperqueue import _worker
from hyperqueue.abc import ExecutionHook, JobRun

pytestmark = pytest.mark.anyio


class Recorder:
    """A sync hook that writes down what it saw."""

    def __init__(self, name: str, log: list[Any]) -> None:
        self.name = name
        self.log = log

    def __call__(self, run: JobRun) -> Any:
        log, name = self.log, self.name

        @contextmanager
        def wrap() -> Iterator[None]:
            log.append((name, "enter", run.job.task, run.attempt, run.worker, run.queue))
            try:
                yield
            except BaseException as exc:
                log.append((name, "raised", type(exc).__name__))
                raise
            finally:
                log.append((name, "exit", run.outcome, type(run.error).__name__))

        return wrap()


async def test_hooks_wrap_each_run_queue_hooks_outside_worker_hooks(clock: Any) -> None:
    log: list[Any] = []
    inside: list[str] = []

    @asynccontextmanager
    async def timing(run: JobRun) -> AsyncIterator[None]:
        log.append(("async", "enter", run.job.id))
        await anyio.lowlevel.checkpoint()
        yield
        log.append(("async", "exit", run.outcome))

    queue = hq.Queue(clock=clock, hooks=[Recorder("queue", log)])

    @queue.task
    async def add(a: int, b: int) -> int:
        inside.append(log[-1][0])  # the innermost hook was entered before the call
        return a + b

    async with queue, queue.worker(hooks=[timing], name="w1"):
        job = await add.enqueue(1, 2)
        done = await queue.wait(job.id, timeout=5)
    assert done.result == 3
    assert log == [
        ("queue", "enter", "add", 1, "w1", "default"),
        ("async", "enter", job.id),
        ("async", "exit", "completed"),
        ("queue", "exit", "completed", "NoneType"),
    ]
    assert inside == ["async"]
    assert isinstance(Recorder("x", []), ExecutionHook)


async def test_exit_sees_the_task_exception_and_the_outcome(clock: Any) -> None:
    log: list[Any] = []
    queue = hq.Queue(clock=clock, hooks=[Recorder("h", log)])

    @queue.task(retry=hq.Retry(2, backoff=0.0, jitter=0.0))
    async def flaky() -> None:
        raise ConnectionError("down")

    async with queue, queue.worker():
        job = await flaky.enqueue()
        done = await queue.wait(job.id, timeout=5)
    assert done.status is hq.JobStatus.FAILED
    exits = [entry for entry in log if entry[1] != "enter"]
    assert exits == [
        ("h", "raised", "ConnectionError"),
        ("h", "exit", "retry", "ConnectionError"),
        ("h", "raised", "ConnectionError"),
        ("h", "exit", "failed", "ConnectionError"),
    ]


async def test_a_deferred_run_is_reported_with_its_due_time(clock: Any) -> None:
    runs: list[JobRun] = []

    def keep(run: JobRun) -> None:
        runs.append(run)  # returns None: nothing to wrap, still sees the record

    queue = hq.Queue(clock=clock, hooks=[keep])
    breaker = hq.CircuitBreaker(name="b", failure_threshold=1, clock=clock)

    @queue.task(breaker=breaker)
    async def call() -> None:
        return None

    breaker.record_failure(RuntimeError("x"))  # open
    async with queue, queue.worker():
        await call.enqueue()
        with anyio.fail_after(5):
            while not runs or runs[0].outcome is None:  # noqa: ASYNC110
                await anyio.sleep(0.01)
    assert runs[0].outcome == "deferred"
    assert runs[0].run_at is not None and runs[0].run_at > clock.now() - 1


async def test_a_failing_hook_is_logged_and_left_out_the_job_runs(
    clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    log: list[Any] = []

    def broken_call(run: JobRun) -> None:
        raise RuntimeError("hook bug on call")

    @contextmanager
    def broken_exit_cm() -> Iterator[None]:
        yield
        raise RuntimeError("hook bug on exit")

    def broken_exit(run: JobRun) -> Any:
        return broken_exit_cm()

    class BrokenEnter:
        def __enter__(self) -> None:
            raise RuntimeError("hook bug on enter")

        def __exit__(self, *exc: object) -> None:
            log.append("must not exit what never entered")

    queue = hq.Queue(
        clock=clock,
        hooks=[broken_call, lambda run: BrokenEnter(), broken_exit, Recorder("ok", log)],
    )

    @queue.task
    async def work() -> str:
        return "done"

    with caplog.at_level(logging.ERROR, logger="hyperqueue.worker"):
        async with queue, queue.worker():
            job = await work.enqueue()
            done = await queue.wait(job.id, timeout=5)
    assert done.status is hq.JobStatus.COMPLETED and done.result == "done"
    assert [entry[1] for entry in log] == ["enter", "exit"]
    messages = [r.getMessage() for r in caplog.records]
    assert sum("failed on entering" in m for m in messages) == 2
    assert sum("failed on exiting" in m for m in messages) == 1


async def test_a_hook_cannot_swallow_the_task_exception(clock: Any) -> None:
    class Swallow:
        def __enter__(self) -> None:
            return None

        def __exit__(self, *exc: object) -> bool:
            return True  # ignored: a hook cannot change the outcome

    queue = hq.Queue(clock=clock, hooks=[lambda run: Swallow()])

    @queue.task
    async def boom() -> None:
        raise ValueError("no")

    async with queue, queue.worker():
        job = await boom.enqueue()
        done = await queue.wait(job.id, timeout=5)
    assert done.status is hq.JobStatus.FAILED and done.error == "ValueError: no"


async def test_a_cancelled_run_exits_its_hooks_as_interrupted(clock: Any) -> None:
    log: list[Any] = []
    started = anyio.Event()
    queue = hq.Queue(clock=clock, hooks=[Recorder("h", log)])

    @queue.task
    async def slow() -> None:
        started.set()
        await anyio.sleep_forever()

    async with queue, queue.worker():
        job = await slow.enqueue()
        with anyio.fail_after(5):
            await started.wait()
        await queue.cancel(job.id)
        with anyio.fail_after(5):
            while len(log) < 3:  # noqa: ASYNC110
                await anyio.sleep(0.01)
    assert log[1][:2] == ("h", "raised")
    assert log[2][:3] == ("h", "exit", "interrupted")


async def test_no_hook_and_no_sdk_builds_no_record(
    clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[object] = []

    class Counting(JobRun):
        def __init__(self, *args: Any) -> None:
            built.append(self)
            super().__init__(*args)

    monkeypatch.setattr(_worker, "JobRun", Counting)
    queue = hq.Queue(clock=clock)

    @queue.task
    async def noop() -> None:
        return None

    async with queue, queue.worker() as worker:
        jobs = [await noop.enqueue() for _ in range(20)]
        for job in jobs:
            await queue.wait(job.id, timeout=5)
        assert worker._wrap == ()
    assert built == []


async def test_without_an_sdk_nothing_is_recorded_and_no_provider_is_set(clock: Any) -> None:
    queue = hq.Queue(clock=clock)

    @queue.task
    async def noop() -> None:
        return None

    with trace.get_tracer("test").start_as_current_span("caller") as caller:
        assert not caller.is_recording()
        async with queue, queue.worker():
            job = await noop.enqueue()
            done = await queue.wait(job.id, timeout=5)
    assert done.headers == {}  # no trace context is written without a recording span
    assert not queue.telemetry.active
    assert queue.telemetry.tracer() is None and queue.telemetry.instruments() is None
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def test_trace_context_is_checked() -> None:
    with pytest.raises(ValueError, match="trace_context"):
        hq.Queue(trace_context="child")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="metrics_interval"):
        hq.Queue(metrics_interval=0)
    assert repr(JobRun(hq.Job(id="j", task="t", attempts=1), "w")).startswith("JobRun(job='j'")
