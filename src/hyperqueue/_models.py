"""The records that cross the storage boundary: jobs, outcomes, pages and figures.

They are frozen msgspec Structs so that every backend encodes and decodes them the same
way and cheaply. New fields must get defaults so that stored jobs still decode.
"""

from __future__ import annotations

import enum
from typing import Any

import msgspec

__all__ = [
    "Enqueued",
    "Job",
    "JobStatus",
    "Outcome",
    "Page",
    "Priority",
    "QueueStats",
    "Schedule",
    "Step",
    "StoredEvent",
    "TaskBacklog",
    "WorkerInfo",
    "WorkflowRecord",
    "WorkflowRun",
    "WorkflowStatus",
]


class JobStatus(enum.StrEnum):
    """Where a job is in its life. ``pending`` includes delayed and retry-scheduled jobs."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in _FINAL


_FINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})


class Priority(enum.StrEnum):
    """Claim order across levels; within one level jobs run first in, first out."""

    CRITICAL = "critical"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @property
    def rank(self) -> int:
        """0 for critical up to 3 for low: smaller runs first."""
        return _RANK[self]


_RANK = {Priority.CRITICAL: 0, Priority.HIGH: 1, Priority.NORMAL: 2, Priority.LOW: 3}


class Step(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A job's place in its workflow: what it waits for and what waits for it.

    ``parents`` and ``children`` are job ids. ``inputs`` maps a parameter of the task to
    the parent job whose result it receives when the step starts. ``waiting`` counts the
    parents not yet finished. A ``blocked`` step is pending but not claimable: it waits
    for its parents, or for a free slot under its workflow's ``concurrency``.
    ``on_parent_failure`` is ``"cancel"`` (a parent that failed or was cancelled
    cancels this step) or ``"run"`` (it runs anyway, receiving ``None`` for the result
    of a parent that did not complete).
    """

    workflow: str
    name: str
    parents: tuple[str, ...] = ()
    children: tuple[str, ...] = ()
    inputs: dict[str, str] = {}
    on_parent_failure: str = "cancel"
    waiting: int = 0
    blocked: bool = False
    concurrency: int | None = None


