"""Search, exact counts, bulk actions and error groups in SQL (see hyperqueue.JobFilter,
whose ``matches`` is the reference these queries agree with).

A filter becomes one ``WHERE`` condition with numbered parameters. Listings walk the
primary key newest first (keyset, no offset); a count with only status, queue and exact
task sums the count deltas every write appends, anything else counts the rows (or, for
an estimate, asks the planner). A bulk
action takes its batch in one transaction: the workflows of the batch locked first (as
every writer does), then each job changed by the same function as the one-job
operation, so events, counts and workflow steps follow. A job another process changed
meanwhile (it completed, it was deleted) is passed over and the batch topped up, so a
short batch always means nothing is left. Fingerprints are computed in Python
(:func:`hyperqueue.fingerprint`) and stored with the token of the claim that failed the
job (schema V2): :func:`fill_fingerprints` fills in those missing.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import hyperqueue as hq
from hyperqueue import transitions

from . import _sql
from ._retention import _DROP_FLOWS
from ._rows import COLUMNS, job_from_row
from ._tx import Tx

__all__ = [
    "FILL_BATCH",
    "cancel_matching",
    "count",
    "discard_matching",
    "error_groups",
    "estimate",
    "fill_fingerprints",
    "retry_matching",
    "search",
]

FILL_BATCH = 2000
"""Fingerprints filled in per transaction."""

_FAILED_AT = "finished_at"  # set on every failed job
_PENDING = hq.JobStatus.PENDING
_RUNNING = hq.JobStatus.RUNNING
_RETRYABLE = (hq.JobStatus.FAILED, hq.JobStatus.CANCELLED)
# a step stays while its workflow runs (its result may be an input still to come), as
# retention keeps it
_NOT_LIVE_STEP = (
    "(workflow IS NULL OR NOT EXISTS (SELECT 1 FROM hq_jobs AS live "
    "WHERE live.workflow = hq_jobs.workflow "
    "AND live.status IN ('pending', 'running', 'blocked')))"
)


class _Where:
    """A condition being built, with its numbered parameters."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.args: list[Any] = []

    def arg(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}"

    @property
    def sql(self) -> str:
        return " AND ".join(self.parts) or "true"


def _where(where: hq.JobFilter) -> _Where:
    out = _Where()
    parts = out.parts
    if where.status:
        # literals (status values, never user text): a generic plan of a prepared
        # statement can then use the partial indexes on status, a parameter would hide them
        stored = where.stored_statuses()
        parts.append(f"status = '{stored[0]}'" if len(stored) == 1 else f"status IN {stored}")
    for name in ("queue", "tenant"):
        value = getattr(where, name)
        if value is not None:
            parts.append(f"{name} = {out.arg(value)}")
    if where.task is not None:
        like = where.task_like()
        if like is None:
            parts.append(f"task = {out.arg(where.task)}")
        else:
            parts.append(f"task LIKE {out.arg(like)}")
    if where.error is not None:
        parts.append(f"error ILIKE {out.arg(hq.JobFilter.contains_like(where.error))}")
    for word in where.words:
        n = out.arg(hq.JobFilter.contains_like(word))
        parts.append(f"(task ILIKE {n} OR error ILIKE {n})")
    if where.since is not None:
        parts.append(f"created_at >= {out.arg(where.since)}")
    if where.until is not None:
        parts.append(f"created_at < {out.arg(where.until)}")
    if where.fingerprint is not None:
        fp = out.arg(where.fingerprint)
        parts.append(f"status = 'failed' AND fingerprint = {fp} AND fingerprint_token = token")
    return out


async def search(conn: Any, where: hq.JobFilter, cursor: str | None, limit: int) -> list[hq.Job]:
    found = _where(where)
    if cursor is not None:
        found.parts.append(f"id < {found.arg(cursor)}")
    sql = f"SELECT {COLUMNS} FROM hq_jobs WHERE {found.sql} ORDER BY id DESC LIMIT {limit:d}"
    return [job_from_row(row) for row in await conn.fetch(sql, *found.args)]


