"""The statements, and the functions that run whole transactions in a connection thread.

Every function here runs inside aiosqlite's connection thread, not on the event loop:
a transaction is one hop to that thread however many statements it holds, and the
statements of a batch cost microseconds each there, against ~25 us for each hop.
Logical refusals (a stale token, an unknown job) are returned as values, never raised,
so one caller's refusal cannot roll back the other callers sharing its transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from msgspec.structs import replace

from hyperqueue import InvalidTransition, Job, JobNotFound, JobStatus, Outcome

from ._rows import COLUMNS, INSERT, job_from_row, job_to_row, to_json

__all__ = ["Claimed", "Op", "Tx", "apply_batch"]

_PENDING = JobStatus.PENDING
_FINAL_SQL = "('completed', 'failed', 'cancelled')"
_SEQ = len(COLUMNS.split(","))  # index of seq after the job columns in RETURNING rows

SELECT_JOB = f"SELECT {COLUMNS} FROM jobs WHERE id = ?"

# A job that goes back to pending (retry, release, rescue) queues up behind the jobs
# already waiting: it gets a new seq, as a new job would.
NEXT_SEQ = "(SELECT max(seq) FROM jobs) + 1"

_COUNT = (
    "INSERT INTO job_counts (queue, status, n) VALUES (?, ?, ?) "
    "ON CONFLICT (queue, status) DO UPDATE SET n = n + excluded.n"
)
_BUMP_WORK = "UPDATE hq_meta SET value = value + 1 WHERE name = 'work' RETURNING value"


class Tx:
    """What one transaction changed besides its rows: counts per queue and status, and
    whether it made work ready (which wakes idle workers in every process)."""

    __slots__ = ("conn", "counts", "work")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.counts: dict[tuple[str, str], int] = {}
        self.work = False

    def count(self, queue: str, status: str, n: int) -> None:
        key = (queue, status)
        self.counts[key] = self.counts.get(key, 0) + n


class Op:
    """One caller's share of a group commit: a function of the transaction, its result."""

    __slots__ = ("args", "error", "fn", "result")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
        self.result: Any = None
        self.error: BaseException | None = None


def apply_batch(conn: sqlite3.Connection, ops: Sequence[Op]) -> int | None:
    """Run ``ops`` in one ``BEGIN IMMEDIATE`` transaction; returns the new work version
    when the batch made work ready.

    An op that raises is taken out with its error and the rest run again without it, so
    a bad call fails alone. An error outside the ops (the lock, the commit) fails all.
    """
    live = list(ops)
    while True:
        tx = Tx(conn)
        conn.execute("BEGIN IMMEDIATE")
        failed: Op | None = None
        try:
            for op in live:
                failed = op
                op.result = op.fn(tx, *op.args)
            failed = None
            if tx.counts:
                conn.executemany(_COUNT, [(q, s, n) for (q, s), n in tx.counts.items() if n])
            version = conn.execute(_BUMP_WORK).fetchone()[0] if tx.work else None
            conn.execute("COMMIT")
            return version
        except Exception as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if failed is None or len(live) == 1:
                raise
            failed.error = exc
            live.remove(failed)


# -- writes ------------------------------------------------------------------------


def enqueue(tx: Tx, jobs: Sequence[Job], now: float, key_ttl: float | None) -> list[Job]:
    conn = tx.conn
    out: list[Job] = []
    rows: list[tuple[Any, ...]] = []
    keyed: dict[str, Job] = {}
    for job in jobs:
        scope = None
        if job.key is not None:
            scope = to_json([job.tenant, job.key])
            existing = keyed.get(scope or "")
            if existing is None:
                seen = conn.execute(
                    "SELECT job_id, expires_at FROM job_keys WHERE scope = ?", (scope,)
                ).fetchone()
                if seen is not None and (seen[1] is None or seen[1] > now):
                    row = conn.execute(SELECT_JOB, (seen[0],)).fetchone()
                    if row is not None:  # else its job was pruned: the key is free
                        existing = job_from_row(row)
            if existing is not None:
                out.append(existing)
                continue
            expires = None if key_ttl is None else now + key_ttl
            conn.execute(
                "INSERT OR REPLACE INTO job_keys (scope, job_id, expires_at) VALUES (?, ?, ?)",
                (scope, job.id, expires),
            )
        if job.status is not _PENDING:
            job = replace(job, status=_PENDING)
        if scope is not None:
            keyed[scope] = job
        rows.append(job_to_row(job))
        tx.count(job.queue, "pending", 1)
        out.append(job)
    if rows:
        conn.executemany(INSERT, rows)
        tx.work = True
    return out


