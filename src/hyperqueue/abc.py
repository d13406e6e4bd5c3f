"""Extension points: the storage protocol that every backend implements, and the
execution hooks that take part in each run of a job (:class:`ExecutionHook`, which gets
a :class:`JobRun`; see :mod:`hyperqueue._hooks` for the rules).

Storage is the single source of truth for job state. It is batch-first: every call that
changes jobs takes many at once, so a backend with round trips (SQLite, PostgreSQL) can
turn a batch into a few statements. Time is always passed in (``now``) from the queue's
clock, so backends never read a clock and tests can drive time.

The contract suite in :mod:`hyperqueue.testing` pins the behaviour every backend must
share; run it against a new backend before trusting it with jobs.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol, runtime_checkable

from ._clock import Clock
from ._filter import ErrorGroup, JobFilter
from ._hooks import ExecutionHook, JobRun, RunOutcome
from ._models import (
    Job,
    JobStatus,
    Outcome,
    Page,
    Schedule,
    StoredEvent,
    TaskBacklog,
    WorkerInfo,
    WorkflowRecord,
)

__all__ = ["Clock", "ExecutionHook", "JobRun", "RunOutcome", "Storage", "WorkListener"]


@runtime_checkable
class WorkListener(Protocol):
    """Tells one worker that new work may be ready, without polling a fixed interval.

    The signal is sticky: a change that arrives between :meth:`clear` and :meth:`wait`
    is not lost, so the pattern ``clear(); claim(); if nothing: await wait()`` is safe.
    """

    def clear(self) -> None: ...

    async def wait(self) -> None:
        """Return once work may be ready (at once if it was signalled since ``clear``)."""
        ...


@runtime_checkable
class Storage(Protocol):
    """Durable job state. All methods are safe to call concurrently.

    Every change of a job also appends to the storage's event log (in the same
    transaction, on a backend that has them): enqueued, started, progress, completed,
    retrying, failed, cancelled, deferred, rescued. Any process reads the log with
    :meth:`read_events` from an id that only grows; :attr:`origin` tells a process the
    entries it wrote itself from those of other processes.
    """

    origin: str
    """A random name of this storage object, stored with each event it writes."""

    async def open(self) -> None:
        """Prepare the backend (connect, migrate); calling it twice is harmless."""
        ...

    async def aclose(self) -> None: ...

    async def enqueue(
        self,
        jobs: Sequence[Job],
        *,
        now: float,
        key_ttl: float | None,
        max_queued: Mapping[str, int] | None = None,
    ) -> list[Job]:
        """Store new pending jobs; returns one job per input, in order.

        A job whose idempotency ``key`` was seen within ``key_ttl`` seconds (forever when
        ``None``) is not stored again: the existing job is returned in its place, which
        callers detect by its different id. Returns only once the jobs are durable.
        ``max_queued`` caps the pending jobs per tenant: a call that would pass a cap
        raises :class:`~hyperqueue.QuotaExceeded` and stores nothing.
        """
        ...

    async def claim(
        self,
        queues: Sequence[str] | None,
        *,
        limit: int,
        now: float,
        lease: float,
        worker: str,
        tasks: Sequence[str] | None = None,
        max_running: Mapping[str, int] | None = None,
    ) -> list[Job]:
        """Take up to ``limit`` due pending jobs and mark them running under a lease.

        Order: priority, then ``run_at``, then first in first out. Each claimed job gets
        ``attempts + 1``, a new fencing ``token`` and ``lease_until = now + lease``
        (``started_at`` waits for :meth:`mark_started`). ``queues=None`` claims from
        every queue; ``tasks`` (``None``: any) limits the claim to tasks the worker can
        run, so a job of an unknown task waits for a worker that knows it.
        ``max_running`` caps the running jobs per tenant, counted across every process.
        No job is ever handed to two claimers whose leases are both live.
        """
        ...

    async def mark_started(self, starts: Sequence[tuple[str, int, float]]) -> list[bool]:
        """Record that the functions of ``(id, token, at)`` jobs were called at ``at``;
        ``False`` where the claim is stale."""
        ...

    async def finish(self, outcomes: Sequence[Outcome], *, now: float) -> list[Job | None]:
        """Apply outcomes of claimed jobs; ``None`` where the fencing token was stale.

        An outcome is accepted only while the job is running with the same token: a
        worker that lost its lease (or whose job was cancelled) cannot overwrite it.
        """
        ...

    async def extend(
        self, leases: Sequence[tuple[str, int]], *, now: float, lease: float
    ) -> list[bool]:
        """Renew the leases of ``(id, token)`` pairs; ``False`` where the claim is lost."""
        ...

    async def rescue(self, *, now: float) -> list[Job]:
        """Return running jobs whose lease expired to pending without spending their
        attempt, or fail those that lost their worker ``max_rescues`` times (see
        :func:`hyperqueue.testing` contract); returns the jobs changed."""
        ...

    async def cancel(self, job_id: str, *, now: float) -> Job:
        """Cancel a pending or running job; raises JobNotFound or InvalidTransition."""
        ...

    async def retry(self, job_id: str, *, now: float) -> Job:
        """Send a failed or cancelled job back to pending with fresh attempts."""
        ...

    async def set_progress(
        self, job_id: str, token: int, progress: object, *, now: float = 0.0
    ) -> bool:
        """Record the progress of a running job (a ``job.progress`` event at ``now``);
        ``False`` if the claim is stale."""
        ...

    async def get(self, job_id: str) -> Job | None: ...

    async def list(
        self,
        *,
        status: JobStatus | None = None,
        queue: str | None = None,
        task: str | None = None,
        tenant: str | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page:
        """Jobs newest first (by id), filtered; ``cursor`` is the previous page's."""
        ...

    # -- search (see hyperqueue._filter) ------------------------------------------------

    async def search(
        self, where: JobFilter, *, cursor: str | None = None, limit: int = 100
    ) -> Page:
        """Jobs that pass ``where`` (:meth:`JobFilter.matches` is the reference), newest
        first (by id); ``cursor`` is the previous page's ``next_cursor`` (a job id)."""
        ...

    async def count(self, where: JobFilter) -> int:
        """The exact number of jobs that pass ``where``."""
        ...

    async def cancel_matching(
        self, where: JobFilter, *, now: float, limit: int, before: str | None = None
    ) -> builtins.list[Job]:
        """Cancel, in one transaction, up to ``limit`` pending or running jobs that pass
        ``where`` with an id below ``before`` (all when ``None``), newest first, each as
        :meth:`cancel` would (steps settle their workflow); returns them as cancelled,
        newest first. The caller loops with ``before`` set to the last id returned until
        fewer than ``limit`` come back, so a job enqueued meanwhile is left alone."""
        ...

    async def retry_matching(
        self, where: JobFilter, *, now: float, limit: int, before: str | None = None
    ) -> builtins.list[Job]:
        """As :meth:`cancel_matching`, for failed or cancelled jobs, each as
        :meth:`retry` would; returns them as pending again."""
        ...

    async def discard_matching(
        self, where: JobFilter, *, limit: int, before: str | None = None
    ) -> builtins.list[Job]:
        """Delete, in one transaction, up to ``limit`` completed, failed or cancelled
        jobs that pass ``where`` with an id below ``before``, newest first; returns them
        as they were. A step of a workflow that still has a step pending or running is
        kept (its result may be an input still to come), as retention keeps it. No event
        is written: the job is gone."""
        ...

    async def error_groups(
        self, where: JobFilter, *, limit: int = 100
    ) -> builtins.list[ErrorGroup]:
        """The failed jobs that pass ``where``, grouped by :func:`hyperqueue.fingerprint`,
        newest group first (by its latest ``finished_at``), at most ``limit`` groups;
        counts are exact."""
        ...

    async def counts(self) -> dict[str, dict[JobStatus, int]]:
        """Number of jobs per queue per status."""
        ...

    async def next_run_at(
        self, queues: Sequence[str] | None, tasks: Sequence[str] | None = None
    ) -> float | None:
        """The earliest ``run_at`` of a pending job in ``queues`` (of ``tasks``), or ``None``."""
        ...

    async def backlog(self) -> builtins.list[TaskBacklog]:
        """Pending jobs per queue and task (the tasks that have any)."""
        ...

    async def read_events(
        self, *, after: int, limit: int = 1000, skip_origin: str | None = None
    ) -> builtins.list[StoredEvent]:
        """Entries of the event log with an id above ``after``, oldest first: the first
        ``limit`` of them whose ``origin`` is not ``skip_origin``.

        ``skip_origin`` lets a process read only what others wrote (its queue's event
        relay passes its own :attr:`origin`) without the backend decoding the entries it
        leaves out. The filter comes before the limit, so fewer than ``limit`` entries
        means there were no more when the read began: a reader that took
        :meth:`last_event_id` first may then resume after that id, past the entries it
        skipped (an id at or below a returned :meth:`last_event_id` is never given to a
        later entry).
        """
        ...

    async def last_event_id(self) -> int:
        """The id of the newest entry of the event log (0 when it is empty)."""
        ...

    async def register_worker(self, info: WorkerInfo) -> None:
        """Record (or renew) a worker pool, so other processes know what it serves."""
        ...

    async def unregister_worker(self, name: str) -> None: ...

    async def workers(self, *, now: float) -> builtins.list[WorkerInfo]:
        """The worker pools alive at ``now`` (their ``expires_at`` is later)."""
        ...

    # -- workflows ---------------------------------------------------------------------

    async def enqueue_workflow(
        self,
        workflow: WorkflowRecord,
        jobs: Sequence[Job],
        *,
        now: float,
        max_queued: Mapping[str, int] | None = None,
    ) -> None:
        """Store a workflow and its steps (jobs with a :class:`~hyperqueue.Step`) at once.

        Steps come as built by the queue: a step with no parents is released (pending,
        not ``blocked``) unless the workflow's ``concurrency`` is full, in which case it
        is stored blocked and released later, in the order the steps were given.
        Whenever a step reaches a final status (finish, cancel, a rescue that fails it),
        the same transaction applies :func:`hyperqueue.transitions.parent_finished` to
        each child, releases the children left waiting on nothing while the workflow has
        free slots, and does the same for steps it cancelled in turn.
        """
        ...

    async def get_workflow(
        self, workflow_id: str
    ) -> tuple[WorkflowRecord, builtins.list[Job]] | None:
        """The workflow and its steps' jobs (in the order of ``steps``), or ``None``."""
        ...

    async def cancel_workflow(self, workflow_id: str, *, now: float) -> builtins.list[Job]:
        """Cancel every step not final yet (blocked, pending or running); returns them.
        Raises :class:`~hyperqueue.WorkflowNotFound`."""
        ...

    async def retry_workflow(self, workflow_id: str, *, now: float) -> builtins.list[Job]:
        """Run again every step that did not complete, and what follows them (other
        completed steps are kept with their results), as
        :func:`hyperqueue.transitions.steps_to_retry` says; returns the steps sent back.
        Each goes back
        blocked on its parents that did not complete, as
        :func:`hyperqueue.transitions.step_retried` says, and is released as at enqueue.
        Raises :class:`~hyperqueue.WorkflowNotFound`, or
        :class:`~hyperqueue.InvalidTransition` while a step is still pending or running.
        """
        ...

    # -- periodic jobs -------------------------------------------------------------------

    async def save_schedule(self, schedule: Schedule, *, now: float) -> Schedule:
        """Create a schedule, or update its definition (task, queue, cron, every,
        timezone, catch_up) keeping its state (paused, handled_until, last_job,
        missed); returns it as stored."""
        ...

    async def schedules(self) -> builtins.list[Schedule]:
        """Every stored schedule, by name."""
        ...

    async def fire_schedule(
        self, name: str, *, slot: float, job: Job | None, missed: int, now: float
    ) -> bool:
        """Mark the schedule handled up to ``slot``, storing ``job`` (if given) as a new
        pending job and adding ``missed`` to its missed count, all at once.

        Returns ``False`` and changes nothing when the schedule is unknown, paused, or
        already handled up to ``slot`` or later: of many processes that fire one slot,
        exactly one stores its job (the job's key is also unique to the slot).
        """
        ...

    async def pause_schedule(self, name: str, *, paused: bool, now: float) -> Schedule:
        """Pause or resume a schedule. Resuming marks it handled up to ``now``, so the
        slots skipped while paused are not reported missed. Raises
        :class:`~hyperqueue.ScheduleNotFound`."""
        ...

    # -- paused queues -------------------------------------------------------------------

    async def pause_queue(self, name: str, *, paused: bool, now: float) -> None:
        """Pause or resume the queue ``name`` for every process on the storage.

        While a queue is paused, :meth:`claim` takes none of its jobs and
        :meth:`next_run_at` ignores them; everything else (enqueue, running jobs, counts)
        goes on. A queue exists by its name, so any name may be paused, even one with no
        jobs yet; pausing twice is harmless. Resuming signals every listener, in every
        process, as an enqueue would.
        """
        ...

    async def paused_queues(self) -> builtins.list[str]:
        """The names of the paused queues, sorted."""
        ...

    def listen(self) -> AbstractAsyncContextManager[WorkListener]:
        """A listener that is signalled whenever new work may have become ready."""
        ...
