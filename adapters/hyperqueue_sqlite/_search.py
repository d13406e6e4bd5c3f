"""Search, exact counts, bulk actions and error groups in SQL (see hyperqueue.JobFilter,
whose ``matches`` is the reference these queries agree with).

A filter becomes one ``WHERE`` clause with named parameters. Listings walk the unique
index on ``id`` newest first (keyset, no offset); a count with only status, queue and
exact task reads the ``task_counts`` table kept in step by every write, anything else
counts the rows. A bulk action takes one batch of ids in its transaction and changes
each job through the same function as the one-job operation, so events, counts and
workflow steps follow as they would. Fingerprints are computed in Python
(:func:`hyperqueue.fingerprint`) and stored on the failed row with the token of the
claim that failed it (schema V5): :func:`fill_fingerprints` fills in those missing.
"""

from __future__ import annotations

from typing import Any

import hyperqueue as hq

from . import _sql
from ._driver import Connection
from ._rows import COLUMNS, job_from_row

__all__ = [
    "cancel_matching",
    "count",
    "discard_matching",
    "error_groups",
    "fill_fingerprints",
    "retry_matching",
    "search",
]

FILL_BATCH = 2000
_FAILED_AT = "finished_at"  # set on every failed job


def _glob(pattern: str) -> str:
    """A task glob (only ``*`` is special) as a case-sensitive SQLite ``GLOB`` pattern."""
    return "".join("[?]" if c == "?" else "[[]" if c == "[" else c for c in pattern)


def where_sql(where: hq.JobFilter) -> tuple[str, dict[str, Any]]:
    """The filter as a ``WHERE`` condition and its parameters (``1`` for every job)."""
    parts: list[str] = []
    params: dict[str, Any] = {}
    if where.status:
        # literals (status values, never user text): the planner then uses the partial
        # indexes on status (failed, running, pending), which a parameter would hide
        stored = where.stored_statuses()
        parts.append(f"status = '{stored[0]}'" if len(stored) == 1 else f"status IN {stored}")
    for name in ("queue", "tenant"):
        value = getattr(where, name)
        if value is not None:
            parts.append(f"{name} = :{name}")
            params[name] = value
    if where.task is not None:
        parts.append("task GLOB :task" if "*" in where.task else "task = :task")
        params["task"] = _glob(where.task) if "*" in where.task else where.task
    if where.error is not None:
        parts.append("error LIKE :error ESCAPE '\\'")
        params["error"] = hq.JobFilter.contains_like(where.error)
    for i, word in enumerate(where.words):
        parts.append(f"(task LIKE :w{i} ESCAPE '\\' OR error LIKE :w{i} ESCAPE '\\')")
        params[f"w{i}"] = hq.JobFilter.contains_like(word)
    if where.since is not None:
        parts.append("created_at >= :since")
        params["since"] = where.since
    if where.until is not None:
        parts.append("created_at < :until")
        params["until"] = where.until
    if where.fingerprint is not None:
        parts.append(
            "status = 'failed' AND fingerprint = :fingerprint AND fingerprint_token = token"
        )
        params["fingerprint"] = where.fingerprint
    return (" AND ".join(parts) or "1"), params


def _select(
    where: hq.JobFilter, before: str | None, limit: int, columns: str = COLUMNS, extra: str = ""
) -> tuple[str, dict[str, Any]]:
    condition, params = where_sql(where)
    if extra:
        condition += f" AND {extra}"
    if before is not None:
        condition += " AND id < :before"
        params["before"] = before
    params["limit"] = limit
    return f"SELECT {columns} FROM jobs WHERE {condition} ORDER BY id DESC LIMIT :limit", params


def search(conn: Connection, where: hq.JobFilter, cursor: str | None, limit: int) -> list[hq.Job]:
    sql, params = _select(where, cursor, limit)
    return [job_from_row(row) for row in conn.execute(sql, params).fetchall()]


def count(conn: Connection, where: hq.JobFilter) -> int:
    simple = hq.JobFilter(status=where.status, queue=where.queue, task=where.task)
    if where == simple and (where.task is None or "*" not in where.task):
        # the per-queue, task and status counts every write keeps: no row is read
        condition, params = where_sql(where)
        sql = f"SELECT coalesce(sum(n), 0) FROM task_counts WHERE {condition}"
    else:
        condition, params = where_sql(where)
        sql = f"SELECT count(*) FROM jobs WHERE {condition}"
    found: int = conn.execute(sql, params).fetchone()[0]
    return found


