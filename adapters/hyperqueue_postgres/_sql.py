"""The statements, and the functions that run them.

Write functions take a :class:`._tx.Tx` (an open transaction) and lock the rows they
change (``FOR UPDATE``; a claim ``FOR UPDATE SKIP LOCKED``); what a job becomes is
decided by :mod:`hyperqueue.transitions`, as in every backend, and written back with
one batched statement. Writes that need no rule beyond a fencing token (claim, start,
lease, progress) are single statements, each its own transaction: one round trip.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import msgspec
from msgspec.structs import replace

from hyperqueue import (
    InvalidTransition,
    Job,
    JobNotFound,
    JobStatus,
    Outcome,
    TaskBacklog,
    WorkerInfo,
    transitions,
)

from . import _workflows
from ._rows import COLUMNS, INSERT, encode, insert_args, job_from_row, prefixed, to_json
from ._tx import TENANT_RUNNING_LOCK, Tx, check_quotas, lock_names

__all__ = ["claim", "enqueue", "finish", "rescue"]

_PENDING = JobStatus.PENDING
_RUNNING = JobStatus.RUNNING
_SEQ = len(COLUMNS.split(","))  # index of seq after the job columns in claim rows

# -- enqueue -------------------------------------------------------------------------

# A key is taken if it is new or expired; a live key of another job is left alone (a
# concurrent enqueue of the same key waits here for the other to commit, then sees it).
_TAKE_KEYS = """
INSERT INTO hq_job_keys (scope, job_id, expires_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::float8[])
ON CONFLICT (scope) DO UPDATE SET job_id = excluded.job_id, expires_at = excluded.expires_at
WHERE hq_job_keys.expires_at IS NOT NULL AND hq_job_keys.expires_at <= $4
RETURNING scope
"""
_KEYED_JOBS = (
    f"SELECT k.scope, {prefixed('j')} FROM hq_job_keys AS k "
    "LEFT JOIN hq_jobs AS j ON j.id = k.job_id WHERE k.scope = ANY($1::text[])"
)
_RETAKE_KEYS = """
UPDATE hq_job_keys AS k SET job_id = u.job_id, expires_at = u.expires_at
FROM unnest($1::text[], $2::text[], $3::float8[]) AS u(scope, job_id, expires_at)
WHERE k.scope = u.scope
"""


async def enqueue(
    tx: Tx,
    jobs: Sequence[Job],
    now: float,
    key_ttl: float | None,
    max_queued: Mapping[str, int] | None = None,
) -> list[Job]:
    conn = tx.conn
    if max_queued:
        await check_quotas(conn, jobs, max_queued)
    out: list[Job] = []
    first: dict[str, int] = {}  # scope -> index in out of the first job with it
    same: list[tuple[int, int]] = []  # (index, index of the first job of its key)
    keys: list[tuple[str, str, float | None]] = []
    expires = None if key_ttl is None else now + key_ttl
    for job in jobs:
        if job.status is not _PENDING:
            job = replace(job, status=_PENDING)
        if job.key is not None:
            scope = to_json([job.tenant, job.key])
            assert scope is not None
            if scope in first:
                same.append((len(out), first[scope]))
            else:
                first[scope] = len(out)
                keys.append((scope, job.id, expires))
        out.append(job)
    existing: dict[int, Job] = {}
    if keys:
        args = [[k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]]
        won = {row[0] for row in await conn.fetch(_TAKE_KEYS, *args, now)}
        lost = [k for k in keys if k[0] not in won]
        if lost:
            rows = await conn.fetch(_KEYED_JOBS, [k[0] for k in lost])
            found = {row[0]: row for row in rows}
            gone = []  # keys whose job was deleted: free again
            for scope, _, _ in lost:
                row = found.get(scope)
                if row is not None and row[1] is not None:
                    existing[first[scope]] = job_from_row(row, 1)
                else:
                    gone.append(scope)
            if gone:
                mine = [k for k in lost if k[0] in gone]
                await conn.execute(
                    _RETAKE_KEYS, [k[0] for k in mine], [k[1] for k in mine], [k[2] for k in mine]
                )
    for index, job in existing.items():
        out[index] = job
    for index, of in same:
        out[index] = out[of]
    duplicate = {index for index, _ in same}
    fresh = [job for i, job in enumerate(out) if i not in existing and i not in duplicate]
    if fresh:
        await conn.execute(INSERT, *insert_args(fresh))
        for job in fresh:
            tx.count(job, "pending", 1)
            tx.event("job.enqueued", now, job)
        tx.work = True
    return out


# -- claim ---------------------------------------------------------------------------

_QUICK = "(SELECT set_config('synchronous_commit', 'off', true)) AS quick"
"""Joined into the statements of claims, starts and lease renewals: their transaction
commits without waiting for the WAL flush (2-4 ms per commit on this kind of disk, and
far more at its tail), which is on the path from enqueue to start. Losing one of them in
a database crash only undoes it: the job is pending again, as if it had never been
claimed, and the late finish of whoever ran it is refused by its token (delivery stays
at least once). Enqueues, finishes and every other write still wait for the flush, and
flushing one of those flushes every earlier commit too."""

_NOT_PAUSED = "queue NOT IN (SELECT name FROM hq_paused_queues)"
"""Leaves out the jobs of paused queues (a hashed look-up of a table of a few rows)."""


@lru_cache(maxsize=32)
def _due(queues: bool, tasks: bool, first: int) -> tuple[str, int]:
    """The WHERE clause of due pending jobs, its parameters numbered from ``first``
    (now, then queues and tasks if filtered); returns it and the next number."""
    where = f"status = 'pending' AND run_at <= ${first} AND {_NOT_PAUSED}"
    n = first + 1
    if queues:
        where += f" AND queue = ANY(${n}::text[])"
        n += 1
    if tasks:
        where += f" AND task = ANY(${n}::text[])"
        n += 1
    return where, n


# Fair share between tenants: a claim's order is (priority, k, run_at, seq), k the
# tenant's running jobs plus the job's place among the due jobs of its tenant and
# priority (jobs without a tenant are one tenant). With no job of a tenant pending, that
# is (priority, run_at, seq): the FIFO statement, gated on one probe of hq_jobs_tenant,
# claims then, and says when the probe found such jobs so the caller runs the fair
# statement instead.
# (A scalar subquery in the order of hq_jobs_tenant: an EXISTS would lose its ORDER BY
# and could become a scan of the table whenever statistics say many rows match.)
_TENANTED = """
tenanted AS (
    SELECT (
        SELECT tenant FROM hq_jobs WHERE tenant IS NOT NULL AND status = 'pending'
        ORDER BY tenant LIMIT 1
    ) IS NOT NULL AS yes
)"""

_FIFO = """
WITH {tenanted},
picked AS (
    SELECT id FROM hq_jobs WHERE {where} AND tenant IS NULL AND NOT (SELECT yes FROM tenanted)
    ORDER BY priority, tenant, run_at, seq LIMIT ${limit} FOR UPDATE SKIP LOCKED
),
{claimed}
SELECT claimed.*, tenanted.yes FROM tenanted CROSS JOIN {quick} LEFT JOIN claimed ON true
"""

# The fair statement. ``lines`` finds the tenants with pending jobs per priority by a
# loose scan of hq_jobs_order (one seek per tenant: NULLs sort last, so the scan stops
# where the jobs without a tenant begin; its ORDER BY names the whole index order, so
# the planner does not walk hq_jobs_tenant instead, over other priorities' jobs); the
# jobs without a tenant are one more line per priority where they have pending jobs.
# A line's k starts at its ``base``: the tenant's running jobs (``running``, one pass
# over the running jobs with a tenant: as many as the workers hold, not the backlog),
# and for the jobs without a tenant, all running jobs (the sum of hq_job_counts, a few
# hundred rows between folds) less those. Tenants at their running cap are left out,
# and ``c`` numbers a capped tenant's jobs in claim order, so it takes no more than its
# free slots. If the lines are long, the first :limit jobs in claim order fill them up
# to the lowest level (k) where they hold :limit jobs (``levels``, per priority; with
# the i lowest bases b, the level is the least of (limit + b_1 + ... + b_i) / i - 1,
# rounded up): ``few`` reads that many of each line plus one more, the witness that the
# line goes on. If no witness is among the first :limit, they are exact; else ``many``
# reads :limit per line (always enough) instead. The first :limit in claim order that
# no other claimer holds are taken. The cost grows with the lines (tenants), their
# running jobs and the claim's size, not with how many jobs each tenant has waiting.
_FAIR = """
WITH RECURSIVE lines(r, tenant) AS (
    SELECT r, (SELECT j.tenant FROM hq_jobs AS j WHERE j.status = 'pending' AND j.priority = r
        ORDER BY j.tenant, j.run_at, j.seq LIMIT 1)
    FROM generate_series(0, 3) AS r
    UNION ALL
    SELECT l.r, (SELECT j.tenant FROM hq_jobs AS j WHERE j.status = 'pending'
        AND j.priority = l.r AND j.tenant > l.tenant ORDER BY j.tenant, j.run_at, j.seq LIMIT 1)
    FROM lines AS l WHERE l.tenant IS NOT NULL
),
running AS (
    SELECT tenant, count(*) AS n FROM hq_jobs
    WHERE status = 'running' AND tenant IS NOT NULL GROUP BY tenant
),
all_lines AS (
    SELECT l.r, l.tenant, f.ord, f.free, coalesce(c.n, 0) AS base FROM lines AS l
    LEFT JOIN unnest(${capped}::text[], ${free}::bigint[]) WITH ORDINALITY AS f(tenant, free, ord)
        ON f.tenant = l.tenant
    LEFT JOIN running AS c ON c.tenant = l.tenant
    WHERE l.tenant IS NOT NULL AND (f.free IS NULL OR f.free > 0)
    UNION ALL
    SELECT r, NULL, NULL, NULL,
        (SELECT coalesce(sum(n), 0) FROM hq_job_counts WHERE status = 'running')
        - (SELECT coalesce(sum(n), 0) FROM running)
    FROM generate_series(0, 3) AS r WHERE EXISTS (
        SELECT 1 FROM hq_jobs WHERE status = 'pending' AND priority = r AND tenant IS NULL
    )
),
levels AS (
    SELECT r, min((${limit} + total + i - 1) / i - 1) AS level FROM (
        SELECT r, row_number() OVER w AS i, sum(base) OVER w AS total FROM all_lines
        WINDOW w AS (PARTITION BY r ORDER BY base ROWS UNBOUNDED PRECEDING)
    ) AS s GROUP BY r
),
open_lines AS (
    SELECT a.*, least(greatest(v.level - a.base + 1, 0), ${limit}) + 1 AS size
    FROM all_lines AS a JOIN levels AS v ON v.r = a.r
),
few AS ({few}),
few_ranked AS (
    SELECT *, row_number() OVER (PARTITION BY ord ORDER BY priority, k, run_at, seq) AS c
    FROM few
),
exact AS (
    SELECT NOT EXISTS (
        SELECT 1 FROM (
            SELECT witness FROM few_ranked WHERE free IS NULL OR c <= free
            ORDER BY priority, k, run_at, seq LIMIT ${limit}
        ) AS first WHERE witness
    ) AS yes
),
many AS ({many}),
candidates AS (
    SELECT id, priority, k, run_at, seq FROM few_ranked
    WHERE (SELECT yes FROM exact) AND NOT witness AND (free IS NULL OR c <= free)
    UNION ALL
    SELECT id, priority, k, run_at, seq FROM (
        SELECT *, row_number() OVER (PARTITION BY ord ORDER BY priority, k, run_at, seq) AS c
        FROM many
    ) AS ranked WHERE free IS NULL OR c <= free
),
picked AS (
    SELECT j.id, r.k FROM (SELECT * FROM candidates ORDER BY priority, k, run_at, seq) AS r
    CROSS JOIN LATERAL (
        SELECT id FROM hq_jobs WHERE id = r.id AND status = 'pending' FOR UPDATE SKIP LOCKED
    ) AS j
    ORDER BY r.priority, r.k, r.run_at, r.seq LIMIT ${limit}
),
{claimed}
SELECT claimed.*, picked.k FROM claimed JOIN picked ON picked.id = claimed.id, {quick}
"""

# Each line's first ``size`` due jobs with their k, and whether the job is the line's
# witness (its last one read, when ``witness``), if ``gate`` holds.
_LINE_JOBS = """
    SELECT d.id, d.run_at, d.seq, l.base + d.n - 1 AS k, {witness} AS witness,
        l.r AS priority, l.ord, l.free
    FROM open_lines AS l CROSS JOIN LATERAL (
        SELECT id, run_at, seq, row_number() OVER (ORDER BY run_at, seq) AS n FROM hq_jobs
        WHERE {where} AND priority = l.r AND tenant = l.tenant
        ORDER BY run_at, seq LIMIT {size}
    ) AS d WHERE l.tenant IS NOT NULL AND {gate}
    UNION ALL
    SELECT d.id, d.run_at, d.seq, l.base + d.n - 1, {witness}, l.r, NULL, NULL
    FROM open_lines AS l CROSS JOIN LATERAL (
        SELECT id, run_at, seq, row_number() OVER (ORDER BY tenant, run_at, seq) AS n
        FROM hq_jobs WHERE {where} AND priority = l.r AND tenant IS NULL
        ORDER BY tenant, run_at, seq LIMIT {size}
    ) AS d WHERE l.tenant IS NULL AND {gate}
