"""Job transitions: the one place that says what a job becomes, for every backend.

A public module for storage backends (``from hyperqueue import transitions``); an
application has no need of it.

Each function takes the job as stored and returns the job after the change, with the
tag of the event the change writes to the storage's event log. Backends decide *which*
rows change (a claim query, a fencing-token check); these functions decide *how*, so
memory, SQLite and PostgreSQL cannot drift apart on attempts, rescues or timestamps.
"""

from __future__ import annotations

from collections.abc import Sequence

from msgspec.structs import replace

from ._models import Job, JobStatus, Outcome, Schedule

__all__ = [
    "EVENT_OF_STATUS",
    "SLOT_KEY_TTL",
    "cancelled",
    "claimed",
    "finished",
    "outcome_event",
    "parent_finished",
    "released",
    "schedule_fired",
    "schedule_fires",
    "schedule_paused",
    "schedule_saved",
    "rescued",
    "retried",
    "started",
    "step_retried",
    "steps_to_retry",
]

_PENDING = JobStatus.PENDING
_RUNNING = JobStatus.RUNNING
_FAILED = JobStatus.FAILED
_COMPLETED = JobStatus.COMPLETED

SLOT_KEY_TTL = 86_400.0
"""Seconds a periodic job's slot key is kept (the schedule's ``handled_until`` is what
keeps a slot from firing twice; the key is a second guard, and a key kept forever would
leave a row per slot behind)."""

EVENT_OF_STATUS = {
    JobStatus.COMPLETED: "job.completed",
    JobStatus.FAILED: "job.failed",
    JobStatus.CANCELLED: "job.cancelled",
}


def claimed(job: Job, *, now: float, lease: float, worker: str) -> Job:
    """Taken by a worker: an attempt begins and a new fencing token fences the old one.

    ``started_at`` is left alone: the job starts when its function is called.
    """
    return replace(
        job,
        status=_RUNNING,
        attempts=job.attempts + 1,
        token=job.token + 1,
        lease_until=now + lease,
        worker=worker,
    )


def started(job: Job, at: float) -> Job:
    """The worker called the task function at ``at``."""
    return replace(job, started_at=at)


def finished(job: Job, outcome: Outcome, *, now: float) -> Job:
    """A claimed job's outcome applied (the caller checked the token)."""
    started_at = job.started_at if outcome.started_at is None else outcome.started_at
    if outcome.status is _PENDING:
        return replace(
            job,
            status=_PENDING,
            attempts=job.attempts - 1 if outcome.released else job.attempts,
            run_at=now if outcome.run_at is None else outcome.run_at,
            error=job.error if outcome.error is None else outcome.error,
            traceback=job.traceback if outcome.traceback is None else outcome.traceback,
            started_at=started_at,
            lease_until=None,
        )
    return replace(
        job,
        status=outcome.status,
        result=outcome.result,
        error=outcome.error,
        traceback=outcome.traceback,
        started_at=started_at,
        finished_at=now,
        lease_until=None,
    )


def outcome_event(outcome: Outcome) -> str | None:
    """The event an outcome writes: none for a job handed back at shutdown."""
    if outcome.status is _PENDING:
        if outcome.released:
            return None if outcome.run_at is None else "job.deferred"
        return "job.retrying"
    return EVENT_OF_STATUS[outcome.status]


def rescued(job: Job, *, now: float) -> Job:
    """A running job whose lease expired: its worker is lost (crash, kill, freeze).

    Losing a worker spends no attempt: the job is pending again with the attempt given
    back. The ``max_rescues``-th loss fails it, with an error that says so.
    """
    rescues = job.rescues + 1
    cause = f"lease expired on worker {job.worker!r}"
    if rescues >= job.max_rescues:
        return replace(
            job,
            status=_FAILED,
            rescues=rescues,
            error=f"lost its worker {rescues} times (the last time: {cause}); "
            "a job that kills or freezes its worker is not run again",
            traceback=None,
            finished_at=now,
            lease_until=None,
        )
    return replace(
        job,
        status=_PENDING,
        attempts=max(job.attempts - 1, 0),
        rescues=rescues,
        run_at=now,
        error=cause,
        lease_until=None,
    )


def cancelled(job: Job, *, now: float) -> Job:
    step = job.step
    if step is not None and step.blocked:  # a blocked step is released by its end
        step = replace(step, blocked=False)
    return replace(job, status=JobStatus.CANCELLED, finished_at=now, lease_until=None, step=step)


