"""The event log: ids in commit order, given after the commit.

A sequence (or identity) cannot number the log by itself: two transactions take ids
10 and 11, the one with 11 commits first, a reader reads 11 and resumes "after 11",
and 10, committed a moment later, is never read. Two correct ways out:

- serialize the writers: each takes one transaction-level advisory lock before it
  inserts its entries and holds it to its commit. Simple, but every transaction that
  writes an event then commits one at a time (no group commit across them), and a
  transactional enqueue (``connection=``) would hold the lock until the *application*
  commits, stalling every other writer meanwhile;
- number after the commit (what this module does): writers insert entries with
  ``id`` NULL, concurrently, with nothing shared. A reader first runs the sequencer:
  under one transaction-level advisory lock, it gives the committed entries that have
  no id yet the next ids, in the order they were written (``n``), and commits. Only
  committed rows are visible to it and sequencers run one at a time, so an entry
  committed later always gets a larger id than every id already handed out: a reader
  that resumes after an id misses nothing and sees nothing twice.

The cost is one small UPDATE per entry, done by readers (and only while someone reads
the log: the queue's relay reads it only while it has subscribers or waiters). Entries
of one job keep their order: a job's row lock orders its transactions, and each one's
entries get ``n`` after the previous one's commit.
"""

from __future__ import annotations

from typing import Any

from hyperqueue import StoredEvent

from ._rows import job_from_row, prefixed
from ._schema import LOCK_CLASS

__all__ = ["last_event_id", "read_events", "sequence"]

EVENTS_LOCK = LOCK_CLASS + 2
BATCH = 10_000
"""Most entries numbered by one run of the sequencer."""

_ANY_NEW = "SELECT EXISTS (SELECT 1 FROM hq_job_events WHERE id IS NULL)"
_ASSIGN = f"""
WITH top AS (SELECT coalesce(max(id), 0) AS id FROM hq_job_events),
new AS (
    SELECT n, row_number() OVER (ORDER BY n) AS r FROM hq_job_events
    WHERE id IS NULL ORDER BY n LIMIT {BATCH}
)
UPDATE hq_job_events AS e SET id = top.id + new.r FROM new, top WHERE e.n = new.n
"""
_READ = (
    f"SELECT e.id, e.type, e.at, e.origin, {prefixed('j')} FROM hq_job_events AS e "
    "JOIN hq_jobs AS j ON j.id = e.job_id WHERE e.id > $1 ORDER BY e.id LIMIT $2"
)
# the origin is tested on the log's row, before the job's row is joined and sent
_READ_OTHERS = (
    f"SELECT e.id, e.type, e.at, e.origin, {prefixed('j')} FROM hq_job_events AS e "
    "JOIN hq_jobs AS j ON j.id = e.job_id WHERE e.id > $1 AND e.origin <> $3 "
    "ORDER BY e.id LIMIT $2"
)


async def sequence(conn: Any) -> None:
    """Number the committed entries that have no id yet (see the module docstring)."""
    if not await conn.fetchval(_ANY_NEW):
        return
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, 0)", EVENTS_LOCK)
        # a new statement: its snapshot sees what the previous sequencer committed
        await conn.execute(_ASSIGN)


async def read_events(
    conn: Any, after: int, limit: int, skip_origin: str | None = None
) -> list[StoredEvent]:
    """Entries after ``after`` (but those of ``skip_origin``), each with its job as
    stored now."""
    await sequence(conn)
    if skip_origin is None:
        rows = await conn.fetch(_READ, after, limit)
    else:
        rows = await conn.fetch(_READ_OTHERS, after, limit, skip_origin)
    return [
        StoredEvent(id=row[0], type=row[1], at=row[2], origin=row[3], job=job_from_row(row, 4))
        for row in rows
    ]


async def last_event_id(conn: Any) -> int:
    await sequence(conn)
    value = await conn.fetchval("SELECT max(id) FROM hq_job_events")
    return 0 if value is None else int(value)