async def count(conn: Any, where: hq.JobFilter) -> int:
    found = _where(where)
    simple = hq.JobFilter(status=where.status, queue=where.queue, task=where.task)
    if where == simple and where.task_like() is None:
        # the count deltas every write appends: no job row is read
        sql = f"SELECT coalesce(sum(n), 0) FROM hq_job_counts WHERE {found.sql}"
    else:
        sql = f"SELECT count(*) FROM hq_jobs WHERE {found.sql}"
    return int(await conn.fetchval(sql, *found.args))


async def estimate(conn: Any, where: hq.JobFilter) -> int:
    """``count`` without reading job rows: exact from the count deltas for a filter of
    status, queue and task alone, else the planner's estimate of the rows it takes
    (from the table's statistics, as of its last ANALYZE)."""
    simple = hq.JobFilter(status=where.status, queue=where.queue, task=where.task)
    if where == simple and where.task_like() is None:
        return await count(conn, where)
    found = _where(where)
    plan = await conn.fetchval(
        f"EXPLAIN (FORMAT JSON) SELECT 1 FROM hq_jobs WHERE {found.sql}", *found.args
    )
    return int(json.loads(plan)[0]["Plan"]["Plan Rows"])


async def _each(
    tx: Tx,
    where: hq.JobFilter,
    action: str,
    before: str | None,
    limit: int,
    change: Callable[[Tx, list[str]], Awaitable[list[hq.Job]]],
    extra: str = "",
) -> list[hq.Job]:
    """Change up to ``limit`` jobs that pass, newest first below ``before``, a slice of
    candidates at a time until the batch is full or none is left."""
    narrowed = where.for_action(action)
    out: list[hq.Job] = []
    while narrowed is not None and len(out) < limit:
        found = _where(narrowed)
        if extra:
            found.parts.append(extra)
        if before is not None:
            found.parts.append(f"id < {found.arg(before)}")
        sql = (
            f"SELECT id FROM hq_jobs WHERE {found.sql} ORDER BY id DESC LIMIT {limit - len(out):d}"
        )
        ids = [row[0] for row in await tx.conn.fetch(sql, *found.args)]
        if not ids:
            break
        await tx.lock_flows_of(ids)  # workflows before their steps, as every writer does
        out.extend(await change(tx, ids))
        before = ids[-1]
    return out


async def _cancel(tx: Tx, ids: list[str], now: float) -> list[hq.Job]:
    """Cancel the jobs of ``ids`` still pending or running: plain jobs with one lock and
    one write for all, as :func:`._workflows.cancel_job` does each; a workflow step by
    itself (its end settles the steps after it, which may be in this batch too)."""
    locked = await tx.lock(ids)
    out: list[hq.Job] = []
    plain: list[tuple[hq.Job, bool]] = []
    for job_id in ids:
        before = locked.get(job_id)
        if before is None or before.step is not None:
            if before is not None and (job := await _maybe(_sql.cancel, tx, job_id, now)):
                out.append(job)
            continue
        if before.status is not _PENDING and before.status is not _RUNNING:
            continue  # another process finished it since it was found: passed over
        job = transitions.cancelled(before, now=now)
        plain.append((job, False))
        tx.moved(job, before.status.value, "cancelled")
        tx.event("job.cancelled", now, job)
        out.append(job)
    await tx.save(plain)
    return out


async def _retry(tx: Tx, ids: list[str], now: float) -> list[hq.Job]:
    """Send the jobs of ``ids`` still failed or cancelled back to pending, as
    :func:`._sql.retry` does each, with one lock and one write for all."""
    locked = await tx.lock(ids)
    out: list[hq.Job] = []
    for job_id in ids:
        before = locked.get(job_id)
        if before is None or before.status not in _RETRYABLE:
            continue  # another process changed it since it was found: passed over
        job = transitions.retried(before, now=now)
        tx.moved(job, before.status.value, "pending")
        tx.event("job.enqueued", now, job)
        out.append(job)
    await tx.save([(job, True) for job in out])
    tx.work = tx.work or bool(out)
    return out


async def _maybe(
    fn: Callable[[Tx, str, float], Awaitable[hq.Job]], tx: Tx, job_id: str, now: float
) -> hq.Job | None:
    try:
        return await fn(tx, job_id, now)
    except (hq.JobNotFound, hq.InvalidTransition):
        return None  # another process changed it since it was found: passed over