@lru_cache(maxsize=64)
def _claim_sql(queues: int) -> str:
    """The claim statement for ``queues`` named queues: one range scan per queue and
    priority over the pending-only index, so due jobs are found without stepping over
    other queues' jobs or jobs scheduled for later."""
    if queues > _MAX_UNION:
        where = f"status = 'pending' AND run_at <= :now AND queue IN ({_names(queues)})"
        pick = f"SELECT seq FROM jobs WHERE {where} ORDER BY priority, run_at, seq LIMIT :limit"
    else:
        parts = [
            "SELECT * FROM (SELECT seq, priority, run_at FROM jobs WHERE status = 'pending' "
            f"AND queue = :q{q} AND priority = {rank} AND run_at <= :now "
            "ORDER BY run_at, seq LIMIT :limit)"
            for q in range(queues)
            for rank in range(4)
        ]
        pick = (
            f"SELECT seq FROM ({' UNION ALL '.join(parts)}) "
            "ORDER BY priority, run_at, seq LIMIT :limit"
        )
    return (
        "UPDATE jobs SET status = 'running', attempts = attempts + 1, token = token + 1, "
        "started_at = :now, lease_until = :until, worker = :worker "
        f"WHERE seq IN ({pick}) RETURNING {COLUMNS}, seq"
    )


_MAX_UNION = 8  # above this many queues, one scan with a sort beats 4 scans per queue


def _names(n: int) -> str:
    return ", ".join(f":q{i}" for i in range(n))


def queue_params(queues: Sequence[str]) -> dict[str, Any]:
    return {f"q{i}": name for i, name in enumerate(queues)}


def pending_queues(conn: sqlite3.Connection) -> list[str]:
    """The queues that have pending jobs, from the counts every write keeps."""
    rows = conn.execute("SELECT queue FROM job_counts WHERE status = 'pending' AND n > 0")
    return [row[0] for row in rows.fetchall()]


def claim(
    tx: Tx,
    claimed: Claimed,
    queues: Sequence[str] | None,
    limit: int,
    now: float,
    lease: float,
    worker: str,
) -> list[Job]:
    conn = tx.conn
    if queues is None:
        queues = pending_queues(conn)
    if not queues:
        return []
    params = queue_params(queues)
    params.update(now=now, until=now + lease, worker=worker, limit=limit)
    rows = conn.execute(_claim_sql(len(queues)), params).fetchall()
    if not rows:
        return []
    rows.sort(key=_claim_order)
    counts = tx.counts
    for row in rows:
        queue = row[2]
        counts[(queue, "pending")] = counts.get((queue, "pending"), 0) - 1
        counts[(queue, "running")] = counts.get((queue, "running"), 0) + 1
    jobs = [job_from_row(row) for row in rows]
    claimed.remember(jobs)
    return jobs


def _claim_order(row: tuple[Any, ...]) -> tuple[int, float, int]:
    return (row[4], row[17], row[_SEQ])


_FINISH_FINAL = (
    "UPDATE jobs SET status = ?, result = ?, error = ?, traceback = ?, finished_at = ?, "
    "lease_until = NULL WHERE id = ? AND status = 'running' AND token = ?"
)
_FINISH_PENDING = (
    f"UPDATE jobs SET status = 'pending', seq = {NEXT_SEQ}, attempts = attempts - ?, run_at = ?, "
    "error = coalesce(?, error), traceback = coalesce(?, traceback), lease_until = NULL "
    "WHERE id = ? AND status = 'running' AND token = ?"
)