class Job(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One unit of work and everything known about it.

    A job is immutable: every transition yields a new ``Job`` from storage, which is the
    single source of truth. Times are seconds since the epoch on the queue's clock.
    ``token`` is the fencing token: it grows on every claim, and storage accepts a
    finish or a lease extension only with the token of the current claim.
    ``started_at`` is when the task function was last called (not when the job was
    claimed). ``rescues`` counts the times the job lost its worker (an expired lease:
    crash, ``kill -9``, a frozen process); a lost worker spends no attempt, and the
    ``max_rescues``-th loss fails the job, so a job that kills its worker cannot loop.
    ``headers`` are message headers set when the job is created: the W3C trace context
    (``traceparent``, ``tracestate``, ``baggage``) of the span that enqueued it, when
    one was recording, so the run in another process or host joins that trace.
    """

    id: str
    task: str
    queue: str = "default"
    status: JobStatus = JobStatus.PENDING
    priority: Priority = Priority.NORMAL
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = {}
    attempts: int = 0
    max_attempts: int = 1
    result: Any = None
    error: str | None = None
    traceback: str | None = None
    progress: Any = None
    key: str | None = None
    tenant: str | None = None
    timeout: float | None = None
    created_at: float = 0.0
    run_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    token: int = 0
    lease_until: float | None = None
    worker: str | None = None
    rescues: int = 0
    max_rescues: int = 3
    step: Step | None = None
    headers: dict[str, str] = {}


class Outcome(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """How one claimed job ended, as a worker reports it to storage.

    ``status`` is completed, failed or cancelled for a final outcome, or pending for a job
    that goes back to wait: a retry scheduled at ``run_at``, or with ``released`` a job
    handed back during shutdown, whose attempt is not counted. ``started_at`` is when
    the task function was called, when the worker has not stored it yet.
    """

    id: str
    token: int
    status: JobStatus
    result: Any = None
    error: str | None = None
    traceback: str | None = None
    run_at: float | None = None
    released: bool = False
    started_at: float | None = None


class Page(msgspec.Struct, frozen=True, kw_only=True):
    """One page of a job listing, newest first; pass ``next_cursor`` to get the next."""

    items: list[Job]
    next_cursor: str | None = None


class QueueStats(msgspec.Struct, frozen=True, kw_only=True):
    """Counts of jobs by status in one named queue.

    ``unserved`` counts the pending jobs whose task no live worker on the storage has
    registered: they wait (never fail) until a worker that knows the task starts.
    """

    queue: str
    pending: int = 0
    running: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    unserved: int = 0

    @property
    def total(self) -> int:
        return self.pending + self.running + self.completed + self.failed + self.cancelled


class Enqueued(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One result of :meth:`Queue.enqueue_many`: the stored job, and whether this call
    created it (``False``: its idempotency key had been seen, and ``job`` is the job
    that key created)."""

    job: Job
    created: bool


class StoredEvent(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One entry of a storage's event log: a job transition, as any process reads it.

    ``id`` only grows across every process and host on the storage, so a reader
    resumes after the last id it saw with no gap and no duplicate. ``type`` is the
    event tag (``job.completed``) and ``at`` when it happened; ``origin`` is the
    :attr:`~hyperqueue.abc.Storage.origin` of the storage object that wrote it.
    ``job`` is the job: the memory storage keeps it as it was after the change; SQLite
    (and PostgreSQL) keep a small row per event and read the job as it is stored when
    the entry is read, which for a final event is the job as it ended (unless it was
    retried since), and for an earlier event may be further along.
    """

    id: int
    type: str
    at: float
    job: Job
    origin: str = ""


class WorkerInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A worker pool as the storage knows it, so every process sees who serves what.

    ``tasks`` are the task names it claims; ``queues`` ``None`` means every queue.
    It counts as alive until ``expires_at`` (renewed by its heartbeat).
    """

    name: str
    host: str
    pid: int
    tasks: tuple[str, ...]
    queues: tuple[str, ...] | None = None
    concurrency: int = 1
    started_at: float = 0.0
    seen_at: float = 0.0
    expires_at: float = 0.0


class TaskBacklog(msgspec.Struct, frozen=True, kw_only=True):
    """Pending jobs of one task in one queue, and the earliest ``run_at`` among them."""

    queue: str
    task: str
    pending: int
    oldest_run_at: float | None = None


class WorkflowStatus(enum.StrEnum):
    """One status for a whole workflow (or batch), from its steps' statuses.

    ``pending`` until a step is claimed, ``running`` while any step is not final; then
    ``completed`` when every step completed, ``failed`` when any step failed (its
    dependents were cancelled, or ran if they said ``on_parent_failure="run"``), else
    ``cancelled``.
    """

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in _FINAL_WORKFLOW


_FINAL_WORKFLOW = frozenset(
    {WorkflowStatus.COMPLETED, WorkflowStatus.FAILED, WorkflowStatus.CANCELLED}
)


class WorkflowRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A workflow as the storage keeps it; its steps are jobs (``Job.step``).

    ``steps`` maps step names to job ids, parents before children (else in the order
    they were added). ``concurrency``
    caps how many of its steps are pending-and-released or running at once (``None``:
    no cap).
    """

    id: str
    steps: dict[str, str]
    concurrency: int | None = None
    created_at: float = 0.0


class WorkflowRun(msgspec.Struct, frozen=True, kw_only=True):
    """A workflow (or batch) and where it stands, as :meth:`Queue.get_workflow` returns it.

    ``result`` maps each sink step (a step no other step depends on) to its result,
    once the workflow completed. ``error`` is the first failed step's error, prefixed
    with its name. ``statuses`` gives each step's job status.
    """

    id: str
    status: WorkflowStatus
    steps: dict[str, str]
    statuses: dict[str, JobStatus]
    concurrency: int | None = None
    created_at: float = 0.0
    finished_at: float | None = None
    result: dict[str, Any] | None = None
    error: str | None = None


class Schedule(msgspec.Struct, frozen=True, kw_only=True):
    """A periodic job as the storage knows it, shared by every process on the storage.

    The definition (``task``, ``queue``, ``cron`` with ``timezone``, or ``every``
    seconds, ``catch_up``) is written by each process that runs it. The state is the
    storage's: ``paused``; ``handled_until``, the time up to which every slot was
    handled (fired, reported missed, or skipped while paused); ``last_job``, the id of
    the job of the latest fired slot; ``missed``, how many slots were missed in all.
    ``next_at`` is the next slot, computed when the schedule is listed (not stored).
    """

    name: str
    task: str
    queue: str = "default"
    cron: str | None = None
    every: float | None = None
    timezone: str | None = None
    catch_up: bool = False
    paused: bool = False
    handled_until: float | None = None
    last_job: str | None = None
    missed: int = 0
    updated_at: float = 0.0
    next_at: float | None = None
