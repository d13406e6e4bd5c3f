"""The queue: task registry, enqueue, and the operations on jobs.

A ``Queue`` holds no job state of its own; storage is the single source of truth, so
the in-memory, SQLite and PostgreSQL backends behave alike. It keeps only what is local
to this process: the registered tasks, its workers, and events to wake local waiters.
"""

from __future__ import annotations

import base64
import logging
import math
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Mapping,
    Sequence,
)
from contextlib import AsyncExitStack
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar, overload

import anyio
import msgspec
from msgspec.structs import replace

from ._breaker import BreakerRegistry, CircuitBreaker
from ._clock import Clock, SystemClock
from ._errors import (
    JobNotFound,
    JobTimeout,
    OptionError,
    StorageError,
    UnknownTask,
    WorkflowError,
    WorkflowNotFound,
)
from ._events import EventBus, JobCancelled, JobEnqueued, QueuePaused, QueueResumed, job_event
from ._filter import ErrorGroup, JobFilter
from ._hooks import ExecutionHook
from ._ids import IdFactory
from ._memory import MemoryStorage
from ._models import (
    Enqueued,
    Job,
    JobStatus,
    Page,
    Priority,
    QueueStats,
    Schedule,
    Step,
    StoredEvent,
    TaskBacklog,
    WorkerInfo,
    WorkflowRecord,
    WorkflowRun,
)
from ._modes import ModeController
from ._periodic import Periodics
from ._ratelimit import RateLimiter
from ._retry import Retry
from ._task import JobOptions, Submission, Task
from ._telemetry import GLOBAL_PROVIDERS, Telemetry, TraceContext
from ._workflow import Workflow, plan, summarize
from .abc import Storage

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import Tracer, TracerProvider

__all__ = ["Queue"]

P = ParamSpec("P")
R = TypeVar("R")

_DEFAULT_KEY_TTL = 24 * 3600.0
_MAX_KEY_LENGTH = 256
_MAX_QUEUE_NAME = 200
_NO_OPTIONS = JobOptions()
_MAX_ATTEMPTS = 1_000_000  # a bound every storage can hold (SQLite integers are 64-bit)
_LOOK_EVERY = 64
"""Enqueues with no tracer between two looks for a global tracer provider (the first
enqueue looks): a look reads ``os.environ`` through the API (about 1 us), and a provider
set once stays set."""


