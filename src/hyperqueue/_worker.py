"""The worker pool: a few long-lived runner tasks that claim jobs in batches.

No task is spawned per job. ``concurrency`` runners share a small buffer of claimed
jobs; whichever runner finds it empty claims the next batch (the free capacity, plus
the few extra jobs that start within milliseconds: see ``_prefetch``) while the others
wait to be handed work. An idle
pool waits on the storage's listener, the clock (for the next delayed job) and the stop
signal, so new work starts at once and nothing polls.

Each runner executes jobs inside its own cancel scope. Cancelling a running job, a lost
lease and the end of a drain all cancel that scope; the runner records why, settles the
job and starts a fresh scope. Timeouts use a per-job scope from the clock, only for jobs
that have a timeout.
"""

from __future__ import annotations

import logging
import os
import platform
import secrets
import traceback as tb_module
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from contextvars import ContextVar
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import anyio
import anyio.abc
import anyio.lowlevel
import msgspec

from ._errors import ArgumentError, JobTimeout
from ._events import (
    JobCompleted,
    JobDeferred,
    JobFailed,
    JobProgress,
    JobRescued,
    JobRetrying,
    JobStarted,
)
from ._hooks import ExecutionHook, JobRun, RunOutcome, enter_hooks, exit_hooks
from ._json import to_json_form
from ._memory import MemoryStorage
from ._models import Job, JobStatus, Outcome, WorkerInfo
from ._modes import ModeController, Operation
from ._prefetch import CAP_PER_RUNNER, HOLD_LIMIT, MEMORY_CAP_PER_RUNNER, AdaptivePrefetch
from ._retry import Retry

if TYPE_CHECKING:
    from ._queue import Queue
    from .abc import WorkListener

__all__ = ["Worker", "WorkerStats", "current_job", "report_progress"]

_log = logging.getLogger("hyperqueue.worker")
_START_DELAY = 0.01
"""Seconds a start waits to be stored with its job's outcome before it is stored alone:
a short job's start and end cost one write, a long job's start is visible at once."""
_MODE_RECHECK = 0.25  # seconds between looks at a mode that stops workers claiming
_UNKNOWN_TASK_WAIT = 1.0  # a job of a task this pool dropped goes back for another worker
_DEFAULT_RETRY = Retry(2)  # backoff for jobs given attempts by a template or the API

_NONE_ENTERED: list[Any] = []  # the hooks entered around a run with none: never added to
_COMPLETED = JobStatus.COMPLETED
_FAILED = JobStatus.FAILED
_PENDING = JobStatus.PENDING
_CANCELLED = JobStatus.CANCELLED


class WorkerStats(msgspec.Struct, frozen=True, kw_only=True):
    """Figures of one worker pool since it started. ``retried`` counts failed attempts
    scheduled to run again; ``rescued`` the jobs this pool found with an expired lease
    (their worker was lost: no attempt spent); ``lost`` the jobs this pool lost."""

    name: str
    concurrency: int
    running: int
    completed: int
    failed: int
    retried: int
    cancelled: int
    lost: int
    deferred: int
    rescued: int = 0
    paused: bool = False


class _Runner:
    __slots__ = ("job", "reason", "scope", "started", "wake", "worker")

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.job: Job | None = None
        self.started: float | None = None
        """When the running job's function was called, while that is not stored: it
        goes with the job's outcome, or alone after ``_START_DELAY``."""
        self.reason: str | None = None
        self.scope: anyio.CancelScope | None = None
        self.wake: anyio.Event | None = None


_current: ContextVar[_Runner] = ContextVar("hyperqueue_runner")


def current_job() -> Job:
    """The job the calling task is running; raises LookupError outside a job."""
    job = _current.get().job
    if job is None:
        raise LookupError("not inside a running job")
    return job


async def report_progress(progress: Any) -> None:
    """Record the progress of the running job (any JSON-like value: 0.5, {"done": 3})."""
    runner = _current.get()
    job = runner.job
    if job is None:
        raise LookupError("not inside a running job")
    worker = runner.worker
    queue = worker._queue
    value = to_json_form(progress)
    now = queue.clock.now()
    if await queue.storage.set_progress(job.id, job.token, value, now=now) and queue.events.active:
        job = msgspec.structs.replace(job, progress=value)
        queue.events.publish(JobProgress(at=now, job=job))


