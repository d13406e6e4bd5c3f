"""The queue: task registry, enqueue, and the operations on jobs.

A ``Queue`` holds no job state of its own; storage is the single source of truth, so
the in-memory, SQLite and PostgreSQL backends behave alike. It keeps only what is local
to this process: the registered tasks, its workers, and events to wake local waiters.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, overload

import anyio

from ._breaker import BreakerRegistry, CircuitBreaker
from ._clock import Clock, SystemClock
from ._errors import JobNotFound, JobTimeout, OptionError, UnknownTask
from ._events import EventBus, JobCancelled, JobEnqueued
from ._ids import IdFactory
from ._memory import MemoryStorage
from ._models import Job, JobStatus, Page, Priority, QueueStats
from ._ratelimit import RateLimiter
from ._retry import Retry
from ._task import Submission, Task
from .abc import Storage

__all__ = ["Queue"]

P = ParamSpec("P")
R = TypeVar("R")

_DEFAULT_KEY_TTL = 24 * 3600.0
_MAX_KEY_LENGTH = 256
_MAX_ATTEMPTS = 1_000_000  # a bound every storage can hold (SQLite integers are 64-bit)


def _seconds(option: str, value: float | None, *, positive: bool = False) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise OptionError(option, f"expected seconds as a number, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise OptionError(option, f"must be a finite number {'>' if positive else '>='} 0")
    return float(value)


def _priority(value: Priority | str | None, default: Priority) -> Priority:
    if value is None:
        return default
    try:
        return Priority(value)
    except ValueError:
        choices = ", ".join(p.value for p in Priority)
        raise OptionError("priority", f"{value!r} is not one of {choices}") from None


class Queue:
    """A job queue over a storage backend (memory when none is given).

    ``key_ttl`` is how long an idempotency key is remembered, in seconds (a day by
    default; ``None`` remembers keys for as long as their job is stored).
    ``async with Queue(...)`` opens and closes the storage; without it, the storage is
    opened on first use. ``tenant_limits`` caps how many jobs of each tenant run at once
    (see :attr:`tenant_limits`).
    """

    def __init__(
        self,
        storage: Storage | None = None,
        *,
        clock: Clock | None = None,
        events: EventBus | None = None,
        key_ttl: float | None = _DEFAULT_KEY_TTL,
        breakers: BreakerRegistry | None = None,
        tenant_limits: Mapping[str, int] | None = None,
    ) -> None:
        self.storage: Storage = storage if storage is not None else MemoryStorage()
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.events = events if events is not None else EventBus()
        self.key_ttl = key_ttl
        self.tenant_limits: dict[str, int] = dict(tenant_limits or {})
        """Most jobs of a tenant that may run at once, across every worker on this
        storage; a job over its tenant's cap is deferred (not an attempt) and tried
        again after 0.5 s. Change it while running by assigning a new dict."""
        self.breakers = (
            breakers
            if breakers is not None
            else BreakerRegistry(clock=self.clock, events=self.events)
        )
        self.tasks: dict[str, Task[Any, Any]] = {}
        self._new_id = IdFactory()
        self._opened = False
        self._owns_bus = False
        self._waiters: dict[str, anyio.Event] = {}
        self._workers: list[Any] = []

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        if not self._opened:
            await self.storage.open()
            self._opened = True

    async def aclose(self) -> None:
        if self._opened:
            self._opened = False
            await self.storage.aclose()

    async def __aenter__(self) -> Queue:
        """Open the storage, and run the event bus's async subscribers if nobody does."""
        await self.open()
        if self.events._tg is None:
            await self.events.__aenter__()
            self._owns_bus = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._owns_bus:  # its task group must close in this scope, not a nested one
                self._owns_bus = False
                await self.events.__aexit__(None, None, None)
        finally:
            with anyio.CancelScope(shield=True):
                await self.aclose()

    # -- tasks -----------------------------------------------------------------------

    @overload
    def task(self, fn: Callable[P, Awaitable[R]], /) -> Task[P, R]: ...

    @overload
    def task(
        self,
        /,
        *,
        name: str | None = None,
        queue: str = "default",
        priority: Priority | str = Priority.NORMAL,
        timeout: float | None = None,
        retry: Retry | None = None,
        breaker: str | CircuitBreaker | None = None,
        rate_limit: str | RateLimiter | None = None,
        rate_limit_key: Callable[..., str] | None = None,
    ) -> Callable[[Callable[P, Awaitable[R]]], Task[P, R]]: ...

    def task(
        self,
        fn: Callable[P, Awaitable[R]] | None = None,
        /,
        *,
        name: str | None = None,
        queue: str = "default",
        priority: Priority | str = Priority.NORMAL,
        timeout: float | None = None,
        retry: Retry | None = None,
        breaker: str | CircuitBreaker | None = None,
        rate_limit: str | RateLimiter | None = None,
        rate_limit_key: Callable[..., str] | None = None,
    ) -> Task[P, R] | Callable[[Callable[P, Awaitable[R]]], Task[P, R]]:
        """Register an async function as a task, bare (``@queue.task``) or with options.

        ``breaker`` names a circuit breaker of :attr:`breakers` (or is one): while it is
        open, jobs of the task are deferred until it half-opens, neither failed nor
        counted as attempts, and the task's failures count against it.
        ``rate_limit`` (``"10/second"``, or a :class:`RateLimiter`) caps how often jobs
        of the task start, in this process; ``rate_limit_key(*args, **kwargs)`` makes
        the limit per key (per customer, say). Jobs over the limit are deferred until it
        lets them through, not failed.
        """

        def register(fn: Callable[P, Awaitable[R]]) -> Task[P, R]:
            if not callable(fn):
                raise TypeError("a task must be an async function")
            task_name = name or getattr(fn, "__name__", None)
            if not task_name:
                raise TypeError("cannot name this task: pass name=...")
            if task_name in self.tasks:
                raise ValueError(f"a task named {task_name!r} is already registered")
            task = Task(
                self,
                fn,
                name=task_name,
                queue=queue,
                priority=_priority(priority, Priority.NORMAL),
                timeout=_seconds("timeout", timeout, positive=True),
                retry=retry,
                breaker=self.breakers.get(breaker) if isinstance(breaker, str) else breaker,
                limiter=RateLimiter(rate_limit, clock=self.clock)
                if isinstance(rate_limit, str)
                else rate_limit,
                limit_key=rate_limit_key,
            )
            self.tasks[task_name] = task
            return task

        return register(fn) if fn is not None else register

    def _task(self, name: str) -> Task[Any, Any]:
        task = self.tasks.get(name)
        if task is None:
            raise UnknownTask(name, tuple(self.tasks))
        return task

    # -- enqueue ---------------------------------------------------------------------

    def _build(
        self,
        task: Task[Any, Any],
        args: Sequence[Any],
        kwargs: dict[str, Any],
        now: float,
        *,
        queue: str | None = None,
        priority: Priority | str | None = None,
        delay: float | None = None,
        run_at: float | None = None,
        key: str | None = None,
        tenant: str | None = None,
        timeout: float | None = None,
        max_attempts: int | None = None,
    ) -> Job:
        stored_args, stored_kwargs = task.signature.check(args, kwargs)
        when = now
        if delay is not None:
            if run_at is not None:
                raise OptionError("delay", "give delay or run_at, not both")
            when = now + (_seconds("delay", delay) or 0.0)
        elif run_at is not None:
            if isinstance(run_at, bool) or not isinstance(run_at, int | float):
                raise OptionError("run_at", "expected a time in seconds since the epoch")
            if not math.isfinite(run_at):
                raise OptionError("run_at", "must be finite")
            when = max(float(run_at), now)
        if max_attempts is not None and (
            isinstance(max_attempts, bool)
            or not isinstance(max_attempts, int)
            or not 1 <= max_attempts <= _MAX_ATTEMPTS
        ):
            raise OptionError("max_attempts", f"must be a whole number from 1 to {_MAX_ATTEMPTS:,}")
        if key is not None and (not isinstance(key, str) or not 0 < len(key) <= _MAX_KEY_LENGTH):
            raise OptionError("key", f"must be a string of 1 to {_MAX_KEY_LENGTH} characters")
        if queue is not None and (not isinstance(queue, str) or not queue):
            raise OptionError("queue", "must be a non-empty string")
        return Job(
            id=self._new_id(now),
            task=task.name,
            queue=queue or task.queue,
            priority=_priority(priority, task.priority),
            args=stored_args,
            kwargs=stored_kwargs,
            max_attempts=max_attempts or task.max_attempts,
            key=key,
            tenant=tenant,
            timeout=task.timeout
            if timeout is None
            else _seconds("timeout", timeout, positive=True),
            created_at=now,
            run_at=when,
        )

    async def _store(self, jobs: list[Job], now: float) -> list[Job]:
        if not self._opened:
            await self.open()
        stored = await self.storage.enqueue(jobs, now=now, key_ttl=self.key_ttl)
        events = self.events
        if events.active:
            for new, job in zip(jobs, stored, strict=True):
                if new.id == job.id:
                    events.publish(JobEnqueued(at=now, job=job))
        return stored

    async def _enqueue_call(
        self,
        task: Task[Any, Any],
        args: Sequence[Any],
        kwargs: dict[str, Any],
        **options: Any,
    ) -> Job:
        now = self.clock.now()
        if options:
            job = self._build(task, args, kwargs, now, **options)
        else:  # the common case, kept lean: the task's defaults, nothing to check
            stored_args, stored_kwargs = task.signature.check(args, kwargs)
            job = Job(
                id=self._new_id(now),
                task=task.name,
                queue=task.queue,
                priority=task.priority,
                args=stored_args,
                kwargs=stored_kwargs,
                max_attempts=task.max_attempts,
                timeout=task.timeout,
                created_at=now,
                run_at=now,
            )
        if not self._opened:
            await self.open()
        stored = await self.storage.enqueue((job,), now=now, key_ttl=self.key_ttl)
        if self.events.active and stored[0].id == job.id:  # not a key's earlier job
            self.events.publish(JobEnqueued(at=now, job=stored[0]))
        return stored[0]

    async def enqueue(
        self,
        task: str | Task[Any, Any],
        *,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        queue: str | None = None,
        priority: Priority | str | None = None,
        delay: float | None = None,
        run_at: float | None = None,
        key: str | None = None,
        tenant: str | None = None,
        timeout: float | None = None,
        max_attempts: int | None = None,
    ) -> Job:
        """Enqueue a job by task name (as the HTTP API does) or by task object.

        Returns the stored job; when ``key`` was seen within ``key_ttl``, the job that
        key first created (its id differs from a new one's).
        """
        submission = Submission(
            task=task if isinstance(task, str) else task.name,
            args=tuple(args),
            kwargs=kwargs or {},
            queue=queue,
            priority=priority,  # type: ignore[arg-type]  # checked in _build
            delay=delay,
            run_at=run_at,
            key=key,
            tenant=tenant,
            timeout=timeout,
            max_attempts=max_attempts,
        )
        return (await self.enqueue_many((submission,)))[0]

    async def enqueue_many(self, submissions: Iterable[Submission]) -> list[Job]:
        """Enqueue many jobs in one storage round trip; all are checked before any is
        stored, so one bad submission stores nothing."""
        now = self.clock.now()
        jobs = [
            self._build(
                self._task(s.task),
                s.args,
                s.kwargs,
                now,
                queue=s.queue,
                priority=s.priority,
                delay=s.delay,
                run_at=s.run_at,
                key=s.key,
                tenant=s.tenant,
                timeout=s.timeout,
                max_attempts=s.max_attempts,
            )
            for s in submissions
        ]
        return await self._store(jobs, now) if jobs else []

    # -- operations on jobs ------------------------------------------------------------

    async def get(self, job_id: str) -> Job:
        """The job with this id; raises :class:`JobNotFound`."""
        if not self._opened:
            await self.open()
        job = await self.storage.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    async def cancel(self, job_id: str) -> Job:
        """Cancel a pending job, or a running one (its task is cancelled where it runs)."""
        if not self._opened:
            await self.open()
        now = self.clock.now()
        before = await self.storage.get(job_id)
        job = await self.storage.cancel(job_id, now=now)
        if before is not None and before.status is JobStatus.RUNNING:
            for worker in self._workers:
                worker._interrupt(job_id, "cancelled")
        if before is None or before.status is not JobStatus.CANCELLED:
            self._finished(job)
            if self.events.active:
                self.events.publish(JobCancelled(at=now, job=job))
        return job

    async def retry(self, job_id: str) -> Job:
        """Run a failed or cancelled job again, with its attempts counted afresh."""
        if not self._opened:
            await self.open()
        now = self.clock.now()
        job = await self.storage.retry(job_id, now=now)
        if self.events.active:
            self.events.publish(JobEnqueued(at=now, job=job))
        return job

    async def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Wait until the job is completed, failed or cancelled, and return it.

        Raises :class:`JobTimeout` after ``timeout`` seconds on the queue's clock.
        Jobs finished in this process wake the waiter at once; jobs finished elsewhere
        (another process on the same database) are noticed by re-reading, backing off
        from 10 ms to 1 s.
        """
        deadline = None if timeout is None else self.clock.now() + timeout
        poll = 0.01
        while True:
            job = await self.get(job_id)
            if job.status.is_final:
                return job
            remaining = math.inf if deadline is None else deadline - self.clock.now()
            if remaining <= 0:
                raise JobTimeout(f"job {job_id!r} is still {job.status} after {timeout} s")
            event = self._waiters.get(job_id)
            if event is None:
                event = self._waiters[job_id] = anyio.Event()
            with self.clock.cancel_after(min(poll, remaining)):
                await event.wait()
            poll = min(poll * 2, 1.0)

    def _finished(self, job: Job) -> None:
        """Wake local waiters of a job that reached a final status."""
        if self._waiters:
            event = self._waiters.pop(job.id, None)
            if event is not None:
                event.set()

    async def list_jobs(
        self,
        *,
        status: JobStatus | str | None = None,
        queue: str | None = None,
        task: str | None = None,
        tenant: str | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page:
        """Jobs newest first, filtered; pass the page's ``next_cursor`` for the next."""
        if not self._opened:
            await self.open()
        if not 1 <= limit <= 1000:
            raise OptionError("limit", "must be between 1 and 1000")
        try:
            wanted = None if status is None else JobStatus(status)
        except ValueError:
            raise OptionError("status", f"{status!r} is not a job status") from None
        return await self.storage.list(
            status=wanted, queue=queue, task=task, tenant=tenant, cursor=cursor, limit=limit
        )

    async def dead_letters(
        self, *, queue: str | None = None, cursor: str | None = None, limit: int = 100
    ) -> Page:
        """Failed jobs (attempts used up), newest first, each with its error and traceback."""
        return await self.list_jobs(
            status=JobStatus.FAILED, queue=queue, cursor=cursor, limit=limit
        )

    async def stats(self) -> dict[str, QueueStats]:
        """Counts of jobs by status, per named queue."""
        if not self._opened:
            await self.open()
        counts = await self.storage.counts()
        return {
            name: QueueStats(queue=name, **{status.value: n for status, n in by_status.items()})
            for name, by_status in sorted(counts.items())
        }

    # -- workers ---------------------------------------------------------------------

    def worker(
        self,
        *,
        concurrency: int = 10,
        queues: Sequence[str] | None = None,
        lease: float = 30.0,
        drain_timeout: float = 30.0,
        prefetch: int = 0,
        name: str | None = None,
    ) -> Worker:
        """A pool running this queue's jobs; ``async with`` starts it and drains it.

        ``lease`` is how long a claimed job stays reserved without a heartbeat; it is
        renewed every ``lease / 3`` while the job runs. On exit the pool stops claiming,
        lets running jobs finish for up to ``drain_timeout`` seconds, then cancels them
        and hands them back as pending.

        ``prefetch`` claims up to that many jobs beyond ``concurrency`` so the next ones
        are at hand when a runner frees up: worth it for short jobs on a storage with
        round trips (SQLite, PostgreSQL). Prefetched jobs count as running (their lease
        is renewed) though they wait, so keep it 0 for long jobs, or one pool would
        hoard work that another could start.
        """
        return Worker(
            self,
            concurrency=concurrency,
            queues=queues,
            lease=lease,
            drain_timeout=drain_timeout,
            prefetch=prefetch,
            name=name,
        )

    def __repr__(self) -> str:
        return f"Queue({self.storage!r}, tasks={sorted(self.tasks)})"


from ._worker import Worker  # noqa: E402  (the worker needs Queue's module loaded)