def _seconds(option: str, value: float | None, *, positive: bool = False) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise OptionError(option, f"expected seconds as a number, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise OptionError(option, f"must be a finite number {'>' if positive else '>='} 0")
    return float(value)


T = TypeVar("T")
_log = logging.getLogger("hyperqueue.queue")
_RELAY_BATCH = 1000
"""Most entries of other processes the event relay reads in one round."""


class _Filters(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    status: str | None = None
    queue: str | None = None
    task: str | None = None
    tenant: str | None = None


class _Cursor(msgspec.Struct, frozen=True, array_like=True):
    after: str
    filters: _Filters


_cursor_encode = msgspec.json.Encoder().encode
_cursor_decode = msgspec.json.Decoder(_Cursor).decode


def _write_cursor(after: str, filters: _Filters) -> str:
    return base64.urlsafe_b64encode(_cursor_encode(_Cursor(after, filters))).decode().rstrip("=")


_search_encode = msgspec.json.Encoder().encode
_search_decode = msgspec.json.Decoder(tuple[str, JobFilter]).decode


def _write_search_cursor(after: str, where: JobFilter) -> str:
    raw = _search_encode((after, where))
    return "s" + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _read_search_cursor(cursor: str) -> tuple[str, JobFilter]:
    try:
        if not cursor.startswith("s"):
            raise ValueError(cursor)
        body = cursor[1:]
        return _search_decode(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (ValueError, msgspec.DecodeError):
        raise OptionError("cursor", "not a cursor this search gave out") from None


def _within(carried: JobFilter, asked: JobFilter) -> bool:
    """Whether a cursor's filter keeps every condition asked for now (``since`` and
    ``until`` aside: relative times move between two requests)."""
    for name in JobFilter.__struct_fields__:
        wanted = getattr(asked, name)
        if name not in ("since", "until") and wanted and getattr(carried, name) != wanted:
            return False
    return True


def _read_cursor(cursor: str) -> tuple[str, _Filters]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        decoded = _cursor_decode(raw)
    except (ValueError, msgspec.DecodeError):
        raise OptionError("cursor", "not a cursor this listing gave out") from None
    return decoded.after, decoded.filters


async def _quietly(call: Coroutine[Any, Any, T], fallback: T) -> T:
    """A read whose failure (a storage briefly unavailable) waits for the next round:
    the relay must never take the queue's task group down with it."""
    try:
        return await call
    except StorageError:
        return fallback
    except Exception:
        _log.exception("reading the event log failed; trying again")
        return fallback


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

    ``hooks`` are execution hooks (:class:`hyperqueue.abc.ExecutionHook`) wrapped around
    each run of a job by every worker of this queue. OpenTelemetry: spans and metrics go
    to ``tracer_provider`` / ``meter_provider`` when given, else to the global ones once
    an application sets them (nothing is recorded or spent before);
    ``trace_context`` (``"link"``) says how a run's span refers to the context its job
    was created in (``"parent"``: as its parent); ``instrument=False`` turns it off.
    ``metrics_interval`` (15 s) is how often the depth and lag gauges are read from the
    storage, while a meter provider is configured and the queue is open with ``async
    with``.
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
        tenant_quotas: Mapping[str, int] | None = None,
        relay_interval: float = 0.05,
        hooks: Sequence[ExecutionHook] = (),
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        trace_context: TraceContext = "link",
        instrument: bool = True,
        metrics_interval: float = 15.0,
    ) -> None:
        self.storage = storage if storage is not None else MemoryStorage()
        self.clock = clock if clock is not None else SystemClock()
        self.events = events if events is not None else EventBus()
        self.key_ttl = key_ttl
        self.tenant_limits: dict[str, int] = dict(tenant_limits or {})
        """Most jobs of a tenant that may run at once, across every worker on this
        storage: the storage claims no job of a tenant at its cap. Change it while
        running by assigning a new dict."""
        self.tenant_quotas: dict[str, int] = dict(tenant_quotas or {})
        """Most pending jobs of a tenant: an enqueue past it raises
        :class:`QuotaExceeded` and stores nothing."""
        if not relay_interval > 0:
            raise ValueError("relay_interval must be > 0 seconds")
        self.relay_interval = relay_interval
        self.templates: dict[str, JobOptions] = {}
        self.periodics = Periodics(self)
        """The periodic jobs defined on this queue (:meth:`periodic`), by name."""
        self.breakers = (
            breakers
            if breakers is not None
            else BreakerRegistry(clock=self.clock, events=self.events)
        )
        self.tasks: dict[str, Task[Any, Any]] = {}
        self.hooks: list[ExecutionHook] = list(hooks)
        """Execution hooks of every worker of this queue, outermost first; a worker
        started later takes the list as it is then."""
        if not metrics_interval > 0:
            raise ValueError("metrics_interval must be > 0 seconds")
        self.metrics_interval = metrics_interval
        self.telemetry = Telemetry(
            clock=self.clock,
            breakers=self.breakers,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            trace_context=trace_context,
            enabled=instrument,
        )
        """The OpenTelemetry instrumentation (see :mod:`hyperqueue._telemetry`)."""
        self._own_tracer = instrument and tracer_provider is not None
        self._untraced = _LOOK_EVERY - 1  # enqueues since a global tracer was looked for
        self._new_id = IdFactory().new
        self._opened = False
        self._waiters: dict[str, list[Any]] = {}  # job id -> [event, number of waiters]
        self._workers: list[Worker] = []
        self._relay_scope: anyio.CancelScope | None = None
        self._stack: AsyncExitStack | None = None

    @property
    def clock(self) -> Clock:
        """Where the queue's time comes from (see :class:`Clock`)."""
        return self._clock

    @clock.setter
    def clock(self, clock: Clock) -> None:
        self._clock = clock
        # the system clock's now() is time.time(): called as it is, one frame less
        self._now: Callable[[], float] = time.time if type(clock) is SystemClock else clock.now

    @property
    def storage(self) -> Storage:
        """Where the jobs are; may be replaced before the queue is opened."""
        return self._storage

    @storage.setter
    def storage(self, storage: Storage) -> None:
        self._storage = storage
        # exactly the memory storage (a subclass may override its enqueue): its enqueue
        # of one job needs no coroutine
        self._memory: MemoryStorage | None = storage if type(storage) is MemoryStorage else None

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
        """Open the storage, run the event bus's async subscribers if nobody does, and
        relay other processes' job events from the storage's log to the bus."""
        await self.open()
        async with AsyncExitStack() as stack:
            if not self.events.running:
                await stack.enter_async_context(self.events)
            tg = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(tg.cancel_scope.cancel)
            tg.start_soon(self._relay, name="hyperqueue event relay")
            if self.telemetry.enabled:
                tg.start_soon(self._read_backlog, name="hyperqueue metrics")
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        try:
            if stack is not None:  # its task groups must close in this scope
                await stack.__aexit__(None, None, None)
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
        max_rescues: int = 3,
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
        max_rescues: int = 3,
    ) -> Task[P, R] | Callable[[Callable[P, Awaitable[R]]], Task[P, R]]:
        """Register an async function as a task, bare (``@queue.task``) or with options.

        ``breaker`` names a circuit breaker of :attr:`breakers` (or is one): while it is
        open, jobs of the task are deferred until it half-opens, neither failed nor
        counted as attempts, and the task's failures count against it.
        ``rate_limit`` (``"10/second"``, or a :class:`RateLimiter`) caps how often jobs
        of the task start, in this process; ``rate_limit_key(*args, **kwargs)`` makes
        the limit per key (per customer, say). Jobs over the limit are deferred until it
        lets them through, not failed. ``max_rescues`` (3): a job that loses its worker
        (crash, ``kill -9``, a frozen process) runs again without spending an attempt,
        and fails the ``max_rescues``-th time, so a job that kills its worker stops.
        """
        self._check_counts(JobOptions(max_rescues=max_rescues))

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
                max_rescues=max_rescues,
            )
            self.tasks[task_name] = task
            return task

        return register(fn) if fn is not None else register

    def _task(self, name: str) -> Task[Any, Any]:
        task = self.tasks.get(name)
        if task is None:
            raise UnknownTask(name, tuple(self.tasks))
        return task

    # -- templates -------------------------------------------------------------------

    def template(
        self,
        name: str,
        *,
        queue: str | None = None,
        priority: Priority | str | None = None,
        delay: float | None = None,
        timeout: float | None = None,
        retry: Retry | None = None,
        max_attempts: int | None = None,
        max_rescues: int | None = None,
        tenant: str | None = None,
    ) -> JobOptions:
        """Define named defaults a submission can refer to (``template="nightly"``).

        A template's options come before the task's defaults and after the options of
        the enqueue itself. ``retry`` sets the attempts (its backoff is the task's, or
        the default one when the task has no policy). Defining a name again replaces it.
        """
        if not isinstance(name, str) or not name:
            raise OptionError("template", "a template needs a non-empty name")
        options = JobOptions(
            queue=queue,
            priority=_priority(priority, None),  # type: ignore[arg-type]
            delay=_seconds("delay", delay),
            timeout=_seconds("timeout", timeout, positive=True),
            max_attempts=max_attempts
            if max_attempts is not None
            else (retry.attempts if retry is not None else None),
            max_rescues=max_rescues,
            tenant=tenant,
        )
        self._check_counts(options)
        self.templates[name] = options
        return options

    def _with_template(self, options: JobOptions) -> JobOptions:
        name = options.template
        if name is None:
            return options
        template = self.templates.get(name)
        if template is None:
            known = ", ".join(sorted(self.templates)) or "none are defined"
            raise OptionError("template", f"unknown template {name!r}; known: {known}")
        return options.merged(template)

    # -- enqueue ---------------------------------------------------------------------

    @staticmethod
    def _check_counts(options: JobOptions) -> None:
        for option, value, low in (
            ("max_attempts", options.max_attempts, 1),
            ("max_rescues", options.max_rescues, 1),
        ):
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, int)
                or not low <= value <= _MAX_ATTEMPTS
            ):
                raise OptionError(option, f"must be a whole number from {low} to {_MAX_ATTEMPTS:,}")

    def _build(
        self,
        task: Task[Any, Any],
        args: Sequence[Any],
        kwargs: dict[str, Any],
        now: float,
        options: JobOptions,
        *,
        checked: bool = False,
    ) -> Job:
        if checked:  # a workflow step's, checked with its inputs left out
            stored_args, stored_kwargs = tuple(args), kwargs
        else:
            stored_args, stored_kwargs = task.signature.check(args, kwargs)
        options = self._with_template(options)
        delay, run_at = options.delay, options.run_at
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
        self._check_counts(options)
        key, queue, tenant = options.key, options.queue, options.tenant
        if key is not None and (not isinstance(key, str) or not 0 < len(key) <= _MAX_KEY_LENGTH):
            raise OptionError("key", f"must be a string of 1 to {_MAX_KEY_LENGTH} characters")
        if queue is not None and (not isinstance(queue, str) or not queue):
            raise OptionError("queue", "must be a non-empty string")
        if tenant is not None and (not isinstance(tenant, str) or not tenant):
            raise OptionError("tenant", "must be a non-empty string")
        timeout = options.timeout
        return Job(
            id=self._new_id(now),
            task=task.name,
            queue=queue or task.queue,
            priority=_priority(options.priority, task.priority),
            args=stored_args,
            kwargs=stored_kwargs,
            max_attempts=options.max_attempts or task.max_attempts,
            max_rescues=options.max_rescues or task.max_rescues,
            key=key,
            tenant=tenant,
            timeout=task.timeout
            if timeout is None
            else _seconds("timeout", timeout, positive=True),
            created_at=now,
            run_at=when,
        )

    async def _store(self, jobs: list[Job], now: float) -> list[Enqueued]:
        if self._own_tracer or (
            GLOBAL_PROVIDERS.configured() and GLOBAL_PROVIDERS.tracer is not None
        ):
            tracer = self.telemetry.tracer()
            if tracer is not None:
                return await self._store_traced(tracer, jobs, now)
        return await self._store_now(jobs, now)

    async def _store_traced(self, tracer: Tracer, jobs: list[Job], now: float) -> list[Enqueued]:
        """Store ``jobs`` inside their producer spans, each with its trace context."""
        with self.telemetry.sending(tracer, jobs) as traced:
            return await self._store_now(traced, now)

    async def _store_now(self, jobs: list[Job], now: float) -> list[Enqueued]:
        if not self._opened:
            await self.open()
        stored = await self.storage.enqueue(
            jobs, now=now, key_ttl=self.key_ttl, max_queued=self.tenant_quotas or None
        )
        events = self.events
        out: list[Enqueued] = []
        for new, job in zip(jobs, stored, strict=True):
            created = new.id == job.id
            if created and events.active:
                events.publish(JobEnqueued(at=now, job=job))
            out.append(Enqueued(job=job, created=created))
        return out

    async def _enqueue_call(
        self,
        task: Task[Any, Any],
        args: Sequence[Any],
        kwargs: dict[str, Any],
        options: JobOptions | None = None,
    ) -> Job:
        now = self._now()
        if options is not None:
            job = self._build(task, args, kwargs, now, options)
        else:  # the common case, kept lean: the task's defaults, nothing to check
            stored_args, stored_kwargs = task.signature.check(args, kwargs)
            job = replace(
                task._template,
                id=self._new_id(now),
                args=stored_args,
                kwargs=stored_kwargs,
                created_at=now,
                run_at=now,
            )
        if self._own_tracer or GLOBAL_PROVIDERS.tracer is not None:
            tracer = self.telemetry.tracer()
            if tracer is not None:
                return (await self._store_traced(tracer, [job], now))[0].job
        else:  # no tracer: a count, and a look for a global provider now and then
            self._untraced += 1
            if self._untraced >= _LOOK_EVERY:
                self._untraced = 0
                GLOBAL_PROVIDERS.refresh()
        if not self._opened:
            await self.open()
        memory = self._memory
        if memory is not None:  # nothing to wait for: no coroutine
            stored = memory._enqueue_one(job, now, self.key_ttl, self.tenant_quotas)
        else:
            [stored] = await self.storage.enqueue(
                (job,), now=now, key_ttl=self.key_ttl, max_queued=self.tenant_quotas or None
            )
        if self.events.active and stored.id == job.id:  # not a key's earlier job
            self.events.publish(JobEnqueued(at=now, job=stored))
        return stored

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
        max_rescues: int | None = None,
        template: str | None = None,
    ) -> Job:
        """Enqueue a job by task name (as the HTTP API does) or by task object.

        Returns the stored job; when ``key`` was seen within ``key_ttl``, the job that
        key first created. :meth:`enqueue_many` also says which of the two it was.
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
            max_rescues=max_rescues,
            template=template,
        )
        return (await self.enqueue_many((submission,)))[0].job

    async def enqueue_many(self, submissions: Iterable[Submission]) -> list[Enqueued]:
        """Enqueue many jobs in one storage round trip; all are checked before any is
        stored, so one bad submission stores nothing. Each result says whether it
        created its job or found the one its idempotency key made earlier."""
        now = self.clock.now()
        jobs = [self._build(self._task(s.task), s.args, s.kwargs, now, s) for s in submissions]
        return await self._store(jobs, now) if jobs else []

    def build(self, submissions: Iterable[Submission]) -> list[Job]:
        """The jobs :meth:`enqueue_many` would store for ``submissions``, checked
        (tasks, arguments, options, templates) but not stored: for storing them some
        other way, such as on an application's own database transaction
        (``hyperqueue_postgres.enqueue_many_in``). Every job has a new id and
        ``created_at`` = now on the queue's clock. Raises as :meth:`enqueue_many` does
        (:class:`UnknownTask`, :class:`ArgumentError`, :class:`OptionError`), and
        then returns nothing."""
        now = self.clock.now()
        return [self._build(self._task(s.task), s.args, s.kwargs, now, s) for s in submissions]

    # -- workflows and batches ---------------------------------------------------------

    async def enqueue_workflow(self, flow: Workflow) -> WorkflowRun:
        """Check ``flow`` whole (tasks, arguments, cycles) and store all its steps at once.

        Steps whose parents are done run as workers claim them (up to the workflow's
        ``concurrency`` at a time); each receives its parents' results for the
        parameters they were passed to. Raises :class:`WorkflowError` (a cycle, an
        unknown step, a bad argument: nothing is stored) or :class:`UnknownTask`.
        """
        now = self.clock.now()
        workflow_id = "wf_" + self._new_id(now)
        planned = plan(flow, self._task)
        ids = {step.name: self._new_id(now) for _, step in planned}
        children: dict[str, list[str]] = {name: [] for name in ids}
        for _, step in planned:
            for parent in step.parents:
                children[parent].append(ids[step.name])
        jobs: list[Job] = []
        for task, step in planned:
            job = self._build(
                task, step.args, step.kwargs, now, step.options or _NO_OPTIONS, checked=True
            )
            jobs.append(
                replace(
                    job,
                    id=ids[step.name],
                    step=Step(
                        workflow=workflow_id,
                        name=step.name,
                        parents=tuple(ids[p] for p in step.parents),
                        children=tuple(children[step.name]),
                        inputs={param: ids[ref] for param, ref in step.inputs.items()},
                        on_parent_failure=step.on_parent_failure,
                        waiting=len(step.parents),
                        blocked=True,
                        concurrency=flow.concurrency,
                    ),
                )
            )
        if any(job.key is not None for job in jobs):
            raise WorkflowError("a workflow's steps take no idempotency key")
        record = WorkflowRecord(
            id=workflow_id,
            steps={step.name: ids[step.name] for _, step in planned},  # parents first
            concurrency=flow.concurrency,
            created_at=now,
        )
        if not self._opened:
            await self.open()
        tracer = self.telemetry.tracer()
        if tracer is not None:
            with self.telemetry.sending(tracer, jobs) as jobs:
                await self.storage.enqueue_workflow(
                    record, jobs, now=now, max_queued=self.tenant_quotas or None
                )
        else:
            await self.storage.enqueue_workflow(
                record, jobs, now=now, max_queued=self.tenant_quotas or None
            )
        if self.events.active:
            for job in jobs:
                self.events.publish(JobEnqueued(at=now, job=job))
        return await self.get_workflow(workflow_id)

    async def get_workflow(self, workflow_id: str) -> WorkflowRun:
        """The workflow's status, its steps' statuses and, once completed, its result
        (the results of its sink steps, by name); raises :class:`WorkflowNotFound`."""
        if not self._opened:
            await self.open()
        found = await self.storage.get_workflow(workflow_id)
        if found is None:
            raise WorkflowNotFound(workflow_id)
        return summarize(*found)

    async def workflow_jobs(self, workflow_id: str) -> dict[str, Job]:
        """The workflow's steps' jobs, by step name; raises :class:`WorkflowNotFound`."""
        if not self._opened:
            await self.open()
        found = await self.storage.get_workflow(workflow_id)
        if found is None:
            raise WorkflowNotFound(workflow_id)
        record, jobs = found
        by_id = {job.id: job for job in jobs}
        return {name: by_id[job_id] for name, job_id in record.steps.items() if job_id in by_id}

    async def wait_workflow(self, workflow_id: str, timeout: float | None = None) -> WorkflowRun:
        """Wait until the workflow is completed, failed or cancelled, and return it.

        Raises :class:`JobTimeout` after ``timeout`` seconds on the queue's clock. It
        waits for each step in turn, parents first: by the time a step is waited for,
        its parents have ended, so it was released or cancelled with them, and its own
        end wakes the wait as :meth:`wait` does.
        """
        deadline = None if timeout is None else self.clock.now() + timeout
        run = await self.get_workflow(workflow_id)
        for job_id in run.steps.values():
            remaining = None if deadline is None else deadline - self.clock.now()
            try:
                if remaining is not None and remaining <= 0:
                    raise JobTimeout
                await self.wait(job_id, timeout=remaining)
            except JobTimeout:
                run = await self.get_workflow(workflow_id)
                raise JobTimeout(
                    f"workflow {workflow_id!r} is still {run.status} after {timeout} s"
                ) from None
        return await self.get_workflow(workflow_id)

    async def cancel_workflow(self, workflow_id: str) -> WorkflowRun:
        """Cancel every step that has not ended (running ones where they run)."""
        if not self._opened:
            await self.open()
        now = self.clock.now()
        changed = await self.storage.cancel_workflow(workflow_id, now=now)
        for job in changed:
            for worker in self._workers:
                worker._interrupt(job.id, "cancelled")
            self._job_final(job)
            if self.events.active:
                self.events.publish(JobCancelled(at=now, job=job))
        return await self.get_workflow(workflow_id)

    async def retry_workflow(self, workflow_id: str) -> WorkflowRun:
        """Run again the steps that did not complete, and what follows them; completed
        steps keep their results and are not run again. The workflow must have ended
        (:class:`InvalidTransition` otherwise)."""
        if not self._opened:
            await self.open()
        now = self.clock.now()
        again = await self.storage.retry_workflow(workflow_id, now=now)
        if self.events.active:
            for job in again:
                self.events.publish(JobEnqueued(at=now, job=job))
        return await self.get_workflow(workflow_id)

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
        """Cancel a pending job, or a running one (its task is cancelled where it runs:
        in this process at once, in another when its heartbeat finds the claim gone)."""
        if not self._opened:
            await self.open()
        now = self.clock.now()
        before = await self.storage.get(job_id)
        job = await self.storage.cancel(job_id, now=now)
        if before is not None and before.status is JobStatus.RUNNING:
            for worker in self._workers:
                worker._interrupt(job_id, "cancelled")
        if before is None or before.status is not JobStatus.CANCELLED:
            self._job_final(job)
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
        (another process on the same storage) are noticed from the event log when the
        queue is open with ``async with``, and by re-reading the job, backing off from
        10 ms to 1 s.
        """
        deadline = None if timeout is None else self.clock.now() + timeout
        poll = 0.01
        entry = self._waiters.get(job_id)
        if entry is None:
            entry = self._waiters[job_id] = [anyio.Event(), 0]
        entry[1] += 1
        try:
            while True:
                job = await self.get(job_id)
                if job.status.is_final:
                    return job
                remaining = math.inf if deadline is None else deadline - self.clock.now()
                if remaining <= 0:
                    raise JobTimeout(f"job {job_id!r} is still {job.status} after {timeout} s")
                with self.clock.cancel_after(min(poll, remaining)):
                    await entry[0].wait()
                if entry[0].is_set():
                    entry[0] = anyio.Event()
                poll = min(poll * 2, 1.0)
        finally:
            entry[1] -= 1
            if entry[1] == 0 and self._waiters.get(job_id) is entry:
                del self._waiters[job_id]

    def _job_final(self, job: Job) -> None:
        """Wake the local waiters of a job that reached a final status."""
        if self._waiters:
            entry = self._waiters.get(job.id)
            if entry is not None:
                entry[0].set()

    async def list_jobs(
        self,
        *,
        status: JobStatus | str | None = None,
        queue: str | None = None,
        task: str | None = None,
        tenant: str | None = None,
        cursor: str | None = None,
        limit: int = 100,
        where: JobFilter | None = None,
    ) -> Page:
        """Jobs newest first, filtered; pass the page's ``next_cursor`` for the next.

        The cursor carries the filters of the listing it came from: the next page is of
        the same listing whatever filters come with it, and a cursor given with other
        filters is refused (:class:`OptionError`). ``where`` (a :class:`JobFilter`,
        e.g. ``JobFilter.parse("status:failed task:send_*", now=...)``) is ANDed with
        the other filters.
        """
        if not self._opened:
            await self.open()
        if not 1 <= limit <= 1000:
            raise OptionError("limit", "must be between 1 and 1000")
        if where is not None or (cursor is not None and cursor.startswith("s")):
            return await self._search(
                where,
                status=status,
                queue=queue,
                task=task,
                tenant=tenant,
                cursor=cursor,
                limit=limit,
            )
        try:
            wanted = None if status is None else JobStatus(status)
        except ValueError:
            raise OptionError("status", f"{status!r} is not a job status") from None
        filters = _Filters(
            status=wanted.value if wanted is not None else None,
            queue=queue,
            task=task,
            tenant=tenant,
        )
        after = None
        if cursor is not None:
            after, carried = _read_cursor(cursor)
            if filters != _Filters() and filters != carried:
                raise OptionError("cursor", "this cursor belongs to a listing with other filters")
            filters = carried
        page = await self.storage.list(
            status=None if filters.status is None else JobStatus(filters.status),
            queue=filters.queue,
            task=filters.task,
            tenant=filters.tenant,
            cursor=after,
            limit=limit,
        )
        if page.next_cursor is None:
            return page
        return Page(items=page.items, next_cursor=_write_cursor(page.next_cursor, filters))

    # -- search, counts and bulk actions (see _filter) --------------------------------

    async def _search(
        self,
        where: JobFilter | None,
        *,
        status: JobStatus | str | None,
        queue: str | None,
        task: str | None,
        tenant: str | None,
        cursor: str | None,
        limit: int,
    ) -> Page:
        """A listing by filter. Its cursor carries the filter (with ``since`` and
        ``until`` resolved when the first page was read): the next page is of the same
        search, and a cursor given with another filter is refused."""
        try:
            statuses = None if status is None else (JobStatus(status),)
        except ValueError:
            raise OptionError("status", f"{status!r} is not a job status") from None
        base = where if where is not None else JobFilter()
        narrowed = base.narrowed(status=statuses, queue=queue, task=task, tenant=tenant)
        after = None
        if cursor is not None:
            after, carried = _read_search_cursor(cursor)
            if narrowed is None or not _within(carried, narrowed):
                raise OptionError("cursor", "this cursor belongs to a search with another filter")
            narrowed = carried
        if narrowed is None:
            return Page(items=[])
        page = await self.storage.search(narrowed, cursor=after, limit=limit)
        if page.next_cursor is None:
            return page
        return Page(items=page.items, next_cursor=_write_search_cursor(page.next_cursor, narrowed))

    async def count_jobs(self, where: JobFilter | None = None) -> int:
        """The exact number of jobs that pass ``where`` (every job when ``None``)."""
        if not self._opened:
            await self.open()
        return await self.storage.count(where if where is not None else JobFilter())

    async def cancel_matching(self, where: JobFilter, *, batch: int = 500) -> int:
        """Cancel every pending or running job that passes ``where``, as :meth:`cancel`
        does each (running ones are interrupted where they run; steps settle their
        workflow), ``batch`` jobs per storage transaction; returns how many. Jobs
        enqueued while it runs are left alone."""
        now = self.clock.now()

        def done(jobs: list[Job]) -> None:
            for job in jobs:
                for worker in self._workers:
                    worker._interrupt(job.id, "cancelled")
                self._job_final(job)
                if self.events.active:
                    self.events.publish(JobCancelled(at=now, job=job))

        async def step(before: str | None) -> list[Job]:
            return await self.storage.cancel_matching(where, now=now, limit=batch, before=before)

        return await self._in_batches(step, done, batch)

    async def retry_matching(self, where: JobFilter, *, batch: int = 500) -> int:
        """Run again every failed or cancelled job that passes ``where``, as
        :meth:`retry` does each, ``batch`` jobs per storage transaction; returns how
        many."""
        now = self.clock.now()

        def done(jobs: list[Job]) -> None:
            if self.events.active:
                for job in jobs:
                    self.events.publish(JobEnqueued(at=now, job=job))

        async def step(before: str | None) -> list[Job]:
            return await self.storage.retry_matching(where, now=now, limit=batch, before=before)

        return await self._in_batches(step, done, batch)

    async def discard_matching(self, where: JobFilter, *, batch: int = 500) -> int:
        """Delete every completed, failed or cancelled job that passes ``where`` (a step
        of a workflow still running is kept), ``batch`` jobs per storage transaction;
        returns how many."""

        async def step(before: str | None) -> list[Job]:
            return await self.storage.discard_matching(where, limit=batch, before=before)

        return await self._in_batches(step, lambda jobs: None, batch)

    async def _in_batches(
        self,
        step: Callable[[str | None], Awaitable[list[Job]]],
        done: Callable[[list[Job]], None],
        batch: int,
    ) -> int:
        """Run ``step`` newest first, one batch after another below the last id seen,
        until a batch comes back short: each job is looked at once."""
        if not 1 <= batch <= 10_000:
            raise OptionError("batch", "must be between 1 and 10,000")
        if not self._opened:
            await self.open()
        total = 0
        before: str | None = None
        while True:
            jobs = await step(before)
            done(jobs)
            total += len(jobs)
            if len(jobs) < batch:
                return total
            before = min(job.id for job in jobs)

    async def dead_letter_groups(
        self, where: JobFilter | None = None, *, limit: int = 100
    ) -> list[ErrorGroup]:
        """Failed jobs grouped by error fingerprint (:func:`hyperqueue.fingerprint`),
        newest group first, at most ``limit`` groups; a group's jobs are
        ``JobFilter(fingerprint=group.fingerprint)``."""
        if not 1 <= limit <= 1000:
            raise OptionError("limit", "must be between 1 and 1000")
        if not self._opened:
            await self.open()
        return await self.storage.error_groups(
            where if where is not None else JobFilter(), limit=limit
        )

    async def dead_letters(
        self, *, queue: str | None = None, cursor: str | None = None, limit: int = 100
    ) -> Page:
        """Failed jobs (attempts used up), newest first, each with its error and traceback."""
        return await self.list_jobs(
            status=JobStatus.FAILED, queue=queue, cursor=cursor, limit=limit
        )

    async def stats(self) -> dict[str, QueueStats]:
        """Counts of jobs by status per named queue, with the pending jobs no live worker
        can run (``unserved``: their task is registered by no worker on the storage)."""
        if not self._opened:
            await self.open()
        counts = await self.storage.counts()
        unserved: dict[str, int] = {}
        for item in await self.unserved():
            unserved[item.queue] = unserved.get(item.queue, 0) + item.pending
        return {
            name: QueueStats(
                queue=name,
                unserved=unserved.get(name, 0),
                **{status.value: n for status, n in by_status.items()},
            )
            for name, by_status in sorted(counts.items())
        }

    async def workers(self) -> list[WorkerInfo]:
        """The worker pools alive on this storage, in every process and host."""
        if not self._opened:
            await self.open()
        return await self.storage.workers(now=self.clock.now())

    async def unserved(self) -> list[TaskBacklog]:
        """Pending jobs whose task no live worker on the storage has registered (or
        whose queue none serves): they wait, never fail, until such a worker starts."""
        if not self._opened:
            await self.open()
        backlog = await self.storage.backlog()
        if not backlog:
            return []
        live = await self.storage.workers(now=self.clock.now())
        return [
            item
            for item in backlog
            if not any(
                item.task in w.tasks and (w.queues is None or item.queue in w.queues) for w in live
            )
        ]

    async def event_log(
        self, *, after: int | None = None, poll: float = 0.05
    ) -> AsyncIterator[StoredEvent]:
        """Every job transition on the storage, by any process, oldest first, forever.

        ``after`` is the id of the last entry seen (``None``: start at the live end).
        An entry's ``id`` only grows, so a reader that saves it resumes after a restart
        with no gap and no duplicate (as the server's event stream does with
        ``Last-Event-ID``). New entries are looked for every ``poll`` seconds.
        """
        if not self._opened:
            await self.open()
        storage = self.storage
        if after is None:
            after = await storage.last_event_id()
        while True:
            batch = await storage.read_events(after=after, limit=500)
            for entry in batch:
                after = entry.id
                yield entry
            if len(batch) < 500:
                await anyio.sleep(poll)

    async def _relay(self) -> None:
        """Publish other processes' job events on this queue's bus, and wake local
        waiters of jobs they finished (entries this storage object wrote were published
        when they were made).

        Each round asks for the newest id, and reads only when it moved, leaving this
        storage's own entries out in the backend (in a process that writes most of the
        log, reading them back and decoding them only to drop them was most of the
        relay's cost). A read that came back short covered every entry up to the newest
        id taken before it, so the next round starts there: own entries are passed
        over once, never rescanned, and nothing committed is missed (see
        :meth:`~hyperqueue.abc.Storage.read_events`)."""
        storage = self.storage
        if isinstance(storage, MemoryStorage):  # only this process writes to it
            return
        origin = storage.origin
        after: int | None = None
        while True:
            await anyio.sleep(self.relay_interval)
            if not (self.events.active or self._waiters):
                after = None
                continue
            newest = await _quietly(storage.last_event_id(), None)
            if newest is None or newest == after:  # a failed read, or nothing new
                continue
            if after is None or newest < after:  # start at the live end (of a new log)
                after = newest
                continue
            batch = await _quietly(
                storage.read_events(after=after, limit=_RELAY_BATCH, skip_origin=origin), None
            )
            if batch is None:
                continue
            for entry in batch:
                if entry.job.status.is_final:
                    self._job_final(entry.job)
                if self.events.active:
                    self.events.publish(job_event(entry))
            if len(batch) == _RELAY_BATCH:
                after = batch[-1].id
            else:
                after = max(newest, batch[-1].id) if batch else newest

    async def _read_backlog(self) -> None:
        """Read the pending jobs per queue for the depth and lag gauges, every
        ``metrics_interval`` seconds while a meter provider is configured."""
        telemetry = self.telemetry
        while True:
            if telemetry.instruments() is not None:
                telemetry.backlog = await _quietly(self.storage.backlog(), telemetry.backlog)
                telemetry.backlog_at = self.clock.now()
            await anyio.sleep(self.metrics_interval)

    # -- periodic jobs -----------------------------------------------------------------

    def periodic(
        self,
        *,
        cron: str | None = None,
        every: float | None = None,
        timezone: str | None = None,
        catch_up: bool = False,
        name: str | None = None,
        queue: str = "default",
        priority: Priority | str = Priority.NORMAL,
        timeout: float | None = None,
        retry: Retry | None = None,
    ) -> Callable[[Callable[P, Awaitable[R]]], Task[P, R]]:
        """Register an async function taking no arguments as a task that runs on a schedule.

        ``cron="*/5 * * * *"`` (five fields, in ``timezone``: an IANA name, UTC by
        default; needs the ``cron`` extra) or ``every=60.0`` seconds (slots at the
        multiples of ``every`` since the epoch). Every worker pool that serves the task
        fires it, and the storage lets exactly one job through per slot, across every
        process on it. A slot fired more than ``min(60 s, period)`` late is missed:
        reported as a :class:`ScheduleMissed` event, and run once for all missed slots
        when ``catch_up=True``. ``name`` names the task and the schedule; the other
        options are :meth:`task`'s. Raises :class:`OptionError` for a schedule that
        cannot work. See :mod:`hyperqueue._periodic` for the slot rules.
        """
        return self.periodics.decorator(
            cron=cron,
            every=every,
            timezone=timezone,
            catch_up=catch_up,
            name=name,
            queue=queue,
            priority=priority,
            timeout=timeout,
            retry=retry,
        )

    async def schedules(self) -> list[Schedule]:
        """Every periodic job on the storage (and those defined here that no worker saved
        yet), by name, with ``next_at``: its next slot (None while paused)."""
        if not self._opened:
            await self.open()
        return await self.periodics.listing()

    async def pause_schedule(self, name: str) -> Schedule:
        """Stop firing ``name`` in every process; raises :class:`ScheduleNotFound`."""
        if not self._opened:
            await self.open()
        return await self.periodics.pause(name, paused=True)

    async def resume_schedule(self, name: str) -> Schedule:
        """Fire ``name`` again from its next slot; the slots skipped while it was paused
        are not reported missed. Raises :class:`ScheduleNotFound`."""
        if not self._opened:
            await self.open()
        return await self.periodics.pause(name, paused=False)

    # -- paused queues -----------------------------------------------------------------

    async def pause_queue(self, name: str) -> None:
        """Stop every worker, in every process on the storage, from claiming jobs of the
        queue ``name``. Jobs still enqueue, running jobs finish, and a queue exists by its
        name, so one with no jobs yet may be paused; pausing twice is harmless. Publishes
        :class:`QueuePaused`. Raises :class:`OptionError` for a name that is not a
        non-empty string of at most 200 characters."""
        await self._set_paused(name, paused=True)

    async def resume_queue(self, name: str) -> None:
        """Let workers claim the jobs of ``name`` again; idle workers in every process
        wake at once. Publishes :class:`QueueResumed`."""
        await self._set_paused(name, paused=False)

    async def paused_queues(self) -> list[str]:
        """The names of the paused queues on the storage, sorted."""
        if not self._opened:
            await self.open()
        return await self.storage.paused_queues()

    async def _set_paused(self, name: str, *, paused: bool) -> None:
        if not isinstance(name, str) or not 0 < len(name) <= _MAX_QUEUE_NAME:
            raise OptionError("queue", f"must be a string of 1 to {_MAX_QUEUE_NAME} characters")
        if not self._opened:
            await self.open()
        now = self.clock.now()
        await self.storage.pause_queue(name, paused=paused, now=now)
        event = QueuePaused if paused else QueueResumed
        self.events.publish(event(at=now, queue=name))

    # -- workers ---------------------------------------------------------------------

    def _attach(self, worker: Worker) -> None:
        """A pool of this queue started: cancels of running jobs reach it."""
        self._workers.append(worker)

    def _detach(self, worker: Worker) -> None:
        if worker in self._workers:
            self._workers.remove(worker)

    def worker(
        self,
        *,
        concurrency: int = 10,
        queues: Sequence[str] | None = None,
        lease: float = 30.0,
        drain_timeout: float = 30.0,
        prefetch: int | Literal["auto"] = "auto",
        name: str | None = None,
        modes: ModeController | None = None,
        hooks: Sequence[ExecutionHook] = (),
    ) -> Worker:
        """A pool running this queue's jobs; ``async with`` starts it and drains it.

        ``lease`` is how long a claimed job stays reserved without a heartbeat; it is
        renewed every ``lease / 3`` while the job runs. On exit the pool stops claiming,
        lets running jobs finish for up to ``drain_timeout`` seconds, then cancels them
        and hands them back as pending.

        ``prefetch`` is how many jobs a claim takes beyond the free runners, so the
        next ones are at hand when a runner frees up: one round trip for many short
        jobs on a storage with round trips (SQLite, PostgreSQL). ``"auto"`` (the
        default) sizes it by the time runners spend per job, so extra jobs start within
        about 5 ms (none for jobs of a few milliseconds or more, up to ``9 *
        concurrency`` for very short ones, ``19 * concurrency`` on the memory storage,
        where a claim is no round trip), and hands back to the storage, without
        spending an attempt, any that still wait 10 ms after their claim: a job is never
        kept long from an idle runner of another pool or process. An int fixes it:
        ``0`` claims only for free runners; a fixed prefetch holds its jobs (they count
        as running, their lease renewed) until a runner here takes them.

        ``modes``: a :class:`ModeController` whose mode must allow ``execute`` for the
        pool to claim (read-only and maintenance stop claiming; running jobs finish).
        The pool registers itself on the storage with its tasks, so every process
        sees who serves what (:meth:`Queue.workers`).

        ``hooks``: execution hooks (:class:`hyperqueue.abc.ExecutionHook`) around each
        run in this pool, inside the queue's own :attr:`hooks`.
        """
        return Worker(
            self,
            concurrency=concurrency,
            queues=queues,
            lease=lease,
            drain_timeout=drain_timeout,
            prefetch=prefetch,
            name=name,
            modes=modes,
            hooks=hooks,
        )

    def __repr__(self) -> str:
        return f"Queue({self.storage!r}, tasks={sorted(self.tasks)})"


from ._worker import Worker  # noqa: E402  (the worker needs Queue's module loaded)
