"""The statements, and the functions that run whole transactions in a connection thread.

Every function here runs in the connection's worker thread, not on the event loop: a
transaction is one hop to that thread however many statements it holds, and the
statements of a batch cost microseconds each there, against tens of microseconds for
each hop. Logical refusals (a stale token, an unknown job) are returned as values, never
raised, so one caller's refusal cannot roll back the other callers sharing its
transaction. What a job becomes is decided by :mod:`hyperqueue.transitions`, as in
every backend; this module only says which rows change and writes the event log.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
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
    QuotaExceeded,
    StoredEvent,
    TaskBacklog,
    WorkerInfo,
    transitions,
)

from . import _fair
from ._driver import Connection
from ._rows import (
    COLUMNS,
    INSERT,
    encode,
    job_from_row,
    job_to_row,
    step_json,
    stored_status,
    to_json,
)

__all__ = ["Claimed", "Op", "Tx", "apply_batch", "check_quotas"]

_PENDING = JobStatus.PENDING
_RUNNING = JobStatus.RUNNING
_FINAL_SQL = "('completed', 'failed', 'cancelled')"
_SEQ = len(COLUMNS.split(","))  # index of seq after the job columns in RETURNING rows

SELECT_JOB = f"SELECT {COLUMNS} FROM jobs WHERE id = ?"

# A job that goes back to pending (retry, release, rescue) queues up behind the jobs
# already waiting: it gets a new seq, as a new job would.
NEXT_SEQ = "(SELECT max(seq) FROM jobs) + 1"

_COUNT = (
    "INSERT INTO task_counts (queue, task, status, n) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (queue, task, status) DO UPDATE SET n = n + excluded.n"
)
_EVENT = "INSERT INTO job_events (at, type, job_id, origin) VALUES (?, ?, ?, ?)"
_BUMP_WORK = "UPDATE hq_meta SET value = value + 1 WHERE name = 'work' RETURNING value"


class Tx:
    """What one transaction changed besides its rows: counts per queue, task and status,
    the events it writes to the log, and whether it made work ready (which wakes idle
    workers in every process)."""

    __slots__ = ("conn", "counts", "events", "origin", "work")

    def __init__(self, conn: Connection, origin: str) -> None:
        self.conn = conn
        self.origin = origin
        self.counts: dict[tuple[str, str, str], int] = {}
        self.events: list[tuple[float, str, str, str]] = []
        self.work = False

    def count(self, job: Job, status: str, n: int) -> None:
        key = (job.queue, job.task, status)
        self.counts[key] = self.counts.get(key, 0) + n

    def moved(self, job: Job, old: str, new: str) -> None:
        if old != new:
            self.count(job, old, -1)
            self.count(job, new, 1)

    def moved_all(self, jobs: Sequence[Job], old: str, new: str) -> None:
        """:meth:`moved` for each of ``jobs``: one count update per queue and task, not
        two per job (a claim moves up to hundreds of one task)."""
        counts = self.counts
        for (queue, task), n in Counter((job.queue, job.task) for job in jobs).items():
            counts[queue, task, old] = counts.get((queue, task, old), 0) - n
            counts[queue, task, new] = counts.get((queue, task, new), 0) + n

    def event(self, kind: str, at: float, job: Job) -> None:
        self.events.append((at, kind, job.id, self.origin))


class Op:
    """One caller's share of a group commit: a function of the transaction, its result."""

    __slots__ = ("args", "error", "fn", "result")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
        self.result: Any = None
        self.error: BaseException | None = None


def apply_batch(conn: Connection, ops: Sequence[Op], origin: str = "") -> int | None:
    """Run ``ops`` in one ``BEGIN IMMEDIATE`` transaction; returns the new work version
    when the batch made work ready.

    An op that raises is taken out with its error and the rest run again without it, so
    a bad call fails alone. An error outside the ops (the lock, the commit) fails all.
    """
    live = list(ops)
    while True:
        tx = Tx(conn, origin)
        conn.execute("BEGIN IMMEDIATE")
        failed: Op | None = None
        try:
            for op in live:
                failed = op
                op.result = op.fn(tx, *op.args)
            failed = None
            if tx.counts:
                conn.execute_values(
                    _COUNT, [(q, t, s, n) for (q, t, s), n in tx.counts.items() if n]
                )
            if tx.events:
                conn.execute_values(_EVENT, tx.events)
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