class Claimed:
    """The jobs this process claimed and has not finished, as last written.

    While a job runs under a token, only its claimer changes it (progress, lease), and
    every other change (cancel, rescue) also changes its status, which a finish checks.
    So when a finish's UPDATE matched, the job after it is the remembered one with the
    outcome applied, and the row need not be read back (a RETURNING of every column
    costs about three times the UPDATE). Jobs not remembered (claimed by an earlier
    process) are read back.
    """

    __slots__ = ("jobs",)

    LIMIT = 100_000  # forget everything past this many (jobs whose worker vanished)

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}

    def remember(self, jobs: Sequence[Job]) -> None:
        remembered = self.jobs
        if len(remembered) > self.LIMIT:
            remembered.clear()
        for job in jobs:
            remembered[job.id] = job


def finish(tx: Tx, claimed: Claimed, outcomes: Sequence[Outcome], now: float) -> list[Job | None]:
    execute = tx.conn.execute
    counts = tx.counts
    remembered = claimed.jobs
    out: list[Job | None] = []
    for o in outcomes:
        status = o.status
        before = remembered.pop(o.id, None)
        if status is _PENDING:
            run_at = now if o.run_at is None else o.run_at
            changed = execute(
                _FINISH_PENDING,
                (1 if o.released else 0, run_at, o.error, o.traceback, o.id, o.token),
            ).rowcount
        else:
            result = o.result
            changed = execute(
                _FINISH_FINAL,
                (
                    status.value,
                    None if result is None else to_json(result),
                    o.error,
                    o.traceback,
                    now,
                    o.id,
                    o.token,
                ),
            ).rowcount
        if not changed:
            out.append(None)
            continue
        if before is None or before.token != o.token:
            row = execute(SELECT_JOB, (o.id,)).fetchone()
            job = job_from_row(row)
        elif status is _PENDING:
            job = replace(
                before,
                status=_PENDING,
                attempts=before.attempts - 1 if o.released else before.attempts,
                run_at=run_at,
                error=before.error if o.error is None else o.error,
                traceback=before.traceback if o.traceback is None else o.traceback,
                lease_until=None,
            )
        else:
            job = replace(
                before,
                status=status,
                result=o.result,
                error=o.error,
                traceback=o.traceback,
                finished_at=now,
                lease_until=None,
            )
        queue = job.queue
        counts[(queue, "running")] = counts.get((queue, "running"), 0) - 1
        counts[(queue, status.value)] = counts.get((queue, status.value), 0) + 1
        if status is _PENDING:
            tx.work = True
        out.append(job)
    return out


def extend(tx: Tx, leases: Sequence[tuple[str, int]], until: float) -> list[bool]:
    execute = tx.conn.execute
    sql = "UPDATE jobs SET lease_until = ? WHERE id = ? AND status = 'running' AND token = ?"
    return [execute(sql, (until, job_id, token)).rowcount == 1 for job_id, token in leases]


def rescue(tx: Tx, now: float) -> list[Job]:
    conn = tx.conn
    expired = conn.execute(
        f"SELECT {COLUMNS} FROM jobs WHERE status = 'running' AND lease_until <= ?", (now,)
    ).fetchall()
    out: list[Job] = []
    for row in expired:
        job = job_from_row(row)
        message = f"lease expired on worker {job.worker!r}"
        if job.attempts >= job.max_attempts:
            sql = (
                "UPDATE jobs SET status = 'failed', error = ?, finished_at = ?, "
                "lease_until = NULL WHERE id = ? AND token = ? AND status = 'running' "
                f"RETURNING {COLUMNS}"
            )
        else:
            sql = (
                f"UPDATE jobs SET status = 'pending', seq = {NEXT_SEQ}, error = ?, run_at = ?, "
                "lease_until = NULL WHERE id = ? AND token = ? AND status = 'running' "
                f"RETURNING {COLUMNS}"
            )
        changed = conn.execute(sql, (message, now, job.id, job.token)).fetchone()
        if changed is None:
            continue
        job = job_from_row(changed)
        tx.count(job.queue, "running", -1)
        tx.count(job.queue, job.status.value, 1)
        if job.status is _PENDING:
            tx.work = True
        out.append(job)
    return out


