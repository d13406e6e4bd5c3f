"""Workflows in SQLite: steps are jobs rows; their graph moves on inside write transactions.

A step's place in its workflow is the ``step`` column (msgspec JSON of hq.Step) with
``workflow`` and ``waiting`` as columns for the queries below. A blocked step has the
status 'blocked', so claims never see it. When a step ends (finish, cancel, a rescue
that fails it), :func:`step_ended` runs in the same transaction: each child is settled
by :func:`hyperqueue.transitions.parent_finished` (counted down, or cancelled, in turn
settling its own children), and :func:`release` hands the workflow's ready steps their
slots. So a crash between a parent's end and its children's release cannot happen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import msgspec

from hyperqueue import (
    InvalidTransition,
    Job,
    JobStatus,
    WorkflowNotFound,
    WorkflowRecord,
    transitions,
)

from ._driver import Connection
from ._rows import COLUMNS, INSERT, job_from_row, job_to_row, step_json, stored_status
from ._sql import NEXT_SEQ, SELECT_JOB, Tx, cancel, check_quotas

__all__ = [
    "cancel_workflow",
    "enqueue_workflow",
    "get_workflow",
    "release",
    "retry_workflow",
    "step_ended",
]

_encode = msgspec.json.Encoder().encode
_decode_steps = msgspec.json.Decoder(dict[str, str]).decode

_ACTIVE = "SELECT count(*) FROM jobs WHERE workflow = ? AND status IN ('pending', 'running')"
_READY = (
    f"SELECT {COLUMNS} FROM jobs WHERE workflow = ? AND status = 'blocked' AND waiting = 0 "
    "ORDER BY seq LIMIT ?"
)
_RELEASE = (
    f"UPDATE jobs SET status = 'pending', run_at = ?, step = ?, seq = {NEXT_SEQ} WHERE id = ?"
)
_SETTLE = (
    "UPDATE jobs SET status = ?, waiting = ?, step = ?, error = ?, finished_at = ? WHERE id = ?"
)


def enqueue_workflow(
    tx: Tx,
    workflow: WorkflowRecord,
    jobs: Sequence[Job],
    now: float,
    max_queued: Mapping[str, int] | None = None,
) -> None:
    conn = tx.conn
    if max_queued:
        check_quotas(conn, jobs, max_queued)
    conn.execute(
        "INSERT INTO workflows (id, created_at, concurrency, steps) VALUES (?, ?, ?, ?)",
        (workflow.id, workflow.created_at, workflow.concurrency, _encode(workflow.steps).decode()),
    )
    free = workflow.concurrency
    rows = []
    for job in jobs:  # released as they are stored: the first ready ones, up to the cap
        step = job.step
        if step is not None and step.waiting == 0 and (free is None or free > 0):
            job = transitions.released(job, now=now)
            free = None if free is None else free - 1
        rows.append(job_to_row(job))
        tx.count(job, stored_status(job), 1)
        tx.event("job.enqueued", now, job)
        if stored_status(job) == "pending":
            tx.work = True
    conn.execute_values(INSERT, rows)


def release(tx: Tx, workflow_id: str, now: float, cap: int | None) -> None:
    """Release the ready steps (parents done) while the workflow has free slots."""
    conn = tx.conn
    if cap is None:
        free = -1  # SQLite: no limit
    else:
        free = cap - conn.execute(_ACTIVE, (workflow_id,)).fetchone()[0]
        if free <= 0:
            return
    for row in conn.execute(_READY, (workflow_id, free)).fetchall():
        job = transitions.released(job_from_row(row), now=now)
        conn.execute(_RELEASE, (job.run_at, step_json(job), job.id))
        tx.moved(job, "blocked", "pending")
        tx.work = True


def step_ended(tx: Tx, job: Job, now: float) -> None:
    """Settle the children of a step that reached a final status, then release."""
    step = job.step
    assert step is not None
    if not step.children and step.concurrency is None:
        return  # nothing waits on it, and it held no slot another step waits for
    conn = tx.conn
    ended = [job]
    while ended:
        parent = ended.pop()
        assert parent.step is not None
        for child_id in parent.step.children:
            row = conn.execute(SELECT_JOB, (child_id,)).fetchone()
            if row is None:
                continue
            child = job_from_row(row)
            after = transitions.parent_finished(child, parent, now=now)
            if after is child:
                continue
            assert after.step is not None
            conn.execute(
                _SETTLE,
                (
                    stored_status(after),
                    after.step.waiting,
                    step_json(after),
                    after.error,
                    after.finished_at,
                    after.id,
                ),
            )
            if after.status is JobStatus.CANCELLED:
                tx.moved(after, "blocked", "cancelled")
                tx.event("job.cancelled", now, after)
                ended.append(after)
    release(tx, step.workflow, now, step.concurrency)


def _record(conn: Connection, workflow_id: str) -> WorkflowRecord | None:
    row = conn.execute(
        "SELECT id, created_at, concurrency, steps FROM workflows WHERE id = ?", (workflow_id,)
    ).fetchone()
    if row is None:
        return None
    return WorkflowRecord(
        id=row[0], created_at=row[1], concurrency=row[2], steps=_decode_steps(row[3])
    )


def _steps(conn: Connection, record: WorkflowRecord) -> list[Job]:
    rows = conn.execute(f"SELECT {COLUMNS} FROM jobs WHERE workflow = ?", (record.id,)).fetchall()
    by_id = {job.id: job for job in map(job_from_row, rows)}
    return [by_id[job_id] for job_id in record.steps.values() if job_id in by_id]


def get_workflow(conn: Connection, workflow_id: str) -> tuple[WorkflowRecord, list[Job]] | None:
    record = _record(conn, workflow_id)
    return None if record is None else (record, _steps(conn, record))


def cancel_workflow(tx: Tx, workflow_id: str, now: float) -> list[Job] | Exception:
    conn = tx.conn
    record = _record(conn, workflow_id)
    if record is None:
        return WorkflowNotFound(workflow_id)
    live = [job.id for job in _steps(conn, record) if not job.status.is_final]
    changed: list[Job] = []
    for job_id in live:
        row = conn.execute(SELECT_JOB, (job_id,)).fetchone()
        job = None if row is None else job_from_row(row)
        if job is not None and not job.status.is_final:
            cancel(tx, job_id, now)  # and, with it, what depends on it
    for job_id in live:
        row = conn.execute(SELECT_JOB, (job_id,)).fetchone()
        if row is not None:
            changed.append(job_from_row(row))
    return changed


def retry_workflow(tx: Tx, workflow_id: str, now: float) -> list[Job] | Exception:
    conn = tx.conn
    record = _record(conn, workflow_id)
    if record is None:
        return WorkflowNotFound(workflow_id)
    steps = _steps(conn, record)
    for job in steps:
        if not job.status.is_final:
            return InvalidTransition(workflow_id, f"{job.status} (step {job.id})", "retry")
    rerun = transitions.steps_to_retry(steps)
    if not rerun:
        return InvalidTransition(workflow_id, "completed", "retry")
    done = {job.id for job in steps if job.id not in rerun}
    again: list[Job] = []
    for job in steps:
        if job.id in done:
            continue
        assert job.step is not None
        waiting = sum(1 for parent in job.step.parents if parent not in done)
        after = transitions.step_retried(job, waiting=waiting, now=now)
        conn.execute(
            "UPDATE jobs SET status = 'blocked', waiting = ?, step = ?, attempts = 0, "
            "rescues = 0, run_at = ?, result = NULL, error = NULL, traceback = NULL, "
            "progress = NULL, started_at = NULL, finished_at = NULL, lease_until = NULL "
            "WHERE id = ?",
            (waiting, step_json(after), now, job.id),
        )
        tx.moved(after, job.status.value, "blocked")
        tx.event("job.enqueued", now, after)
        again.append(after)
    release(tx, workflow_id, now, record.concurrency)
    return again
