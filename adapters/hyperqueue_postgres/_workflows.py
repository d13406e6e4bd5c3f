"""Workflows on PostgreSQL: steps are job rows; their graph moves inside write
transactions.

A step's place in its workflow is the ``step`` column (JSONB of hq.Step), with
``workflow`` and ``waiting`` as columns for the queries below. A blocked step has the
status 'blocked', so claims never see it. Every move of a workflow's graph first locks
the workflow's row (see :meth:`._tx.Tx.lock_flows`): so when a step ends (finish,
cancel, a rescue that fails it), :func:`step_ended` settles its children with
:func:`hyperqueue.transitions.parent_finished` and :func:`release` hands out free slots
in the same transaction, one transaction per workflow at a time, on any host.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from hyperqueue import (
    InvalidTransition,
    Job,
    JobStatus,
    WorkflowNotFound,
    WorkflowRecord,
    transitions,
)

from ._rows import COLUMNS, INSERT, insert_args, job_from_row, stored_status
from ._tx import Tx, check_quotas

__all__ = [
    "cancel_job",
    "cancel_workflow",
    "enqueue_workflow",
    "get_workflow",
    "release",
    "retry_workflow",
    "step_ended",
]

_encode = msgspec.json.Encoder().encode
_decode_steps = msgspec.json.Decoder(dict[str, str]).decode

_ACTIVE = "SELECT count(*) FROM hq_jobs WHERE workflow = $1 AND status IN ('pending', 'running')"
_READY = (
    f"SELECT {COLUMNS} FROM hq_jobs WHERE workflow = $1 AND status = 'blocked' "
    "AND waiting = 0 ORDER BY seq LIMIT $2"
)
_RECORD = "SELECT id, created_at, concurrency, steps FROM hq_workflows WHERE id = $1"


async def enqueue_workflow(
    tx: Tx,
    workflow: WorkflowRecord,
    jobs: Sequence[Job],
    now: float,
    max_queued: Mapping[str, int] | None = None,
) -> None:
    conn = tx.conn
    if max_queued:
        await check_quotas(conn, jobs, max_queued)
    await conn.execute(
        "INSERT INTO hq_workflows (id, created_at, concurrency, steps) VALUES ($1, $2, $3, $4)",
        workflow.id,
        workflow.created_at,
        workflow.concurrency,
        _encode(workflow.steps).decode(),
    )
    free = workflow.concurrency
    stored: list[Job] = []
    for job in jobs:  # released as they are stored: the first ready ones, up to the cap
        if job.status is not JobStatus.PENDING:
            job = msgspec.structs.replace(job, status=JobStatus.PENDING)
        step = job.step
        if step is not None and step.waiting == 0 and (free is None or free > 0):
            job = transitions.released(job, now=now)
            free = None if free is None else free - 1
        stored.append(job)
        status = stored_status(job)
        tx.count(job, status, 1)
        tx.event("job.enqueued", now, job)
        if status == "pending":
            tx.work = True
    if stored:
        await conn.execute(INSERT, *insert_args(stored))


async def release(tx: Tx, workflow_id: str, now: float, cap: int | None) -> None:
    """Release the ready steps (parents done) while the workflow has free slots."""
    conn = tx.conn
    free: int | None = None
    if cap is not None:
        free = cap - await conn.fetchval(_ACTIVE, workflow_id)
        if free <= 0:
            return
    rows = await conn.fetch(_READY, workflow_id, free)
    released = [transitions.released(job_from_row(row), now=now) for row in rows]
    for job in released:
        tx.moved(job, "blocked", "pending")
        tx.work = True
    await tx.save((job, True) for job in released)


async def step_ended(tx: Tx, job: Job, now: float) -> None:
    """Settle the children of a step that reached a final status, then release."""
    step = job.step
    assert step is not None
    if not step.children and step.concurrency is None:
        return  # nothing waits on it, and it held no slot another step waits for
    ended = [job]
    while ended:
        parent = ended.pop()
        assert parent.step is not None
        if not parent.step.children:
            continue
        children = await tx.lock(parent.step.children)
        changed: list[tuple[Job, bool]] = []
        for child_id in parent.step.children:
            child = children.get(child_id)
            if child is None:
                continue
            after = transitions.parent_finished(child, parent, now=now)
            if after is child:
                continue
            changed.append((after, False))
            if after.status is JobStatus.CANCELLED:
                tx.moved(after, "blocked", "cancelled")
                tx.event("job.cancelled", now, after)
                ended.append(after)
        await tx.save(changed)
    await release(tx, step.workflow, now, step.concurrency)


async def cancel_job(tx: Tx, before: Job, now: float) -> Job:
    """Cancel a pending or running job whose row (and workflow) the caller locked;
    for a step, settle what depends on it."""
    job = transitions.cancelled(before, now=now)
    await tx.save([(job, False)])
    tx.moved(job, stored_status(before), "cancelled")
    tx.event("job.cancelled", now, job)
    if job.step is not None:
        await step_ended(tx, job, now)
    return job


def _record_from(row: Any) -> WorkflowRecord:
    return WorkflowRecord(
        id=row[0], created_at=row[1], concurrency=row[2], steps=_decode_steps(row[3])
    )


async def _steps(conn: Any, record: WorkflowRecord) -> list[Job]:
    rows = await conn.fetch(f"SELECT {COLUMNS} FROM hq_jobs WHERE workflow = $1", record.id)
    by_id = {job.id: job for job in map(job_from_row, rows)}
    return [by_id[job_id] for job_id in record.steps.values() if job_id in by_id]


async def get_workflow(conn: Any, workflow_id: str) -> tuple[WorkflowRecord, list[Job]] | None:
    async with conn.transaction(readonly=True, isolation="repeatable_read"):
        row = await conn.fetchrow(_RECORD, workflow_id)
        if row is None:
            return None
        record = _record_from(row)
        return record, await _steps(conn, record)


async def _locked_record(tx: Tx, workflow_id: str) -> WorkflowRecord:
    row = await tx.conn.fetchrow(_RECORD + " FOR NO KEY UPDATE", workflow_id)
    if row is None:
        raise WorkflowNotFound(workflow_id)
    return _record_from(row)


async def cancel_workflow(tx: Tx, workflow_id: str, now: float) -> list[Job]:
    record = await _locked_record(tx, workflow_id)
    live = [job.id for job in await _steps(tx.conn, record) if not job.status.is_final]
    if not live:
        return []
    for job_id in live:
        job = (await tx.lock([job_id])).get(job_id)
        if job is not None and not job.status.is_final:  # else cancelled with a parent
            await cancel_job(tx, job, now)
    after = await tx.lock(live)
    return [after[job_id] for job_id in live if job_id in after]


async def retry_workflow(tx: Tx, workflow_id: str, now: float) -> list[Job]:
    record = await _locked_record(tx, workflow_id)
    steps = await _steps(tx.conn, record)
    for job in steps:
        if not job.status.is_final:
            raise InvalidTransition(workflow_id, f"{job.status} (step {job.id})", "retry")
    rerun = transitions.steps_to_retry(steps)
    if not rerun:
        raise InvalidTransition(workflow_id, "completed", "retry")
    done = {job.id for job in steps if job.id not in rerun}
    again: list[Job] = []
    for job in steps:
        if job.id in done:
            continue
        assert job.step is not None
        waiting = sum(1 for parent in job.step.parents if parent not in done)
        after = transitions.step_retried(job, waiting=waiting, now=now)
        tx.moved(after, job.status.value, "blocked")
        tx.event("job.enqueued", now, after)
        again.append(after)
    await tx.save((job, False) for job in again)
    await release(tx, workflow_id, now, record.concurrency)
    return again