def cancel(tx: Tx, job_id: str, now: float) -> Job | Exception:
    conn = tx.conn
    row = conn.execute(SELECT_JOB, (job_id,)).fetchone()
    if row is None:
        return JobNotFound(job_id)
    job = job_from_row(row)
    if job.status is JobStatus.CANCELLED:
        return job
    if job.status is not _PENDING and job.status is not JobStatus.RUNNING:
        return InvalidTransition(job_id, job.status, "cancel")
    changed = conn.execute(
        "UPDATE jobs SET status = 'cancelled', finished_at = ?, lease_until = NULL "
        f"WHERE id = ? RETURNING {COLUMNS}",
        (now, job_id),
    ).fetchone()
    tx.count(job.queue, job.status.value, -1)
    tx.count(job.queue, "cancelled", 1)
    return job_from_row(changed)


def retry(tx: Tx, job_id: str, now: float) -> Job | Exception:
    conn = tx.conn
    row = conn.execute(SELECT_JOB, (job_id,)).fetchone()
    if row is None:
        return JobNotFound(job_id)
    job = job_from_row(row)
    if job.status is not JobStatus.FAILED and job.status is not JobStatus.CANCELLED:
        return InvalidTransition(job_id, job.status, "retry")
    changed = conn.execute(
        f"UPDATE jobs SET status = 'pending', seq = {NEXT_SEQ}, attempts = 0, run_at = ?, "
        "result = NULL, error = NULL, traceback = NULL, progress = NULL, started_at = NULL, "
        f"finished_at = NULL, lease_until = NULL WHERE id = ? RETURNING {COLUMNS}",
        (now, job_id),
    ).fetchone()
    tx.count(job.queue, job.status.value, -1)
    tx.count(job.queue, "pending", 1)
    tx.work = True
    return job_from_row(changed)


def set_progress(tx: Tx, claimed: Claimed, job_id: str, token: int, progress: Any) -> bool:
    cursor = tx.conn.execute(
        "UPDATE jobs SET progress = ? WHERE id = ? AND status = 'running' AND token = ?",
        (to_json(progress), job_id, token),
    )
    if cursor.rowcount != 1:
        return False
    before = claimed.jobs.get(job_id)
    if before is not None:
        claimed.jobs[job_id] = replace(before, progress=progress)
    return True


def delete_finished(tx: Tx, ids: Sequence[str], cutoff: float) -> int:
    """Delete the given finished jobs that are still finished before ``cutoff`` (a job
    retried since it was archived stays)."""
    execute = tx.conn.execute
    deleted = 0
    sql = (
        f"DELETE FROM jobs WHERE id = ? AND status IN {_FINAL_SQL} AND finished_at < ? "
        "RETURNING queue, status"
    )
    for job_id in ids:
        row = execute(sql, (job_id, cutoff)).fetchone()
        if row is not None:
            tx.count(row[0], row[1], -1)
            deleted += 1
    return deleted


def recount(tx: Tx) -> None:
    """Rebuild job_counts from the jobs table (after hand edits of the file)."""
    tx.conn.execute("DELETE FROM job_counts")
    tx.conn.execute(
        "INSERT INTO job_counts (queue, status, n) "
        "SELECT queue, status, count(*) FROM jobs GROUP BY queue, status"
    )
    tx.work = True  # pending jobs may have been added by hand: let workers look


