"""One write transaction: the rows it changed, and what it writes besides them.

A :class:`Tx` gathers the count deltas, the event log entries and whether work became
ready, then :meth:`Tx.flush` writes them all in one statement just before the commit:
count deltas and events appended (never updated, so no writer waits for another on a
shared row), and one ``pg_notify`` per transaction that made work ready (PostgreSQL
takes a global lock at the commit of a transaction that notified: once per write, not
once per job), or none when another notifying transaction of the storage is in flight
(see :mod:`._wakeup`).

The event ids are given later, in commit order (see :mod:`._events`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hyperqueue import Job

from ._rows import COLUMNS, SAVE, job_from_row, save_args
from ._schema import LOCK_CLASS
from ._wakeup import NotifyGate

__all__ = ["CHANNEL", "TENANT_QUEUED_LOCK", "TENANT_RUNNING_LOCK", "Tx", "lock_names"]

CHANNEL = "hq_work"
"""The LISTEN/NOTIFY channel that says new work may be ready."""
TENANT_RUNNING_LOCK = LOCK_CLASS + 3
TENANT_QUEUED_LOCK = LOCK_CLASS + 4

SELECT_JOB = f"SELECT {COLUMNS} FROM hq_jobs WHERE id = $1"
LOCK_JOBS = f"SELECT {COLUMNS} FROM hq_jobs WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE"

_FLUSH = """
WITH counted AS (
    INSERT INTO hq_job_counts (queue, task, status, n)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[])
), logged AS (
    INSERT INTO hq_job_events (at, type, job_id, origin)
    SELECT u.at, u.type, u.job_id, $8
    FROM unnest($5::float8[], $6::text[], $7::text[]) WITH ORDINALITY AS u(at, type, job_id, ord)
    ORDER BY u.ord
)
SELECT CASE WHEN $9 THEN pg_notify('hq_work', '') END
"""

# The workflows of some jobs, locked in one order (by id) before any of their rows is
# touched: every move of a workflow's graph holds its row, so two transactions that
# end steps of one workflow take turns and never deadlock on its steps.
_LOCK_FLOWS = "SELECT id FROM hq_workflows WHERE id = ANY($1::text[]) ORDER BY id FOR NO KEY UPDATE"
_FLOWS_OF = (
    "SELECT DISTINCT workflow FROM hq_jobs WHERE id = ANY($1::text[]) AND workflow IS NOT NULL"
)

_LOCK_NAMES = (
    "SELECT pg_advisory_xact_lock($1, h) FROM "
    "(SELECT DISTINCT hashtext(name) AS h FROM unnest($2::text[]) AS name ORDER BY 1) AS s"
)


async def lock_names(conn: Any, lock: int, names: Iterable[str]) -> None:
    """Take the advisory locks of ``names`` in lock class ``lock`` (in one order, so
    two transactions taking overlapping sets cannot deadlock)."""
    await conn.execute(_LOCK_NAMES, lock, sorted(set(names)))


class Tx:
    """A write transaction on ``conn``; see the module docstring."""

    __slots__ = ("conn", "counts", "events", "gate", "notify", "origin", "took", "work")

    def __init__(
        self, conn: Any, origin: str, *, notify: bool = True, gate: NotifyGate | None = None
    ) -> None:
        self.conn = conn
        self.origin = origin
        self.notify = notify
        self.gate = gate
        """Decides whether this transaction carries the NOTIFY (see :mod:`._wakeup`);
        without one, every transaction that made work ready notifies."""
        self.took = False
        """Whether :meth:`flush` took the gate's NOTIFY."""
        self.counts: dict[tuple[str, str, str], int] = {}
        self.events: list[tuple[float, str, str]] = []
        self.work = False

    @property
    def owes_notify(self) -> bool:
        """Made work ready but left the NOTIFY to the gate's trailing one."""
        return self.work and self.notify and not self.took

    def count(self, job: Job, status: str, n: int) -> None:
        key = (job.queue, job.task, status)
        self.counts[key] = self.counts.get(key, 0) + n

    def moved(self, job: Job, old: str, new: str) -> None:
        if old != new:
            self.count(job, old, -1)
            self.count(job, new, 1)

    def event(self, kind: str, at: float, job: Job) -> None:
        self.events.append((at, kind, job.id))

    async def get(self, job_id: str) -> Job | None:
        row = await self.conn.fetchrow(SELECT_JOB, job_id)
        return None if row is None else job_from_row(row)

    async def lock(self, ids: Iterable[str]) -> dict[str, Job]:
        """The jobs of ``ids`` that exist, their rows locked until the commit."""
        rows = await self.conn.fetch(LOCK_JOBS, list(ids))
        return {row[0]: job_from_row(row) for row in rows}

    async def lock_flows(self, workflows: Iterable[str | None]) -> None:
        names = sorted({w for w in workflows if w is not None})
        if names:
            await self.conn.execute(_LOCK_FLOWS, names)

    async def lock_flows_of(self, ids: Iterable[str]) -> None:
        """Lock the workflows of the jobs ``ids`` (read first: a job's workflow never
        changes, so the read needs no lock)."""
        rows = await self.conn.fetch(_FLOWS_OF, list(ids))
        await self.lock_flows(row[0] for row in rows)

    async def save(self, jobs: Iterable[tuple[Job, bool]]) -> None:
        """Write ``(job, requeue)`` pairs as transitions made them."""
        batch = list(jobs)
        if batch:
            await self.conn.execute(SAVE, *save_args(batch))

    async def flush(self) -> None:
        counts = [(key, n) for key, n in self.counts.items() if n]
        notify = self.work and self.notify
        if notify and self.gate is not None:
            notify = self.took = self.gate.take()
        if not counts and not self.events and not notify:
            return
        await self.conn.execute(
            _FLUSH,
            [key[0] for key, _ in counts],
            [key[1] for key, _ in counts],
            [key[2] for key, _ in counts],
            [n for _, n in counts],
            [e[0] for e in self.events],
            [e[1] for e in self.events],
            [e[2] for e in self.events],
            self.origin,
            notify,
        )


async def check_quotas(conn: Any, jobs: Iterable[Job], max_queued: Any) -> None:
    """Raise QuotaExceeded if storing ``jobs`` would pass a tenant's ``max_queued``.

    The tenants' locks are held to the commit, so two enqueues for one tenant count
    one after the other, in every process."""
    from hyperqueue import QuotaExceeded

    adding: dict[str, int] = {}
    for job in jobs:
        if job.tenant is not None and job.tenant in max_queued:
            adding[job.tenant] = adding.get(job.tenant, 0) + 1
    if not adding:
        return
    await lock_names(conn, TENANT_QUEUED_LOCK, adding)
    rows = await conn.fetch(
        "SELECT tenant, count(*) FROM hq_jobs WHERE status = 'pending' "
        "AND tenant = ANY($1::text[]) GROUP BY tenant",
        list(adding),
    )
    queued = {row[0]: row[1] for row in rows}
    for tenant, n in adding.items():
        if queued.get(tenant, 0) + n > max_queued[tenant]:
            raise QuotaExceeded(tenant, max_queued[tenant], queued.get(tenant, 0))