def check_quotas(conn: Connection, jobs: Sequence[Job], max_queued: Mapping[str, int]) -> None:
    adding: dict[str, int] = {}
    for job in jobs:
        if job.tenant is not None and job.tenant in max_queued:
            adding[job.tenant] = adding.get(job.tenant, 0) + 1
    for tenant, n in adding.items():
        queued: int = conn.execute(
            "SELECT count(*) FROM jobs WHERE tenant = ? AND status = 'pending'", (tenant,)
        ).fetchone()[0]
        if queued + n > max_queued[tenant]:
            raise QuotaExceeded(tenant, max_queued[tenant], queued)


def enqueue(
    tx: Tx,
    jobs: Sequence[Job],
    now: float,
    key_ttl: float | None,
    max_queued: Mapping[str, int] | None = None,
) -> list[Job]:
    conn = tx.conn
    if max_queued:
        check_quotas(conn, jobs, max_queued)
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
        tx.count(job, "pending", 1)
        tx.event("job.enqueued", now, job)
        out.append(job)
    if rows:
        conn.execute_values(INSERT, rows)
        tx.work = True
    return out


_MAX_PARTS = 32  # above this many range scans, one scan with a sort is cheaper


@lru_cache(maxsize=128)
def _pick_sql(pairs: int, where: str = "", columns: str = "seq") -> str:
    """``columns`` of due pending jobs of ``pairs`` (queue, task) pairs, in claim order:
    one range scan per pair and priority over the pending-only index, so due jobs are
    found without stepping over other tasks' jobs or jobs scheduled for later."""
    if pairs * 4 > _MAX_PARTS:
        names = ", ".join(f"(:q{i}, :t{i})" for i in range(pairs))
        return (
            f"SELECT {columns} FROM jobs WHERE status = 'pending' AND run_at <= :now "
            f"AND (queue, task) IN (VALUES {names}){where} "
            "ORDER BY priority, run_at, seq LIMIT :limit"
        )
    parts = [
        f"SELECT * FROM (SELECT {columns}, priority, run_at FROM jobs WHERE status = 'pending' "
        f"AND queue = :q{i} AND task = :t{i} AND priority = {rank} AND run_at <= :now{where} "
        "ORDER BY run_at, seq LIMIT :limit)"
        for i in range(pairs)
        for rank in range(4)
    ]
    return (
        f"SELECT {columns} FROM ({' UNION ALL '.join(parts)}) "
        "ORDER BY priority, run_at, seq LIMIT :limit"
    )


# Jobs without a tenant are the first range of each (queue, task, priority) in the
# jobs_ready index, in (run_at, seq) order: while no job with a tenant is pending,
# claims and the look for the next due job read that range only, as a FIFO.
_UNTENANTED = " AND tenant IS NULL"


@lru_cache(maxsize=128)
def _pick_json(pairs: int) -> str:
    """The seqs of the jobs to claim, as one JSON array, while no job with a tenant is
    pending (else see _fair)."""
    return f"SELECT json_group_array(seq) FROM ({_pick_sql(pairs, _UNTENANTED)})"


_CLAIM_SEQS = (
    "UPDATE jobs SET status = 'running', attempts = attempts + 1, token = token + 1, "
    "lease_until = :until, worker = :worker "
    "WHERE seq IN (SELECT value FROM json_each(:seqs)) AND status = 'pending'"
)
_CLAIMED = (
    f"SELECT json_group_array(json_array({COLUMNS}, seq)) FROM jobs "
    "WHERE seq IN (SELECT value FROM json_each(?))"
)
_CLAIMED_ROWS = f"SELECT {COLUMNS}, seq FROM jobs WHERE seq IN (SELECT value FROM json_each(?))"
_decode_rows = msgspec.json.Decoder(list[list[Any]]).decode