class Worker:
    """A pool of runners for one queue; see :meth:`Queue.worker`."""

    def __init__(
        self,
        queue: Queue,
        *,
        concurrency: int,
        queues: Sequence[str] | None,
        lease: float,
        drain_timeout: float,
        name: str | None,
        prefetch: int | Literal["auto"] = "auto",
        modes: ModeController | None = None,
        hooks: Sequence[ExecutionHook] = (),
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if prefetch != "auto" and (
            not isinstance(prefetch, int) or isinstance(prefetch, bool) or prefetch < 0
        ):
            raise ValueError(f"prefetch must be 'auto' or an int >= 0, not {prefetch!r}")
        if not lease > 0:
            raise ValueError("lease must be > 0 seconds")
        if not drain_timeout >= 0:
            raise ValueError("drain_timeout must be >= 0 seconds")
        self._queue = queue
        self._modes = modes
        self.hooks: tuple[ExecutionHook, ...] = (*queue.hooks, *hooks)
        """The execution hooks around each run: the queue's, then the pool's own (the
        OpenTelemetry hook goes outside them when an SDK is configured)."""
        self._telemetry = queue.telemetry
        self._wrap: tuple[ExecutionHook, ...] = self.hooks
        """The hooks for the jobs of the latest claim: decided once per claim, so a run
        with no hook and no SDK spends one attribute read on them."""
        self.concurrency = concurrency
        self.prefetch = prefetch
        cap = MEMORY_CAP_PER_RUNNER if type(queue.storage) is MemoryStorage else CAP_PER_RUNNER
        self._adaptive = (
            AdaptivePrefetch(concurrency, cap_per_runner=cap) if prefetch == "auto" else None
        )
        # the claim whose jobs wait in the buffer (one claim at a time fills it), and
        # when it returned: the hold guard hands them back if they wait too long
        self._claims = 0
        self._claimed_at = 0.0
        self._held_wanted: anyio.Event | None = None
        self.queues = tuple(queues) if queues is not None else None
        self.lease = lease
        self.drain_timeout = drain_timeout
        self.name = name or f"worker-{os.getpid()}-{secrets.token_hex(3)}"
        self._runners = [_Runner(self) for _ in range(concurrency)]
        self._buffer: deque[Job] = deque()
        self._idle: deque[_Runner] = deque()
        self._waking = 0
        self._busy = 0
        self._claiming = False
        self._stopping = False
        self._stop: anyio.Event | None = None
        self._drained: anyio.Event | None = None
        self._listener: WorkListener | None = None
        self._stack: AsyncExitStack | None = None
        self._maintenance: anyio.CancelScope | None = None
        # outcomes of finished jobs not yet stored: flushed in batches, inline by a
        # runner about to claim, or by the flusher within one turn of the event loop
        self._outcomes: list[Outcome] = []
        self._flush_wanted: anyio.Event | None = None
        self._flush_armed = False  # the flusher was woken and has not run yet
        self._storage_failures = 0
        # the starts of running jobs wait in their runners (``_Runner.started``); these
        # are starts that failed to store while their job ended: its outcome takes them
        self._starts: dict[str, tuple[int, float]] = {}
        self._starts_wanted: anyio.Event | None = None
        self._start_flush_armed = False
        self._resumed: anyio.Event | None = None
        self._started_at = 0.0
        self._counts = dict.fromkeys(
            ("completed", "failed", "retried", "cancelled", "lost", "deferred", "rescued"), 0
        )

    # -- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> Worker:
        queue = self._queue
        await queue.open()
        self._stop = anyio.Event()
        self._drained = anyio.Event()
        self._flush_wanted = anyio.Event()
        self._starts_wanted = anyio.Event()
        self._held_wanted = anyio.Event()
        self._started_at = queue.clock.now()
        await self._announce()
        async with AsyncExitStack() as stack:
            stack.push_async_callback(self._withdraw)
            self._listener = await stack.enter_async_context(queue.storage.listen())
            tg = await stack.enter_async_context(anyio.create_task_group())
            await tg.start(self._background)
            for runner in self._runners:
                tg.start_soon(self._run, runner, name=f"{self.name} runner")
            queue._attach(self)
            self._stack = stack.pop_all()
        return self

    @property
    def tasks(self) -> tuple[str, ...]:
        """The task names this pool claims: the ones registered on its queue."""
        return tuple(self._queue.tasks)

    def _info(self) -> WorkerInfo:
        now = self._queue.clock.now()
        return WorkerInfo(
            name=self.name,
            host=_HOST,
            pid=os.getpid(),
            tasks=self.tasks,
            queues=self.queues,
            concurrency=self.concurrency,
            started_at=self._started_at,
            seen_at=now,
            expires_at=now + self.lease,
        )

    async def _announce(self) -> None:
        """Tell the storage this pool is alive and what it serves (renewed by heartbeat)."""
        await self._queue.storage.register_worker(self._info())

    async def _withdraw(self) -> None:
        with anyio.CancelScope(shield=True):
            try:
                await self._queue.storage.unregister_worker(self.name)
            except Exception:  # it expires by itself
                _log.warning("could not unregister worker %s", self.name, exc_info=True)

    @property
    def paused(self) -> bool:
        return self._resumed is not None

    def pause(self) -> None:
        """Stop claiming new jobs (read-only and maintenance modes); running jobs go on."""
        if self._resumed is None:
            self._resumed = anyio.Event()

    def resume(self) -> None:
        """Claim again after :meth:`pause`."""
        resumed, self._resumed = self._resumed, None
        if resumed is not None:
            resumed.set()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._stack is not None
        try:
            with anyio.CancelScope(shield=exc_type is not None):
                await self.drain(0.0 if exc_type is not None else self.drain_timeout)
        finally:
            self._queue._detach(self)
        # every runner has returned: close the task group as if the body had succeeded,
        # so the body's own exception propagates as it is, not wrapped in a group
        await self._stack.__aexit__(None, None, None)
        return None

    async def drain(self, timeout: float) -> None:
        """Stop claiming; let running jobs finish for ``timeout`` s, then hand them back."""
        assert self._stop is not None and self._drained is not None
        self._stopping = True
        self._stop.set()
        while self._idle:
            self._wake_one()
        if self._buffer:  # claimed but never started: straight back to pending
            jobs = list(self._buffer)
            self._buffer.clear()
            await self._release(jobs)
        if self._busy:
            with self._queue.clock.cancel_after(timeout):
                await self._drained.wait()
        for runner in self._runners:
            if runner.job is not None and runner.scope is not None:
                runner.reason = "drain"
                runner.scope.cancel()
        if self._busy:
            await self._drained.wait()
        self.resume()
        for attempt in range(3):
            if await self._flush() and await self._store_starts():
                break
            await self._queue.clock.sleep(0.05 * 2**attempt)
        if self._maintenance is not None:
            self._maintenance.cancel()

    def stats(self) -> WorkerStats:
        return WorkerStats(
            name=self.name,
            concurrency=self.concurrency,
            running=self._busy,
            paused=self.paused or not self._mode_allows(),
            **self._counts,
        )

    def _interrupt(self, job_id: str, reason: str) -> bool:
        """Cancel the job where it runs in this pool; False if it does not run here."""
        for runner in self._runners:
            job = runner.job
            if job is not None and job.id == job_id and runner.scope is not None:
                runner.reason = reason
                runner.scope.cancel()
                return True
        for job in self._buffer:
            if job.id == job_id:
                self._buffer.remove(job)
                return True
        return False

    # -- runners ---------------------------------------------------------------------

    def _wake_one(self) -> None:
        runner = self._idle.popleft()
        self._waking += 1
        assert runner.wake is not None
        runner.wake.set()

    async def _park(self, runner: _Runner) -> None:
        runner.wake = anyio.Event()
        self._idle.append(runner)
        try:
            await runner.wake.wait()
        finally:
            if runner in self._idle:  # cancelled while parked
                self._idle.remove(runner)
            else:
                self._waking -= 1

    async def _run(self, runner: _Runner) -> None:
        _current.set(runner)
        while True:
            with anyio.CancelScope() as scope:
                runner.scope = scope
                await self._serve(runner)
                return
            await self._interrupted(runner)

    async def _serve(self, runner: _Runner) -> None:
        buffer = self._buffer
        while True:
            if buffer:
                await self._execute(runner)
            elif self._stopping:
                return
            elif self._claiming:
                await self._park(runner)
            else:
                await self._claim()
                await anyio.lowlevel.checkpoint()

    async def _claim(self) -> None:
        queue = self._queue
        storage = queue.storage
        listener = self._listener
        assert listener is not None
        self._claiming = True
        try:
            while not self._stopping:
                if self._resumed is not None or not self._mode_allows():
                    await self._wait_resumed()
                    continue
                listener.clear()
                adaptive = self._adaptive
                extra = adaptive.extra if adaptive is not None else self.prefetch
                assert isinstance(extra, int)
                free = self.concurrency + extra - self._busy - len(self._buffer)
                now = queue._now()
                try:
                    jobs = await storage.claim(
                        self.queues,
                        limit=free,
                        now=now,
                        lease=self.lease,
                        worker=self.name,
                        tasks=tuple(queue.tasks),
                        max_running=queue.tenant_limits or None,
                    )
                except Exception:
                    await self._storage_failed("claiming jobs")
                    continue
                self._storage_failures = 0
                if jobs and self._stopping:  # drain began while we claimed
                    await self._release(jobs)
                    return
                if jobs:
                    telemetry = self._telemetry
                    self._wrap = (telemetry.hook, *self.hooks) if telemetry.active else self.hooks
                    self._buffer.extend(jobs)
                    self._claims += 1
                    if adaptive is not None:
                        self._claimed_at = queue._now()
                        if len(jobs) > len(self._idle) + 1:
                            self._hold()  # more than the idle runners take at once
                    return
                await self._wait_for_work(listener)
        finally:
            self._claiming = False
            if self._idle and not self._waking:
                self._wake_one()  # hand the claim duty (or the new jobs) on

    def _hold(self) -> None:
        wanted = self._held_wanted
        assert wanted is not None
        wanted.set()

    async def _hold_guard(self) -> None:
        """Hand back jobs of an adaptive claim still waiting :data:`HOLD_LIMIT` after it.

        They count as running in the storage, so no idle runner of another pool or
        process could take them; the estimate that sized the claim was wrong (jobs got
        slower), and the extra claim shrinks.
        """
        clock = self._queue.clock
        adaptive = self._adaptive
        assert adaptive is not None
        while True:
            assert self._held_wanted is not None
            await self._held_wanted.wait()
            self._held_wanted = anyio.Event()
            claim = self._claims
            await clock.sleep(max(0.0, self._claimed_at + HOLD_LIMIT - clock.now()))
            if claim != self._claims or not self._buffer or self._stopping:
                continue  # started in time (or a newer claim, which set the event again)
            jobs = list(self._buffer)
            self._buffer.clear()
            adaptive.held_too_long()
            _log.debug("handing back %d prefetched jobs that waited too long", len(jobs))
            await self._release(jobs)

    def _mode_allows(self) -> bool:
        return self._modes is None or self._modes.allows(Operation.EXECUTE)

    async def _wait_resumed(self) -> None:
        """Wait for :meth:`resume`, or (a mode that stops execution) look again in 0.25 s."""
        resumed, stop = self._resumed, self._stop
        assert stop is not None
        if resumed is not None:
            await _first(stop.wait, resumed.wait)
        else:
            await _first(stop.wait, partial(self._queue.clock.sleep, _MODE_RECHECK))

    async def _wait_for_work(self, listener: WorkListener) -> None:
        queue = self._queue
        clock = queue.clock
        next_at = await queue.storage.next_run_at(self.queues, tuple(queue.tasks))
        delay = None if next_at is None else next_at - clock.now()
        if delay is not None and delay <= 0:
            # due work that another claimer took between our claim and this look:
            # claim again, after a short real pause so a confused backend cannot spin us
            await anyio.sleep(0.001)
            return
        stop = self._stop
        assert stop is not None
        if delay is None:
            await _first(listener.wait, stop.wait)
        else:
            await _first(listener.wait, stop.wait, partial(clock.sleep, delay))

    async def _execute(self, runner: _Runner) -> None:
        """Run jobs from the buffer one after another until it is empty.

        One coroutine for a run of jobs, not one per job: a job that never waits costs
        the runner no await but its function's. Each job's outcome joins the others
        waiting to be stored, by the flusher, while the runner that emptied the buffer
        claims the next jobs: a storage that shares transactions between concurrent
        writes (SQLite's group commit) stores the outcomes and the claim in one. The
        time of each job is taken once, before it starts:
        its start (unless hooks or a step's inputs come in between) and, for adaptive
        prefetch, the end of the job before it.
        """
        queue = self._queue
        clock = queue.clock
        now = queue._now  # clock.now, or time.time itself for the system clock
        tasks = queue.tasks
        events = queue.events
        buffer = self._buffer
        adaptive = self._adaptive
        ran = 0
        first = began = now()
        while buffer:
            job = buffer.popleft()
            if buffer:
                if self._idle and not self._waking:
                    self._wake_one()
            elif adaptive is not None:  # the last job of the claim starts now
                adaptive.batch_started(began - self._claimed_at)
            ran += 1
            task = tasks.get(job.task)
            self._busy += 1
            runner.job = job
            run: JobRun | None = None
            entered: list[Any] = _NONE_ENTERED
            try:
                hooks = self._wrap
                if hooks:  # else no record is built and nothing is called
                    run = JobRun(job, self.name)
                    entered = []
                    await enter_hooks(hooks, run, entered)
                try:
                    if task is None:  # unregistered since the claim: leave it to another
                        raise _Deferred(now() + _UNKNOWN_TASK_WAIT)
                    step = job.step
                    if task.plain and step is None:  # decided once per task
                        args, kwargs, breaker = job.args, job.kwargs, None
                        started = began if run is None else now()
                    else:
                        args, kwargs = await self._arguments(task, job)
                        breaker = task.breaker
                        if breaker is not None and not breaker.allow():
                            raise _Deferred(breaker.refused_until())
                        started = now()
                    runner.started = started
                    if not self._start_flush_armed:
                        self._start_flush_armed = True
                        assert self._starts_wanted is not None
                        self._starts_wanted.set()
                    if events.active:
                        events.publish(
                            JobStarted(
                                at=started, job=msgspec.structs.replace(job, started_at=started)
                            )
                        )
                    try:
                        if job.timeout is None:
                            result = await task.fn(*args, **kwargs)
                        else:
                            with clock.cancel_after(job.timeout) as timer:
                                result = await task.fn(*args, **kwargs)
                            if timer.cancelled_caught:
                                raise JobTimeout(f"job {job.id!r} timed out after {job.timeout} s")
                    except Exception as exc:
                        if breaker is not None:
                            breaker.record_failure(exc)
                        if run is not None:
                            run.error = exc
                        raise
                    except BaseException:
                        if breaker is not None:
                            breaker.release()
                        raise
                    if breaker is not None:
                        breaker.record_success(duration=now() - started)
                    if result is not None:
                        result = to_json_form(result)
                    policy = task.retry
                    if (
                        policy is not None
                        and policy.on_result is not None
                        and job.attempts < job.max_attempts
                        and policy.retries_result(result)
                    ):
                        outcome = Outcome(
                            id=job.id,
                            token=job.token,
                            status=_PENDING,
                            result=result,
                            error=f"result {result!r} asks for a retry",
                            run_at=now() + policy.delay(job.attempts),
                        )
                    else:
                        # the start goes with the outcome unless it was stored already
                        started_at, runner.started = runner.started, None
                        outcome = Outcome(
                            id=job.id,
                            token=job.token,
                            status=_COMPLETED,
                            result=result,
                            started_at=started_at,
                        )
                except _Deferred as deferral:
                    outcome = _released(job, run_at=deferral.run_at)
                    self._counts["deferred"] += 1
                except _BadInput as exc:  # retrying cannot change a parent's result
                    outcome = Outcome(id=job.id, token=job.token, status=_FAILED, error=str(exc))
                    if run is not None:
                        run.error = exc
                except Exception as exc:
                    outcome = self._failure(job, task, exc)
                    if run is not None and run.error is None:
                        run.error = exc
                if runner.started is not None:  # ran, its start not stored: goes along
                    outcome = msgspec.structs.replace(outcome, started_at=runner.started)
                    runner.started = None
                runner.job = None
                self._outcomes.append(outcome)  # a list the flusher swaps: not kept
                if run is not None:
                    run.outcome = _outcome_name(outcome)
                    run.run_at = outcome.run_at
                    if entered:
                        await exit_hooks(entered, run, run.error)
            except BaseException as exc:  # cancelled (drain, lost lease, cancel) or a bug
                if entered and run is not None and run.outcome is None:
                    run.outcome = "interrupted"
                    with anyio.CancelScope(shield=True):
                        await exit_hooks(entered, run, exc)
                raise
            finally:
                self._busy -= 1
                if self._stopping and not self._busy:
                    assert self._drained is not None
                    self._drained.set()
            self._want_flush()
            began = now()  # this job's end, the next one's start
        if adaptive is not None and ran:
            adaptive.record((began - first) / ran, ran)

    async def _arguments(self, task: Any, job: Job) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The arguments of a job whose task is not plain (see :attr:`Task.plain`), or
        of a workflow step; raises ``_Deferred`` when the task's rate limit says later."""
        step = job.step
        if step is not None and step.inputs:
            args, kwargs = await self._step_arguments(task, job)
        elif task.signature.convert_at_run:
            args, kwargs = task.signature.call_arguments(job.args, job.kwargs)
        else:
            args, kwargs = job.args, job.kwargs
        if task.limiter is not None:
            wait = self._rate_limited(task, args, kwargs)
            if wait is not None:
                raise _Deferred(wait)
        return args, kwargs

    async def _step_arguments(self, task: Any, job: Job) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """A workflow step's arguments with its parents' results filled in, checked
        against the task's signature now that they are known."""
        assert job.step is not None
        storage = self._queue.storage
        kwargs = dict(job.kwargs)
        sources: dict[str, str] = {}
        for param, parent_id in job.step.inputs.items():
            parent = await storage.get(parent_id)
            ok = parent is not None and parent.status is JobStatus.COMPLETED
            kwargs[param] = parent.result if ok and parent is not None else None
            name = parent.step.name if parent is not None and parent.step else parent_id
            sources[param] = name
        try:
            args, kwargs = task.signature.check(job.args, kwargs)
            return task.signature.call_arguments(args, kwargs)  # type: ignore[no-any-return]
        except ArgumentError as exc:
            source = sources.get(exc.argument or "")
            where = f" (the result of step {source!r})" if source else ""
            raise _BadInput(f"step input does not fit{where}: {exc}") from None

    def _rate_limited(self, task: Any, args: Any, kwargs: Any) -> float | None:
        """None if the task's rate limit lets this job start now, else when it may."""
        limiter = task.limiter
        key = task.name if task.limit_key is None else str(task.limit_key(*args, **kwargs))
        if limiter.hit(key):
            return None
        return float(self._queue.clock.now() + max(limiter.retry_after(key), 0.001))

    def _failure(self, job: Job, task: Any, exc: Exception) -> Outcome:
        error = f"{type(exc).__name__}: {exc}"
        trace = "".join(tb_module.format_exception(exc))
        policy = task.retry if task is not None else None
        if policy is None and job.max_attempts > 1:  # attempts given by a template or the API
            policy = _DEFAULT_RETRY
        if policy is not None and job.attempts < job.max_attempts and policy.retries(exc):
            run_at = self._queue.clock.now() + policy.delay(job.attempts)
            return Outcome(
                id=job.id,
                token=job.token,
                status=_PENDING,
                error=error,
                traceback=trace,
                run_at=run_at,
            )
        return Outcome(id=job.id, token=job.token, status=_FAILED, error=error, traceback=trace)

    async def _interrupted(self, runner: _Runner) -> None:
        """Settle the job whose runner scope was cancelled, by the reason recorded."""
        job, reason, started = runner.job, runner.reason, runner.started
        runner.job = runner.reason = runner.started = None
        if job is None:  # the job ended just before the cancel landed
            return
        with anyio.CancelScope(shield=True):
            if reason == "drain":
                await self._release([job], started_at=started)
            elif reason == "lost":
                self._counts["lost"] += 1
            else:  # cancelled through the queue, which already stored and announced it
                self._counts["cancelled"] += 1

    async def _release(self, jobs: list[Job], *, started_at: float | None = None) -> None:
        """Hand claimed jobs back as pending without counting the attempt (with the
        start of the run a drain interrupted, if it was not stored)."""
        try:
            await self._settle([_released(job, started_at=started_at) for job in jobs])
        except Exception:  # their leases run out and they are rescued instead
            _log.exception("handing back %d jobs failed", len(jobs))

    def _want_flush(self) -> None:
        wanted = self._flush_wanted
        assert wanted is not None
        if not self._flush_armed:
            self._flush_armed = True
            wanted.set()

    async def _flush(self) -> bool:
        """Store the outcomes waiting; on a storage error keep them for the flusher."""
        if not self._outcomes:
            return True
        batch, self._outcomes = self._outcomes, []
        try:
            await self._settle(batch)
        except Exception:
            self._outcomes[:0] = batch  # their leases are still renewed meanwhile
            self._want_flush()
            _log.exception("storing %d job outcomes failed; retrying", len(batch))
            return False
        return True

    async def _storage_failed(self, doing: str) -> None:
        """Log a storage error and back off (50 ms doubling to 5 s) before trying again.

        A worker outlives a storage that is briefly unavailable (a locked SQLite file,
        a PostgreSQL failover) instead of tearing down the pool.
        """
        self._storage_failures += 1
        _log.exception("storage failed while %s (failure %d)", doing, self._storage_failures)
        await self._queue.clock.sleep(min(0.05 * 2 ** (self._storage_failures - 1), 5.0))

    async def _settle(self, outcomes: Sequence[Outcome]) -> None:
        """Store outcomes in one call, then announce what storage accepted."""
        queue = self._queue
        now = queue._now()
        starts = self._starts
        if starts:  # starts that failed to store alone go with their outcome
            merged = []
            for outcome in outcomes:
                start = starts.pop(outcome.id, None)
                if start is not None and start[0] == outcome.token:
                    outcome = msgspec.structs.replace(outcome, started_at=start[1])
                merged.append(outcome)
            outcomes = merged
        stored = await queue.storage.finish(outcomes, now=now)
        events = queue.events
        counts = self._counts
        waiters = queue._waiters
        completed = 0
        for outcome, job in zip(outcomes, stored, strict=True):
            if job is None:  # fenced off: cancelled or re-claimed meanwhile
                continue
            status = job.status
            if status is _COMPLETED:
                completed += 1
                if events.active:
                    events.publish(JobCompleted(at=now, job=job))
            elif status is _PENDING:
                if not outcome.released:
                    counts["retried"] += 1
                    if events.active:
                        events.publish(JobRetrying(at=now, job=job))
                elif outcome.run_at is not None and events.active:  # breaker or rate limit
                    events.publish(JobDeferred(at=now, job=job))
                continue
            elif status is _FAILED:
                counts["failed"] += 1
                if events.active:
                    events.publish(JobFailed(at=now, job=job))
            if waiters:
                queue._job_final(job)
        counts["completed"] += completed

    # -- leases ----------------------------------------------------------------------

    async def _background(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        with anyio.CancelScope() as scope:
            self._maintenance = scope
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._maintain)
                tg.start_soon(self._flusher)
                tg.start_soon(self._start_flusher)
                if self._adaptive is not None:
                    tg.start_soon(self._hold_guard)
                tg.start_soon(self._queue.periodics.run, self.queues, name=f"{self.name} periodic")
                task_status.started()

    async def _start_flusher(self) -> None:
        """Store the starts of jobs still running ``_START_DELAY`` after they began."""
        clock = self._queue.clock
        while True:
            assert self._starts_wanted is not None
            await self._starts_wanted.wait()
            self._starts_wanted = anyio.Event()
            self._start_flush_armed = False
            await clock.sleep(_START_DELAY)
            if not await self._store_starts():
                await clock.sleep(0.05)
                self._start_flush_armed = True
                self._starts_wanted.set()

    async def _store_starts(self) -> bool:
        """Store the starts of the jobs running now (and of any that failed to store)."""
        held = [
            (runner, runner.job, runner.started)
            for runner in self._runners
            if runner.started is not None and runner.job is not None
        ]
        leftover, self._starts = self._starts, {}
        if not held and not leftover:
            return True
        marks = [(job.id, job.token, at) for _, job, at in held]
        marks += [(job_id, token, at) for job_id, (token, at) in leftover.items()]
        for runner, _, _ in held:
            runner.started = None
        try:
            await self._queue.storage.mark_started(marks)
        except Exception:
            for runner, job, at in held:
                if runner.job is job and runner.started is None:
                    runner.started = at  # still running: stored next time or at its end
                else:  # ended meanwhile: its outcome, if not stored yet, takes it
                    self._starts.setdefault(job.id, (job.token, at))
            for job_id, (token, at) in leftover.items():
                self._starts.setdefault(job_id, (token, at))
            _log.exception("storing the starts of %d jobs failed; retrying", len(marks))
            return False
        return True

    async def _flusher(self) -> None:
        """Store outcomes that runners left while they went on to the next job."""
        failures = 0
        while True:
            assert self._flush_wanted is not None
            await self._flush_wanted.wait()
            self._flush_wanted = anyio.Event()
            self._flush_armed = False
            if await self._flush():
                failures = 0
            else:
                failures += 1
                await self._queue.clock.sleep(min(0.05 * 2 ** (failures - 1), 5.0))

    async def _maintain(self) -> None:
        """Renew leases of claimed jobs and rescue jobs whose lease expired elsewhere."""
        clock = self._queue.clock
        while True:
            await clock.sleep(self.lease / 3)
            try:
                await self._heartbeat()
                await self._announce()
                await self._rescue()
            except Exception:
                _log.exception("renewing leases failed; trying again in %.1f s", self.lease / 3)

    async def _heartbeat(self) -> None:
        queue = self._queue
        held = [runner.job for runner in self._runners if runner.job is not None]
        held += self._buffer
        leases = [(job.id, job.token) for job in held]
        leases += [(outcome.id, outcome.token) for outcome in self._outcomes]
        if not leases:
            return
        kept = await queue.storage.extend(leases, now=queue.clock.now(), lease=self.lease)
        for (job_id, _), ok in zip(leases, kept, strict=True):
            if not ok:
                self._interrupt(job_id, "lost")

    async def _rescue(self) -> None:
        queue = self._queue
        now = queue.clock.now()
        rescued = await queue.storage.rescue(now=now)
        self._counts["rescued"] += len(rescued)
        for job in rescued:
            if job.status.is_final:
                queue._job_final(job)
            if queue.events.active:
                queue.events.publish(JobRescued(at=now, job=job))


_HOST = platform.node()


async def _first(*waits: Callable[[], Awaitable[Any]]) -> None:
    """Return as soon as one of ``waits`` returns; the others are cancelled."""
    async with anyio.create_task_group() as tg:

        async def race(wait: Callable[[], Awaitable[Any]]) -> None:
            await wait()
            tg.cancel_scope.cancel()

        for wait in waits:
            tg.start_soon(race, wait)


def _outcome_name(outcome: Outcome) -> RunOutcome:
    status = outcome.status
    if status is _COMPLETED:
        return "completed"
    if status is _FAILED:
        return "failed"
    if status is _PENDING:
        return "deferred" if outcome.released else "retry"
    return "interrupted"


def _released(job: Job, *, run_at: float | None = None, started_at: float | None = None) -> Outcome:
    """Back to pending without counting the attempt (drain, breaker, rate limit)."""
    return Outcome(
        id=job.id,
        token=job.token,
        status=_PENDING,
        released=True,
        run_at=run_at,
        started_at=started_at,
    )


class _BadInput(Exception):
    """A workflow step's input from a parent does not fit its parameter."""


class _Deferred(Exception):
    def __init__(self, run_at: float) -> None:
        self.run_at = run_at