async def cancel_matching(
    tx: Tx, where: hq.JobFilter, now: float, limit: int, before: str | None
) -> list[hq.Job]:
    return await _each(tx, where, "cancel", before, limit, lambda t, ids: _cancel(t, ids, now))


async def retry_matching(
    tx: Tx, where: hq.JobFilter, now: float, limit: int, before: str | None
) -> list[hq.Job]:
    return await _each(tx, where, "retry", before, limit, lambda t, ids: _retry(t, ids, now))


_DELETE = f"""
DELETE FROM hq_jobs WHERE id IN (
    SELECT id FROM hq_jobs WHERE id = ANY($1::text[])
    AND status IN ('completed', 'failed', 'cancelled') AND {_NOT_LIVE_STEP}
    FOR UPDATE SKIP LOCKED
) RETURNING {COLUMNS}
"""


async def _delete(tx: Tx, ids: list[str]) -> list[hq.Job]:
    jobs = [job_from_row(row) for row in await tx.conn.fetch(_DELETE, ids)]
    for job in jobs:
        key = (job.queue, job.task, job.status.value)
        tx.counts[key] = tx.counts.get(key, 0) - 1
    flows = sorted({job.step.workflow for job in jobs if job.step is not None})
    if flows:  # workflows whose every step is gone
        await tx.conn.execute(_DROP_FLOWS, flows)
    jobs.sort(key=lambda job: job.id, reverse=True)
    return jobs


async def discard_matching(
    tx: Tx, where: hq.JobFilter, limit: int, before: str | None
) -> list[hq.Job]:
    return await _each(tx, where, "discard", before, limit, _delete, _NOT_LIVE_STEP)


_FILL = """
UPDATE hq_jobs AS j SET fingerprint = u.fp, fingerprint_token = u.token
FROM unnest($1::text[], $2::text[], $3::bigint[]) AS u (id, fp, token)
WHERE j.id = u.id AND j.token = u.token
"""


async def fill_fingerprints(tx: Tx) -> int:
    """Compute and store the fingerprint of up to :data:`FILL_BATCH` failed jobs that
    lack one (or whose one is from an earlier failure); returns how many it looked at."""
    rows = await tx.conn.fetch(
        "SELECT id, task, error, token FROM hq_jobs "
        "WHERE status = 'failed' AND fingerprint_token IS DISTINCT FROM token LIMIT $1",
        FILL_BATCH,
    )
    if rows:
        await tx.conn.execute(
            _FILL,
            [row[0] for row in rows],
            [hq.fingerprint(row[1], row[2]) for row in rows],
            [row[3] for row in rows],
        )
    return len(rows)


async def error_groups(conn: Any, where: hq.JobFilter, limit: int) -> list[hq.ErrorGroup]:
    """Groups of the failed jobs that pass ``where`` (fingerprints filled in first)."""
    narrowed = where.narrowed(status=(hq.JobStatus.FAILED,))
    if narrowed is None:
        return []
    found = _where(narrowed)
    found.parts.append("fingerprint_token = token")
    rows = await conn.fetch(
        f"SELECT fingerprint, count(*), min({_FAILED_AT}), max({_FAILED_AT}) FROM hq_jobs "
        f"WHERE {found.sql} GROUP BY fingerprint ORDER BY 4 DESC",
        *found.args,
    )
    if len(rows) > limit:  # keep the ties at the cut: the sample's id breaks them
        rows = [row for row in rows if row[3] >= rows[limit - 1][3]]
    fp = found.arg(None)
    sample_sql = (
        f"SELECT {COLUMNS} FROM hq_jobs WHERE {found.sql} AND fingerprint = {fp} "
        f"ORDER BY {_FAILED_AT} DESC, id DESC LIMIT 1"
    )
    groups: list[hq.ErrorGroup] = []
    for print_, n, first_at, last_at in rows:
        sample = job_from_row(await conn.fetchrow(sample_sql, *found.args[:-1], print_))
        groups.append(
            hq.ErrorGroup.of(print_, sample, count=int(n), first_at=first_at, last_at=last_at)
        )
    groups.sort(key=lambda g: (g.last_at, g.sample_job_id), reverse=True)
    return groups[:limit]