def _ids(
    tx: _sql.Tx, where: hq.JobFilter, action: str, before: str | None, limit: int, extra: str = ""
) -> list[str]:
    narrowed = where.for_action(action)
    if narrowed is None:
        return []
    sql, params = _select(narrowed, before, limit, "id", extra)
    return [row[0] for row in tx.conn.execute(sql, params).fetchall()]


def _done(results: list[hq.Job | Exception]) -> list[hq.Job]:
    out: list[hq.Job] = []
    for result in results:
        if isinstance(result, Exception):  # taken in this transaction: cannot happen
            raise result
        out.append(result)
    return out


def cancel_matching(
    tx: _sql.Tx, where: hq.JobFilter, now: float, limit: int, before: str | None
) -> list[hq.Job]:
    ids = _ids(tx, where, "cancel", before, limit)
    return _done([_sql.cancel(tx, job_id, now) for job_id in ids])


def retry_matching(
    tx: _sql.Tx, where: hq.JobFilter, now: float, limit: int, before: str | None
) -> list[hq.Job]:
    ids = _ids(tx, where, "retry", before, limit)
    return _done([_sql.retry(tx, job_id, now) for job_id in ids])


# a step stays while its workflow runs (its result may be an input still to come), as
# retention keeps it
_NOT_LIVE_STEP = (
    "(workflow IS NULL OR NOT EXISTS (SELECT 1 FROM jobs AS live "
    "WHERE live.workflow = jobs.workflow AND live.status IN ('pending', 'running', 'blocked')))"
)


def discard_matching(
    tx: _sql.Tx, where: hq.JobFilter, limit: int, before: str | None
) -> list[hq.Job]:
    ids = _ids(tx, where, "discard", before, limit, _NOT_LIVE_STEP)
    if not ids:
        return []
    jobs = [_sql.get(tx.conn, job_id) for job_id in ids]
    deleted = _sql.delete_finished(tx, ids, float("inf"))
    assert deleted == len(ids), (deleted, len(ids))
    return [job for job in jobs if job is not None]


def fill_fingerprints(tx: _sql.Tx) -> int:
    """Compute and store the fingerprint of up to 2,000 failed jobs that lack one (or
    whose one is from an earlier failure); returns how many (0: all are filled in)."""
    conn = tx.conn
    rows = conn.execute(
        "SELECT seq, task, error, token FROM jobs "
        "WHERE status = 'failed' AND fingerprint_token IS NOT token LIMIT ?",
        (FILL_BATCH,),
    ).fetchall()
    conn.executemany(
        "UPDATE jobs SET fingerprint = ?, fingerprint_token = ? WHERE seq = ? AND token = ?",
        [(hq.fingerprint(task, error), token, seq, token) for seq, task, error, token in rows],
    )
    return len(rows)


def error_groups(conn: Connection, where: hq.JobFilter, limit: int) -> list[hq.ErrorGroup]:
    """Groups of the failed jobs that pass ``where`` (fingerprints filled in first)."""
    narrowed = where.narrowed(status=(hq.JobStatus.FAILED,))
    if narrowed is None:
        return []
    condition, params = where_sql(narrowed)
    condition += " AND fingerprint_token = token"
    rows = conn.execute(
        f"SELECT fingerprint, count(*), min({_FAILED_AT}), max({_FAILED_AT}) FROM jobs "
        f"WHERE {condition} GROUP BY fingerprint ORDER BY 4 DESC",
        params,
    ).fetchall()
    if len(rows) > limit:  # keep the ties at the cut: the sample's id breaks them
        rows = [row for row in rows if row[3] >= rows[limit - 1][3]]
    sample_sql = (
        f"SELECT {COLUMNS} FROM jobs WHERE {condition} AND fingerprint = :fp "
        f"ORDER BY {_FAILED_AT} DESC, id DESC LIMIT 1"
    )
    groups: list[hq.ErrorGroup] = []
    for fp, n, first_at, last_at in rows:
        sample = job_from_row(conn.execute(sample_sql, {**params, "fp": fp}).fetchone())
        groups.append(hq.ErrorGroup.of(fp, sample, count=n, first_at=first_at, last_at=last_at))
    groups.sort(key=lambda g: (g.last_at, g.sample_job_id), reverse=True)
    return groups[:limit]