def _claim_plain(conn: Connection, pairs: int, params: dict[str, Any]) -> list[Any]:
    """Claim the first due jobs, returning their rows in claim order.

    Three statements of one step each (the seqs picked, their update, their rows as
    one JSON array, which keeps every REAL exactly) rather than ``UPDATE ...
    RETURNING``, which steps once per claimed row: every step lets go of the GIL,
    and the writer thread waits for the event loop's thread to give it back, once per
    row, up to the switch interval (5 ms) while the loop is busy."""
    seqs = conn.execute(_pick_json(pairs), params).fetchone()[0]
    if seqs == "[]":
        return []
    conn.execute(_CLAIM_SEQS, {"until": params["until"], "worker": params["worker"], "seqs": seqs})
    rows: list[Any]
    try:
        rows = _decode_rows(conn.execute(_CLAIMED, (seqs,)).fetchone()[0])
    except msgspec.DecodeError:  # a REAL that JSON cannot hold (an infinity, hand-written)
        rows = conn.execute(_CLAIMED_ROWS, (seqs,)).fetchall()
    rows.sort(key=_claim_order)
    return rows


# Whether a job with a tenant is pending: one probe of the jobs_tenant index (the
# repeated status term lets SQLite see that the index's condition holds).
_TENANTED = (
    "SELECT EXISTS (SELECT 1 FROM jobs WHERE tenant IS NOT NULL "
    "AND status IN ('pending', 'running') AND status = 'pending')"
)


_PENDING_PAIRS = (
    "SELECT queue, task FROM task_counts WHERE status = 'pending' AND n > 0 "
    "AND queue NOT IN (SELECT name FROM paused_queues)"
)


def pending_pairs(
    conn: Connection, queues: Sequence[str] | None, tasks: Sequence[str] | None
) -> list[tuple[str, str]]:
    """The (queue, task) pairs that have pending jobs, from the counts every write keeps,
    narrowed to ``queues`` and ``tasks``; paused queues are left out, so neither a claim
    nor an idle worker's look for the next due job sees their jobs."""
    rows = conn.execute(_PENDING_PAIRS).fetchall()
    return [
        (q, t) for q, t in rows if (queues is None or q in queues) and (tasks is None or t in tasks)
    ]