def forget_keys(tx: Tx, now: float) -> int:
    cursor = tx.conn.execute("DELETE FROM job_keys WHERE expires_at <= ?", (now,))
    return cursor.rowcount


def register_process(tx: Tx, host: str, pid: int, now: float) -> None:
    tx.conn.execute(
        "INSERT OR REPLACE INTO hq_processes (host, pid, opened_at) VALUES (?, ?, ?)",
        (host, pid, now),
    )


def unregister_process(tx: Tx, host: str, pid: int) -> None:
    tx.conn.execute("DELETE FROM hq_processes WHERE host = ? AND pid = ?", (host, pid))


# -- reads (run on the reader connection, outside any write transaction) ------------


def get(conn: sqlite3.Connection, job_id: str) -> Job | None:
    row = conn.execute(SELECT_JOB, (job_id,)).fetchone()
    return None if row is None else job_from_row(row)


def list_jobs(
    conn: sqlite3.Connection, filters: dict[str, Any], cursor: str | None, limit: int
) -> list[Job]:
    where = [f"{name} = :{name}" for name in filters]
    params = dict(filters)
    if cursor is not None:
        where.append("id < :cursor")
        params["cursor"] = cursor
    params["limit"] = limit
    sql = f"SELECT {COLUMNS} FROM jobs"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id DESC LIMIT :limit"
    return [job_from_row(row) for row in conn.execute(sql, params).fetchall()]


def counts(conn: sqlite3.Connection) -> list[tuple[str, str, int]]:
    return conn.execute("SELECT queue, status, n FROM job_counts").fetchall()


@lru_cache(maxsize=64)
def _next_run_sql(queues: int) -> str:
    parts = [
        "SELECT min(run_at) AS m FROM jobs WHERE status = 'pending' "
        f"AND queue = :q{q} AND priority = {rank}"
        for q in range(queues)
        for rank in range(4)
    ]
    return f"SELECT min(m) FROM ({' UNION ALL '.join(parts)})"


def next_run_at(conn: sqlite3.Connection, queues: Sequence[str] | None) -> float | None:
    if queues is None:
        queues = pending_queues(conn)
    if not queues:
        return None
    if len(queues) > _MAX_UNION:
        names = _names(len(queues))
        sql = f"SELECT min(run_at) FROM jobs WHERE status = 'pending' AND queue IN ({names})"
    else:
        sql = _next_run_sql(len(queues))
    value: float | None = conn.execute(sql, queue_params(queues)).fetchone()[0]
    return value


def any_expired(conn: sqlite3.Connection, now: float) -> bool:
    row = conn.execute(
        "SELECT 1 FROM jobs WHERE status = 'running' AND lease_until <= ? LIMIT 1", (now,)
    ).fetchone()
    return row is not None


def poll(conn: sqlite3.Connection, data_version: int) -> tuple[int, int | None]:
    """The connection's data version, and the work version when the data changed."""
    version: int = conn.execute("PRAGMA data_version").fetchone()[0]
    if version == data_version:
        return version, None
    work: int = conn.execute("SELECT value FROM hq_meta WHERE name = 'work'").fetchone()[0]
    return version, work


def work_version(conn: sqlite3.Connection) -> tuple[int, int]:
    return poll(conn, -1)  # type: ignore[return-value]


def finished_before(
    conn: sqlite3.Connection, cutoff: float, after: int, limit: int
) -> tuple[list[Job], int]:
    """Up to ``limit`` jobs finished before ``cutoff``, in insertion order after seq
    ``after``, and the seq to continue from: a prune walks the table once, with no
    index to keep up on every finish."""
    rows = conn.execute(
        f"SELECT {COLUMNS}, seq FROM jobs WHERE seq > ? AND status IN {_FINAL_SQL} "
        "AND finished_at < ? ORDER BY seq LIMIT ?",
        (after, cutoff, limit),
    ).fetchall()
    last = rows[-1][_SEQ] if rows else after
    return [job_from_row(row) for row in rows], last