"""

_CLAIMED = """claimed AS (
    UPDATE hq_jobs AS j SET status = 'running', attempts = j.attempts + 1,
        token = j.token + 1, lease_until = $1, worker = $2
    FROM picked WHERE j.id = picked.id AND j.status = 'pending'
    RETURNING {columns}, j.seq
),
counted AS (
    INSERT INTO hq_job_counts (queue, task, status, n)
    SELECT c.queue, c.task, s.status, s.sign * count(*) FROM claimed AS c
    CROSS JOIN (VALUES ('pending', -1), ('running', 1)) AS s(status, sign)
    GROUP BY c.queue, c.task, s.status, s.sign
)"""


@lru_cache(maxsize=32)
def _claim_sql(queues: bool, tasks: bool, fair: bool) -> str:
    """A claim statement: $1 lease until, $2 worker, $3 now, then the queues and tasks
    if filtered, the limit and, in the fair statement, the capped tenants and their
    free slots (two arrays)."""
    where, n = _due(queues, tasks, 3)
    claimed = _CLAIMED.format(columns=prefixed("j"))
    if fair:
        few = _LINE_JOBS.format(where=where, size="l.size", witness="d.n = l.size", gate="true")
        many = _LINE_JOBS.format(
            where=where, size=f"${n}", witness="false", gate="NOT (SELECT yes FROM exact)"
        )
        return _FAIR.format(
            limit=n, capped=n + 1, free=n + 2, few=few, many=many, claimed=claimed, quick=_QUICK
        )
    return _FIFO.format(
        tenanted=_TENANTED.strip(), where=where, limit=n, claimed=claimed, quick=_QUICK
    )


def _filters(queues: Sequence[str] | None, tasks: Sequence[str] | None) -> list[Any]:
    args: list[Any] = []
    if queues is not None:
        args.append(list(queues))
    if tasks is not None:
        args.append(list(tasks))
    return args


async def claim(
    conn: Any,
    queues: Sequence[str] | None,
    limit: int,
    now: float,
    lease: float,
    worker: str,
    tasks: Sequence[str] | None,
) -> list[Job]:
    """Claim in one statement (its own transaction): lock up to ``limit`` due jobs in
    claim order, skipping rows another claimer holds, mark them running, count. While
    jobs of tenants are pending, the FIFO statement claims nothing and says so; then
    the fair statement claims (a second round trip)."""
    return await _claim(conn, queues, limit, now, lease, worker, tasks, {})


async def _claim(
    conn: Any,
    queues: Sequence[str] | None,
    limit: int,
    now: float,
    lease: float,
    worker: str,
    tasks: Sequence[str] | None,
    free: Mapping[str, int],
) -> list[Job]:
    args = (now + lease, worker, now, *_filters(queues, tasks), limit)
    rows = await conn.fetch(_claim_sql(queues is not None, tasks is not None, False), *args)
    if not rows[-1][-1]:  # no job of a tenant pending: claimed in FIFO order
        claimed = [row for row in rows if row[0] is not None]
        claimed.sort(key=lambda row: (row[4], row[17], row[_SEQ]))
    else:  # rows end in their k
        sql = _claim_sql(queues is not None, tasks is not None, True)
        claimed = list(await conn.fetch(sql, *args, list(free), list(free.values())))
        claimed.sort(key=lambda row: (row[4], row[-1], row[17], row[_SEQ]))
    return [job_from_row(row) for row in claimed]


async def claim_capped(
    tx: Tx,
    queues: Sequence[str] | None,
    limit: int,
    now: float,
    lease: float,
    worker: str,
    tasks: Sequence[str] | None,
    max_running: Mapping[str, int],
) -> list[Job]:
    """A claim that keeps each capped tenant under its running cap. The tenants' locks
    make claims for one tenant count one after the other, in every process; tenants at
    their cap are left out of the claim, the others take at most their free slots."""
    conn = tx.conn
    names = sorted(max_running)
    await lock_names(conn, TENANT_RUNNING_LOCK, names)
    rows = await conn.fetch(
        "SELECT tenant, count(*) FROM hq_jobs WHERE status = 'running' "
        "AND tenant = ANY($1::text[]) GROUP BY tenant",
        names,
    )
    running = {row[0]: row[1] for row in rows}
    free = {t: max(cap - running.get(t, 0), 0) for t, cap in max_running.items()}
    return await _claim(conn, queues, limit, now, lease, worker, tasks, free)


# -- fenced single statements --------------------------------------------------------

_MARK_STARTED = f"""
WITH started AS (
    UPDATE hq_jobs AS j SET started_at = u.at
    FROM unnest($1::text[], $2::bigint[], $3::float8[]) WITH ORDINALITY AS u(id, token, at, ord)
    WHERE j.id = u.id AND j.status = 'running' AND j.token = u.token
    RETURNING j.id, u.at, u.ord
), logged AS (
    INSERT INTO hq_job_events (at, type, job_id, origin)
    SELECT at, 'job.started', id, $4 FROM started ORDER BY ord
)
SELECT started.id FROM started, {_QUICK}
"""


async def mark_started(
    conn: Any, starts: Sequence[tuple[str, int, float]], origin: str
) -> list[bool]:
    rows = await conn.fetch(
        _MARK_STARTED,
        [s[0] for s in starts],
        [s[1] for s in starts],
        [s[2] for s in starts],
        origin,
    )
    done = {row[0] for row in rows}
    return [s[0] in done for s in starts]


_EXTEND = f"""
WITH extended AS (
    UPDATE hq_jobs AS j SET lease_until = $3
    FROM unnest($1::text[], $2::bigint[]) AS u(id, token)
    WHERE j.id = u.id AND j.status = 'running' AND j.token = u.token
    RETURNING j.id, j.token
)
SELECT extended.* FROM extended, {_QUICK}
"""


async def extend(conn: Any, leases: Sequence[tuple[str, int]], until: float) -> list[bool]:
    rows = await conn.fetch(_EXTEND, [x[0] for x in leases], [x[1] for x in leases], until)
    kept = {(row[0], row[1]) for row in rows}
    return [(job_id, token) in kept for job_id, token in leases]


_PROGRESS = """
WITH changed AS (
    UPDATE hq_jobs SET progress = $3::jsonb
    WHERE id = $1 AND status = 'running' AND token = $2 RETURNING id
), logged AS (
    INSERT INTO hq_job_events (at, type, job_id, origin)
    SELECT $4, 'job.progress', id, $5 FROM changed
)
SELECT count(*) FROM changed
"""


async def set_progress(
    conn: Any, job_id: str, token: int, progress: object, now: float, origin: str
) -> bool:
    n = await conn.fetchval(_PROGRESS, job_id, token, to_json(progress), now, origin)
    return bool(n)


# -- transitions in transactions -------------------------------------------------------


async def finish(
    tx: Tx, outcomes: Sequence[Outcome], now: float, flows: Sequence[str] | None
) -> list[Job | None]:
    """Apply outcomes whose token is current. ``flows``: the workflows of the jobs,
    when the caller knows them (it claimed them), else ``None``: read them."""
    ids = [o.id for o in outcomes]
    if flows is None:
        await tx.lock_flows_of(ids)
    else:
        await tx.lock_flows(flows)
    current = await tx.lock(ids)
    out: list[Job | None] = []
    changed: dict[str, tuple[Job, bool]] = {}
    ended: list[Job] = []
    for o in outcomes:
        before = current.get(o.id)
        if before is None or before.status is not _RUNNING or before.token != o.token:
            out.append(None)
            continue
        if o.started_at is not None:
            tx.event("job.started", o.started_at, transitions.started(before, o.started_at))
        job = transitions.finished(before, o, now=now)
        current[o.id] = job
        tx.moved(job, "running", job.status.value)
        kind = transitions.outcome_event(o)
        if kind is not None:
            tx.event(kind, now, job)
        requeue = job.status is _PENDING
        if requeue:
            tx.work = True
        elif job.step is not None:
            ended.append(job)
        changed[job.id] = (job, requeue)
        out.append(job)
    await tx.save(changed.values())
    for job in ended:
        await _workflows.step_ended(tx, job, now)
    return out


_EXPIRED = (
    "SELECT id, workflow FROM hq_jobs WHERE status = 'running' AND lease_until <= $1 "
    "ORDER BY lease_until LIMIT 1000"
)
_LOCK_EXPIRED = (
    f"SELECT {COLUMNS} FROM hq_jobs WHERE id = ANY($1::text[]) AND status = 'running' "
    "AND lease_until <= $2 ORDER BY id FOR UPDATE SKIP LOCKED"
)


async def any_expired(conn: Any, now: float) -> bool:
    row = await conn.fetchrow(
        "SELECT 1 FROM hq_jobs WHERE status = 'running' AND lease_until <= $1 LIMIT 1", now
    )
    return row is not None


async def rescue(tx: Tx, now: float) -> list[Job]:
    """Rescue expired leases (a row being finished right now is skipped: its finish
    decides, and a later rescue looks again if the lease is still expired)."""
    conn = tx.conn
    expired = await conn.fetch(_EXPIRED, now)
    if not expired:
        return []
    await tx.lock_flows(row[1] for row in expired)
    rows = await conn.fetch(_LOCK_EXPIRED, [row[0] for row in expired], now)
    out: list[Job] = []
    for row in rows:
        job = transitions.rescued(job_from_row(row), now=now)
        tx.moved(job, "running", job.status.value)
        tx.event("job.rescued", now, job)
        if job.status is _PENDING:
            tx.work = True
        out.append(job)
    await tx.save((job, job.status is _PENDING) for job in out)
    for job in out:
        if job.status is not _PENDING and job.step is not None:
            await _workflows.step_ended(tx, job, now)
    return out


async def cancel(tx: Tx, job_id: str, now: float) -> Job:
    await tx.lock_flows_of([job_id])
    before = (await tx.lock([job_id])).get(job_id)
    if before is None:
        raise JobNotFound(job_id)
    if before.status is JobStatus.CANCELLED:
        return before
    if before.status is not _PENDING and before.status is not _RUNNING:
        raise InvalidTransition(job_id, before.status, "cancel")
    return await _workflows.cancel_job(tx, before, now)


async def retry(tx: Tx, job_id: str, now: float) -> Job:
    await tx.lock_flows_of([job_id])
    before = (await tx.lock([job_id])).get(job_id)
    if before is None:
        raise JobNotFound(job_id)
    if before.status is not JobStatus.FAILED and before.status is not JobStatus.CANCELLED:
        raise InvalidTransition(job_id, before.status, "retry")
    job = transitions.retried(before, now=now)
    await tx.save([(job, True)])
    tx.moved(job, before.status.value, "pending")
    tx.event("job.enqueued", now, job)
    tx.work = True
    return job


# -- workers ---------------------------------------------------------------------------

_read_worker = msgspec.json.Decoder(WorkerInfo).decode


async def register_worker(tx: Tx, info: WorkerInfo) -> None:
    await tx.conn.execute(
        "INSERT INTO hq_workers (name, expires_at, info) VALUES ($1, $2, $3) "
        "ON CONFLICT (name) DO UPDATE SET expires_at = excluded.expires_at, info = excluded.info",
        info.name,
        info.expires_at,
        encode(info).decode(),
    )
    # forget pools that are long gone, so the table stays as small as the fleet
    await tx.conn.execute("DELETE FROM hq_workers WHERE expires_at < $1", info.seen_at - 86_400)


async def workers(conn: Any, now: float) -> list[WorkerInfo]:
    rows = await conn.fetch("SELECT info FROM hq_workers WHERE expires_at > $1 ORDER BY name", now)
    return [_read_worker(row[0]) for row in rows]


# -- reads -------------------------------------------------------------------------------


async def get(conn: Any, job_id: str) -> Job | None:
    row = await conn.fetchrow(f"SELECT {COLUMNS} FROM hq_jobs WHERE id = $1", job_id)
    return None if row is None else job_from_row(row)


async def list_jobs(
    conn: Any, filters: dict[str, str], cursor: str | None, limit: int
) -> list[Job]:
    where: list[str] = []
    args: list[Any] = []
    for name, value in filters.items():
        args.append(value)
        if name == "status" and value == "pending":  # blocked workflow steps are pending
            where.append(f"status IN (${len(args)}, 'blocked')")
        else:
            where.append(f"{name} = ${len(args)}")
    if cursor is not None:
        args.append(cursor)
        where.append(f"id < ${len(args)}")
    args.append(limit)
    sql = f"SELECT {COLUMNS} FROM hq_jobs"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY id DESC LIMIT ${len(args)}"
    return [job_from_row(row) for row in await conn.fetch(sql, *args)]


_FOLD = """
WITH gone AS (
    DELETE FROM hq_job_counts WHERE (SELECT count(*) FROM hq_job_counts) > $1
    RETURNING queue, task, status, n
)
INSERT INTO hq_job_counts (queue, task, status, n)
SELECT queue, task, status, sum(n) FROM gone GROUP BY queue, task, status
"""


async def fold_counts(conn: Any, above: int = 256) -> None:
    """Replace the count deltas by their sums once there are more than ``above`` rows
    (safe beside writers and other folds: rows appended meanwhile are not in this
    statement's snapshot and stay)."""
    await conn.execute(_FOLD, above)


async def counts(conn: Any) -> list[tuple[str, str, int]]:
    rows = await conn.fetch(
        "SELECT queue, status, sum(n) FROM hq_job_counts GROUP BY queue, status"
    )
    return [(row[0], row[1], int(row[2])) for row in rows]


# The earliest run_at of a (queue, task) pair: one index probe per priority.
_EARLIEST = (
    "(SELECT min((SELECT j.run_at FROM hq_jobs AS j WHERE j.status = 'pending' "
    "AND j.queue = p.queue AND j.task = p.task AND j.priority = r "
    "ORDER BY j.run_at LIMIT 1)) FROM generate_series(0, 3) AS r)"
)
# The (queue, task) pairs with pending jobs, from the counts.
_PAIRS = (
    "SELECT queue, task, sum(n) AS n FROM hq_job_counts WHERE status = 'pending'{where} "
    "GROUP BY queue, task HAVING sum(n) > 0"
)


async def next_run_at(
    conn: Any, queues: Sequence[str] | None, tasks: Sequence[str] | None
) -> float | None:
    where = f" AND {_NOT_PAUSED}"
    n = 1
    if queues is not None:
        where += f" AND queue = ANY(${n}::text[])"
        n += 1
    if tasks is not None:
        where += f" AND task = ANY(${n}::text[])"
    pairs = _PAIRS.format(where=where)
    value = await conn.fetchval(
        f"SELECT min({_EARLIEST}) FROM ({pairs}) AS p", *_filters(queues, tasks)
    )
    return None if value is None else float(value)


async def pause_queue(tx: Tx, name: str, paused: bool, now: float) -> None:
    """Pause or resume ``name``; a resume that unpaused it notifies idle workers in every
    process, as an enqueue does."""
    if paused:
        await tx.conn.execute(
            "INSERT INTO hq_paused_queues (name, paused_at) VALUES ($1, $2) "
            "ON CONFLICT (name) DO NOTHING",
            name,
            now,
        )
    elif await tx.conn.fetchval(
        "DELETE FROM hq_paused_queues WHERE name = $1 RETURNING true", name
    ):
        tx.work = True


async def paused_queues(conn: Any) -> list[str]:
    rows = await conn.fetch("SELECT name FROM hq_paused_queues ORDER BY name")
    return [row[0] for row in rows]


async def backlog(conn: Any) -> list[TaskBacklog]:
    rows = await conn.fetch(
        f"SELECT p.queue, p.task, p.n, {_EARLIEST} FROM ({_PAIRS.format(where='')}) AS p "
        "ORDER BY p.queue, p.task"
    )
    return [
        TaskBacklog(queue=row[0], task=row[1], pending=int(row[2]), oldest_run_at=row[3])
        for row in rows
    ]