def _pair_params(pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for i, (q, t) in enumerate(pairs):
        params[f"q{i}"] = q
        params[f"t{i}"] = t
    return params


def claim(
    tx: Tx,
    claimed: Claimed,
    queues: Sequence[str] | None,
    limit: int,
    now: float,
    lease: float,
    worker: str,
    tasks: Sequence[str] | None = None,
    max_running: Mapping[str, int] | None = None,
) -> list[Job]:
    conn = tx.conn
    pairs = pending_pairs(conn, queues, tasks)
    if not pairs:
        return []
    params = _pair_params(pairs)
    params.update(now=now, until=now + lease, worker=worker, limit=limit)
    if conn.execute(_TENANTED).fetchone()[0]:
        # the jobs earlier ops of this transaction moved, not in task_counts until commit
        moved = sum(n for (_, _, status), n in tx.counts.items() if status == "running")
        free = _free_slots(conn, max_running)
        rows = _claim_fair(conn, len(pairs), params, free, moved)
    else:  # caps only hold jobs with a tenant back: there are none to claim
        rows = _claim_plain(conn, len(pairs), params)
    if not rows:
        return []
    jobs = [job_from_row(row) for row in rows]
    tx.moved_all(jobs, "pending", "running")
    claimed.remember(jobs)
    return jobs


def _claim_fair(
    conn: Connection, pairs: int, params: dict[str, Any], free: Mapping[str, int], moved: int
) -> list[Any]:
    """Claim the jobs fair share picks (see _fair), returning their rows in its order."""
    chosen = _fair.pick(conn, pairs, params, free, moved)
    if not chosen:
        return []
    marks = ", ".join("?" * len(chosen))
    sql = (
        "UPDATE jobs SET status = 'running', attempts = attempts + 1, token = token + 1, "
        f"lease_until = ?, worker = ? WHERE seq IN ({marks}) AND status = 'pending' "
        f"RETURNING {COLUMNS}, seq"
    )
    rows = conn.execute(sql, (params["until"], params["worker"], *chosen)).fetchall()
    place = {seq: n for n, seq in enumerate(chosen)}
    rows.sort(key=lambda row: place[row[_SEQ]])
    return rows


def _free_slots(conn: Connection, max_running: Mapping[str, int] | None) -> dict[str, int]:
    """The free running slots of each capped tenant, counted inside this write
    transaction, so every process sees the same figures."""
    if not max_running:
        return {}
    names = list(max_running)
    marks = ", ".join("?" * len(names))
    running = dict(
        conn.execute(
            f"SELECT tenant, count(*) FROM jobs WHERE status = 'running' AND tenant IN ({marks}) "
            "GROUP BY tenant",
            names,
        ).fetchall()
    )
    return {t: max(cap - running.get(t, 0), 0) for t, cap in max_running.items()}


def _claim_order(row: Sequence[Any]) -> tuple[int, float, int]:
    return (row[4], row[17], row[_SEQ])


_FINISH_FINAL = (
    "UPDATE jobs SET status = ?, result = ?, error = ?, traceback = ?, finished_at = ?, "
    "started_at = coalesce(?, started_at), lease_until = NULL "
    "WHERE id = ? AND status = 'running' AND token = ?"
)
_FINISH_PENDING = (
    f"UPDATE jobs SET status = 'pending', seq = {NEXT_SEQ}, attempts = attempts - ?, run_at = ?, "
    "error = coalesce(?, error), traceback = coalesce(?, traceback), "
    "started_at = coalesce(?, started_at), lease_until = NULL "
    "WHERE id = ? AND status = 'running' AND token = ?"
)


class Claimed:
    """The jobs this process claimed and has not finished, as last written.

    While a job runs under a token, only its claimer changes it (progress, lease,
    start), and every other change (cancel, rescue) also changes its status, which a
    finish checks. So when a finish's UPDATE matched, the job after it is the
    remembered one with the outcome applied, and the row need not be read back. Jobs
    not remembered (claimed by an earlier process) are read first.
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

    def current(self, conn: Connection, job_id: str, token: int) -> Job | None:
        """The claimed job as stored, from memory when this process claimed it."""
        job = self.jobs.get(job_id)
        if job is not None and job.token == token:
            return job
        row = conn.execute(SELECT_JOB, (job_id,)).fetchone()
        return None if row is None else job_from_row(row)


_FINISH_MANY = (
    "UPDATE jobs SET status = v.column1, result = v.column2, error = v.column3, "
    "traceback = v.column4, finished_at = v.column5, "
    "started_at = coalesce(v.column6, jobs.started_at), lease_until = NULL "
    "FROM (VALUES (?, ?, ?, ?, ?, ?, ?, ?)) AS v "
    "WHERE jobs.id = v.column7 AND jobs.status = 'running' AND jobs.token = v.column8"
)


def _final_params(o: Outcome, now: float) -> tuple[object, ...]:
    """The parameters of ``_FINISH_FINAL`` (and of a row of ``_FINISH_MANY``)."""
    result = o.result
    return (
        o.status.value,
        None if result is None else to_json(result),
        o.error,
        o.traceback,
        now,
        o.started_at,
        o.id,
        o.token,
    )


def _finish_at_once(
    conn: Connection, known: Sequence[tuple[Outcome, Job | None]], now: float
) -> set[int]:
    """Finish the jobs of ``known`` that end for good with one statement per 512 (one
    step each, where a statement per job steps once per job); returns their indexes,
    or none when one of them was not running under its token any more (the savepoint
    is rolled back and each goes its own way, learning whether it changed).

    Left to their own statement: jobs going back to pending (each gets a new seq),
    steps of a workflow (ending one releases others), and a job named twice."""
    picks = [
        i
        for i, (o, before) in enumerate(known)
        if before is not None and o.status is not _PENDING and before.step is None
    ]
    if len(picks) < 2 or len({known[i][0].id for i in picks}) < len(picks):
        return set()
    rows = [_final_params(known[i][0], now) for i in picks]
    conn.execute("SAVEPOINT finish_at_once")
    if conn.execute_values(_FINISH_MANY, rows) == len(rows):
        conn.execute("RELEASE finish_at_once")
        return set(picks)
    conn.execute("ROLLBACK TO finish_at_once")
    conn.execute("RELEASE finish_at_once")
    return set()


def finish(tx: Tx, claimed: Claimed, outcomes: Sequence[Outcome], now: float) -> list[Job | None]:
    conn = tx.conn
    execute = conn.execute
    remembered = claimed.jobs
    known: list[tuple[Outcome, Job | None]] = []
    for o in outcomes:
        before = remembered.pop(o.id, None)
        if before is None or before.token != o.token:
            row = execute(SELECT_JOB, (o.id,)).fetchone()
            before = None if row is None else job_from_row(row)
        known.append((o, before))
    done = _finish_at_once(conn, known, now)
    out: list[Job | None] = []
    for i, (o, before) in enumerate(known):
        status = o.status
        if before is None:
            out.append(None)
            continue
        if i in done:
            changed = 1
        elif status is _PENDING:
            run_at = now if o.run_at is None else o.run_at
            changed = execute(
                _FINISH_PENDING,
                (
                    1 if o.released else 0,
                    run_at,
                    o.error,
                    o.traceback,
                    o.started_at,
                    o.id,
                    o.token,
                ),
            ).rowcount
        else:
            changed = execute(_FINISH_FINAL, _final_params(o, now)).rowcount
        if not changed:
            out.append(None)
            continue
        if o.started_at is not None:
            tx.event("job.started", o.started_at, transitions.started(before, o.started_at))
        job = transitions.finished(before, o, now=now)
        tx.moved(job, "running", status.value)
        kind = transitions.outcome_event(o)
        if kind is not None:
            tx.event(kind, now, job)
        if status is _PENDING:
            tx.work = True
        elif job.step is not None:
            _step_ended(tx, job, now)
        out.append(job)
    return out


def mark_started(tx: Tx, claimed: Claimed, starts: Sequence[tuple[str, int, float]]) -> list[bool]:
    conn = tx.conn
    sql = "UPDATE jobs SET started_at = ? WHERE id = ? AND status = 'running' AND token = ?"
    out: list[bool] = []
    for job_id, token, at in starts:
        if conn.execute(sql, (at, job_id, token)).rowcount != 1:
            out.append(False)
            continue
        job = claimed.current(conn, job_id, token)
        if job is not None:
            job = transitions.started(job, at)
            if job_id in claimed.jobs:
                claimed.jobs[job_id] = job
            tx.event("job.started", at, job)
        out.append(True)
    return out


def extend(tx: Tx, leases: Sequence[tuple[str, int]], until: float) -> list[bool]:
    execute = tx.conn.execute
    sql = "UPDATE jobs SET lease_until = ? WHERE id = ? AND status = 'running' AND token = ?"
    return [execute(sql, (until, job_id, token)).rowcount == 1 for job_id, token in leases]


_RESCUE = (
    "UPDATE jobs SET status = ?, attempts = ?, rescues = ?, run_at = ?, error = ?, "
    "traceback = ?, finished_at = ?, lease_until = NULL, "
    f"seq = CASE WHEN ? = 'pending' THEN {NEXT_SEQ} ELSE seq END "
    "WHERE id = ? AND token = ? AND status = 'running'"
)


def rescue(tx: Tx, now: float) -> list[Job]:
    conn = tx.conn
    expired = conn.execute(
        f"SELECT {COLUMNS} FROM jobs WHERE status = 'running' AND lease_until <= ?", (now,)
    ).fetchall()
    out: list[Job] = []
    for row in expired:
        before = job_from_row(row)
        job = transitions.rescued(before, now=now)
        changed = conn.execute(
            _RESCUE,
            (
                job.status.value,
                job.attempts,
                job.rescues,
                job.run_at,
                job.error,
                job.traceback,
                job.finished_at,
                job.status.value,
                job.id,
                before.token,
            ),
        ).rowcount
        if not changed:
            continue
        tx.moved(job, "running", job.status.value)
        tx.event("job.rescued", now, job)
        if job.status is _PENDING:
            tx.work = True
        elif job.step is not None:
            _step_ended(tx, job, now)
        out.append(job)
    return out


def cancel(tx: Tx, job_id: str, now: float) -> Job | Exception:
    conn = tx.conn
    row = conn.execute(SELECT_JOB, (job_id,)).fetchone()
    if row is None:
        return JobNotFound(job_id)
    before = job_from_row(row)
    if before.status is JobStatus.CANCELLED:
        return before
    if before.status is not _PENDING and before.status is not _RUNNING:
        return InvalidTransition(job_id, before.status, "cancel")
    job = transitions.cancelled(before, now=now)
    conn.execute(
        "UPDATE jobs SET status = 'cancelled', finished_at = ?, lease_until = NULL, step = ? "
        "WHERE id = ?",
        (now, step_json(job), job_id),
    )
    tx.moved(job, stored_status(before), "cancelled")
    tx.event("job.cancelled", now, job)
    if job.step is not None:
        _step_ended(tx, job, now)
    return job


def retry(tx: Tx, job_id: str, now: float) -> Job | Exception:
    conn = tx.conn
    row = conn.execute(SELECT_JOB, (job_id,)).fetchone()
    if row is None:
        return JobNotFound(job_id)
    before = job_from_row(row)
    if before.status is not JobStatus.FAILED and before.status is not JobStatus.CANCELLED:
        return InvalidTransition(job_id, before.status, "retry")
    job = transitions.retried(before, now=now)
    conn.execute(
        f"UPDATE jobs SET status = 'pending', seq = {NEXT_SEQ}, attempts = 0, rescues = 0, "
        "run_at = ?, result = NULL, error = NULL, traceback = NULL, progress = NULL, "
        "started_at = NULL, finished_at = NULL, lease_until = NULL WHERE id = ?",
        (now, job_id),
    )
    tx.moved(job, before.status.value, "pending")
    tx.event("job.enqueued", now, job)
    tx.work = True
    return job


def set_progress(
    tx: Tx, claimed: Claimed, job_id: str, token: int, progress: Any, now: float
) -> bool:
    conn = tx.conn
    cursor = conn.execute(
        "UPDATE jobs SET progress = ? WHERE id = ? AND status = 'running' AND token = ?",
        (to_json(progress), job_id, token),
    )
    if cursor.rowcount != 1:
        return False
    job = claimed.current(conn, job_id, token)
    if job is not None:
        job = replace(job, progress=progress)
        if job_id in claimed.jobs:
            claimed.jobs[job_id] = job
        tx.event("job.progress", now, job)
    return True


def delete_finished(tx: Tx, ids: Sequence[str], cutoff: float) -> int:
    """Delete the given finished jobs that are still finished before ``cutoff`` (a job
    retried since it was archived stays)."""
    execute = tx.conn.execute
    deleted = 0
    # a step stays while its workflow runs: its result may be an input still to come
    sql = (
        f"DELETE FROM jobs WHERE id = ? AND status IN {_FINAL_SQL} AND finished_at < ? "
        "AND (workflow IS NULL OR NOT EXISTS (SELECT 1 FROM jobs AS live "
        "WHERE live.workflow = jobs.workflow "
        "AND live.status IN ('pending', 'running', 'blocked'))) "
        "RETURNING queue, task, status"
    )
    for job_id in ids:
        row = execute(sql, (job_id, cutoff)).fetchone()
        if row is not None:
            key = (row[0], row[1], row[2])
            tx.counts[key] = tx.counts.get(key, 0) - 1
            deleted += 1
    if deleted:  # workflows whose every step is gone
        tx.conn.execute(
            "DELETE FROM workflows WHERE NOT EXISTS "
            "(SELECT 1 FROM jobs WHERE jobs.workflow = workflows.id)"
        )
    return deleted


def prune_events(tx: Tx, cutoff: float) -> int:
    """Delete event log entries older than ``cutoff``, but never the newest one: it keeps
    the largest id, so the next id is one no reader has seen."""
    return tx.conn.execute(
        "DELETE FROM job_events WHERE at < ? AND id < (SELECT max(id) FROM job_events)",
        (cutoff,),
    ).rowcount


def recount(tx: Tx) -> None:
    """Rebuild task_counts from the jobs table (after hand edits of the file)."""
    tx.conn.execute("DELETE FROM task_counts")
    tx.conn.execute(
        "INSERT INTO task_counts (queue, task, status, n) "
        "SELECT queue, task, status, count(*) FROM jobs GROUP BY queue, task, status"
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


def register_worker(tx: Tx, info: WorkerInfo) -> None:
    tx.conn.execute(
        "INSERT OR REPLACE INTO hq_workers (name, expires_at, info) VALUES (?, ?, ?)",
        (info.name, info.expires_at, encode(info)),
    )
    # forget pools that are long gone, so the table stays as small as the fleet
    tx.conn.execute("DELETE FROM hq_workers WHERE expires_at < ?", (info.seen_at - 86_400,))


def unregister_worker(tx: Tx, name: str) -> None:
    tx.conn.execute("DELETE FROM hq_workers WHERE name = ?", (name,))


# -- reads (run on the reader connection, outside any write transaction) ------------

_read_worker = msgspec.json.Decoder(WorkerInfo).decode


def workers(conn: Connection, now: float) -> list[WorkerInfo]:
    rows = conn.execute(
        "SELECT info FROM hq_workers WHERE expires_at > ? ORDER BY name", (now,)
    ).fetchall()
    return [_read_worker(row[0]) for row in rows]


_JOB_COLUMNS = ", ".join(f"j.{name.strip()}" for name in COLUMNS.split(","))
_READ_EVENTS = (
    f"SELECT e.id, e.type, e.at, e.origin, {_JOB_COLUMNS} FROM job_events AS e "
    "JOIN jobs AS j ON j.id = e.job_id WHERE e.id > ? ORDER BY e.id LIMIT ?"
)
# the origin is tested on the log's row, before the job's row is looked up and decoded
_READ_OTHERS_EVENTS = (
    f"SELECT e.id, e.type, e.at, e.origin, {_JOB_COLUMNS} FROM job_events AS e "
    "JOIN jobs AS j ON j.id = e.job_id WHERE e.id > ? AND e.origin <> ? ORDER BY e.id LIMIT ?"
)


def read_events(
    conn: Connection, after: int, limit: int, skip_origin: str | None = None
) -> list[StoredEvent]:
    """Entries after ``after`` (but those of ``skip_origin``), each with its job as
    stored now (entries of jobs that retention deleted are left out)."""
    if skip_origin is None:
        rows = conn.execute(_READ_EVENTS, (after, limit)).fetchall()
    else:
        rows = conn.execute(_READ_OTHERS_EVENTS, (after, skip_origin, limit)).fetchall()
    return [
        StoredEvent(id=row[0], type=row[1], at=row[2], origin=row[3], job=job_from_row(row[4:]))
        for row in rows
    ]


def last_event_id(conn: Connection) -> int:
    value = conn.execute("SELECT max(id) FROM job_events").fetchone()[0]
    return 0 if value is None else int(value)


def backlog(conn: Connection) -> list[TaskBacklog]:
    out: list[TaskBacklog] = []
    rows = conn.execute(
        "SELECT queue, task, n FROM task_counts WHERE status = 'pending' AND n > 0 "
        "ORDER BY queue, task"
    ).fetchall()
    sql = _next_run_sql(1, bool(rows) and conn.execute(_TENANTED).fetchone()[0] == 1)
    for queue, task, n in rows:
        oldest = conn.execute(sql, {"q0": queue, "t0": task}).fetchone()[0]
        out.append(TaskBacklog(queue=queue, task=task, pending=n, oldest_run_at=oldest))
    return out


def get(conn: Connection, job_id: str) -> Job | None:
    row = conn.execute(SELECT_JOB, (job_id,)).fetchone()
    return None if row is None else job_from_row(row)


def list_jobs(
    conn: Connection, filters: dict[str, Any], cursor: str | None, limit: int
) -> list[Job]:
    params = dict(filters)
    where = [f"{name} = :{name}" for name in filters]
    if params.get("status") == "pending":  # blocked workflow steps are pending too
        where[list(filters).index("status")] = "status IN ('pending', 'blocked')"
        del params["status"]
    if cursor is not None:
        where.append("id < :cursor")
        params["cursor"] = cursor
    params["limit"] = limit
    sql = f"SELECT {COLUMNS} FROM jobs"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id DESC LIMIT :limit"
    return [job_from_row(row) for row in conn.execute(sql, params).fetchall()]


def counts(conn: Connection) -> list[tuple[str, str, int]]:
    return conn.execute(
        "SELECT queue, status, sum(n) FROM task_counts GROUP BY queue, status"
    ).fetchall()


@lru_cache(maxsize=128)
def _next_run_sql(pairs: int, tenanted: bool) -> str:
    """The earliest run_at of the pending jobs of ``pairs`` (queue, task) pairs: a seek
    per pair and priority, and with jobs of tenants pending, per tenant as well."""
    if tenanted:
        return (
            f"{_fair.lines_sql(pairs)}SELECT min((SELECT d.run_at FROM jobs AS d "
            "WHERE d.status = 'pending' AND d.queue = l.q AND d.task = l.t "
            "AND d.priority = l.r AND d.tenant IS l.tenant ORDER BY d.run_at LIMIT 1)) "
            "FROM lines AS l"
        )
    if pairs * 4 > _MAX_PARTS:
        names = ", ".join(f"(:q{i}, :t{i})" for i in range(pairs))
        return (
            "SELECT min(run_at) FROM jobs WHERE status = 'pending' "
            f"AND (queue, task) IN (VALUES {names}){_UNTENANTED}"
        )
    parts = [
        "SELECT min(run_at) AS m FROM jobs WHERE status = 'pending' "
        f"AND queue = :q{i} AND task = :t{i} AND priority = {rank}{_UNTENANTED}"
        for i in range(pairs)
        for rank in range(4)
    ]
    return f"SELECT min(m) FROM ({' UNION ALL '.join(parts)})"


def next_run_at(
    conn: Connection, queues: Sequence[str] | None, tasks: Sequence[str] | None = None
) -> float | None:
    pairs = pending_pairs(conn, queues, tasks)
    if not pairs:
        return None
    sql = _next_run_sql(len(pairs), conn.execute(_TENANTED).fetchone()[0] == 1)
    value: float | None = conn.execute(sql, _pair_params(pairs)).fetchone()[0]
    return value


def pause_queue(tx: Tx, name: str, paused: bool, now: float) -> None:
    """Pause or resume ``name``; a resume that unpaused it bumps the work counter, so idle
    workers in every process look again."""
    conn = tx.conn
    if paused:
        conn.execute(
            "INSERT OR IGNORE INTO paused_queues (name, paused_at) VALUES (?, ?)", (name, now)
        )
    elif conn.execute("DELETE FROM paused_queues WHERE name = ?", (name,)).rowcount:
        tx.work = True


def paused_queues(conn: Connection) -> list[str]:
    return [name for (name,) in conn.execute("SELECT name FROM paused_queues ORDER BY name")]


def any_expired(conn: Connection, now: float) -> bool:
    row = conn.execute(
        "SELECT 1 FROM jobs WHERE status = 'running' AND lease_until <= ? LIMIT 1", (now,)
    ).fetchone()
    return row is not None


def poll(conn: Connection, data_version: int) -> tuple[int, int | None]:
    """The connection's data version, and the work version when the data changed."""
    version: int = conn.execute("PRAGMA data_version").fetchone()[0]
    if version == data_version:
        return version, None
    work: int = conn.execute("SELECT value FROM hq_meta WHERE name = 'work'").fetchone()[0]
    return version, work


def finished_before(
    conn: Connection, cutoff: float, after: int, limit: int
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


def _step_ended(tx: Tx, job: Job, now: float) -> None:
    from ._workflows import step_ended  # it builds on this module

    step_ended(tx, job, now)


def execute_one(tx: Tx, sql: str, params: tuple[object, ...]) -> list[Any]:
    """One statement of a side table, in a batch of the storage's writer."""
    return tx.conn.execute(sql, params).fetchall()


class TakeOnce:
    """The rows of a ``take`` callable, taken on the first call and given again on the
    next: a batch that runs again without a failed op must write the same rows (the
    first run's were rolled back), not what came in since."""

    __slots__ = ("_rows", "_take")

    def __init__(self, take: Callable[[], Sequence[Sequence[object]]]) -> None:
        self._take = take
        self._rows: Sequence[Sequence[object]] | None = None

    def __call__(self) -> Sequence[Sequence[object]]:
        if self._rows is None:
            self._rows = self._take()
        return self._rows


def execute_taken(tx: Tx, sql: str, rows: TakeOnce) -> int:
    """The rows that ``rows()`` gives as the batch runs, inserted into a side table."""
    taken = rows()
    if taken:
        tx.conn.execute_values(sql, taken)
    return len(taken)