def retried(job: Job, *, now: float) -> Job:
    """A failed or cancelled job sent back with fresh attempts and rescues."""
    return replace(
        job,
        status=_PENDING,
        attempts=0,
        rescues=0,
        run_at=now,
        result=None,
        error=None,
        traceback=None,
        progress=None,
        started_at=None,
        finished_at=None,
        lease_until=None,
    )


# -- workflow steps ------------------------------------------------------------------
#
# A step waits ``blocked`` until its parents are final and its workflow has a free slot.
# Backends find the rows (children of a step that just ended, the ready steps of its
# workflow, its count of active steps); these functions say what each becomes.


def parent_finished(child: Job, parent: Job, *, now: float) -> Job:
    """A blocked step after one of its parents reached a final status.

    A parent that completed (or any parent, for a step with
    ``on_parent_failure="run"``) is one fewer to wait for; a parent that failed or
    was cancelled cancels the step, with an error naming that parent. A step that is
    not blocked any more (released, final) is left alone.
    """
    step = child.step
    if step is None or not step.blocked or child.status is not _PENDING:
        return child
    if parent.status is _COMPLETED or step.on_parent_failure == "run":
        return replace(child, step=replace(step, waiting=max(step.waiting - 1, 0)))
    name = parent.step.name if parent.step is not None else parent.id
    return replace(
        child,
        status=JobStatus.CANCELLED,
        error=f"parent step {name!r} {parent.status.value}",
        finished_at=now,
        step=replace(step, blocked=False),
    )


def released(job: Job, *, now: float) -> Job:
    """A blocked step whose parents are all final, given a slot of its workflow: it can
    be claimed from now (or from its own later ``run_at``)."""
    assert job.step is not None
    return replace(job, run_at=max(job.run_at, now), step=replace(job.step, blocked=False))


def step_retried(job: Job, *, waiting: int, now: float) -> Job:
    """A step that did not complete, sent back by a workflow retry: blocked on the
    ``waiting`` parents that did not complete either, released like a new step."""
    assert job.step is not None
    return replace(retried(job, now=now), step=replace(job.step, waiting=waiting, blocked=True))


def steps_to_retry(steps: Sequence[Job]) -> set[str]:
    """The ids of a workflow's steps that a retry runs again: every step that did not
    complete, and everything that follows one of them (a join that ran with a failed
    parent's ``None`` runs again with the new result)."""
    children = {job.id: job.step.children if job.step is not None else () for job in steps}
    todo = [job.id for job in steps if job.status is not _COMPLETED]
    again = set(todo)
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in again:
                again.add(child)
                todo.append(child)
    return again


# -- periodic schedules --------------------------------------------------------------


def schedule_saved(new: Schedule, old: Schedule | None, *, now: float) -> Schedule:
    """A definition saved by a process: its fields, with the stored state kept."""
    if old is not None:
        new = replace(
            new,
            paused=old.paused,
            handled_until=old.handled_until,
            last_job=old.last_job,
            missed=old.missed,
        )
    return replace(new, updated_at=now, next_at=None)


def schedule_fires(schedule: Schedule | None, slot: float) -> bool:
    """Whether a fire of ``slot`` goes through: the schedule exists, is not paused, and
    is not handled up to ``slot`` yet (so of many processes, one gets through)."""
    if schedule is None or schedule.paused:
        return False
    return schedule.handled_until is None or schedule.handled_until < slot


def schedule_fired(
    schedule: Schedule, *, slot: float, job_id: str | None, missed: int, now: float
) -> Schedule:
    """Handled up to ``slot``, with the job it stored (if any) and the slots missed."""
    return replace(
        schedule,
        handled_until=slot,
        last_job=schedule.last_job if job_id is None else job_id,
        missed=schedule.missed + missed,
        updated_at=now,
    )


def schedule_paused(schedule: Schedule, *, paused: bool, now: float) -> Schedule:
    """Paused, or resumed: a resumed schedule is handled up to ``now``, so the slots
    skipped while it was paused are not reported missed."""
    handled = schedule.handled_until
    if schedule.paused and not paused:
        handled = now if handled is None else max(handled, now)
    return replace(schedule, paused=paused, handled_until=handled, updated_at=now)
