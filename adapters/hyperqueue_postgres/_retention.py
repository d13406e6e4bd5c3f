"""Retention: finished jobs archived to gzip JSON-lines files, then deleted, in batches.

The archive format is the SQLite adapter's (one job per line, msgspec JSON of
:class:`hyperqueue.Job`, gzip; files named ``jobs-<finished UTC>-<first id>.jsonl.gz``),
so one reader reads both: :func:`read_archive`.

A batch is one transaction: its jobs are locked (``FOR UPDATE SKIP LOCKED``), written
to their archive file (temporary name, fsync, rename), then deleted, and the transaction
commits. A crash between the file and the commit leaves the jobs archived *and* stored
(the next prune archives them again), never neither; two processes pruning at once
take different jobs (each skips the other's locked rows), so no job is archived twice
by them; a job retried meanwhile waits for the batch, or is skipped by it.

Candidates are found by walking the index ``(status, id)`` once per final status, in id
order (ids grow with creation time): no index is kept up on every finish for pruning.
"""

from __future__ import annotations

import gzip
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import msgspec

import hyperqueue as hq
from hyperqueue import Job

from ._rows import job_from_row, prefixed
from ._tx import Tx

__all__ = ["PruneReport", "read_archive", "retention_service", "write_archive"]

FINAL = ("completed", "failed", "cancelled")
EVENT_BATCH = 10_000
RETENTION_LEASE = "retention"
"""The leader lease of :func:`retention_service` (see ``PostgresStorage.lead``)."""
"""Event log ids looked at by one DELETE of a prune."""

_encode = msgspec.json.Encoder().encode
_decode_job = msgspec.json.Decoder(Job).decode


class PruneReport(msgspec.Struct, frozen=True, kw_only=True):
    """What one prune did: jobs finished before ``cutoff`` were archived (into
    ``files``) and deleted, expired idempotency keys forgotten, and event log entries
    older than ``cutoff`` deleted. The same record as ``hyperqueue_sqlite.PruneReport``."""

    cutoff: float
    pruned: int
    archived: int
    files: tuple[str, ...] = ()
    keys_forgotten: int = 0
    events_pruned: int = 0


def write_archive(folder: Path, jobs: Sequence[Job]) -> Path:
    """Write ``jobs`` to a new gzip JSON-lines file in ``folder``, durably; its path."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(jobs[0].finished_at or 0.0))
    final = folder / f"jobs-{stamp}-{jobs[0].id}.jsonl.gz"
    partial = final.with_name(final.name + ".partial")
    with open(partial, "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6) as zipped:
            zipped.write(b"\n".join(_encode(job) for job in jobs) + b"\n")
        raw.flush()
        os.fsync(raw.fileno())
    os.replace(partial, final)
    directory = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return final


def read_archive(path: str | os.PathLike[str]) -> Iterator[Job]:
    """The jobs in one archive file (of this adapter or the SQLite one), as
    :class:`hyperqueue.Job` records."""
    with gzip.open(path, "rb") as lines:
        for line in lines:
            if line.strip():
                yield _decode_job(line)


def retention_service(
    storage: Any,
    *,
    keep_for: float = 7 * 24 * 3600.0,
    archive_dir: str | os.PathLike[str] | None = None,
    interval: float = 3600.0,
    clock: hq.Clock | None = None,
    name: str = "postgres-retention",
) -> hq.Service:
    """A service that, every ``interval`` seconds (default 1 h), prunes jobs of
    ``storage`` (a :class:`~hyperqueue_postgres.PostgresStorage`) that finished more
    than ``keep_for`` seconds ago (default 604,800: 7 days), archiving them first to
    ``archive_dir`` when one is given.

    Unlike SQLite's ``maintenance_service`` there is no low-disk rule (the database's
    disk is the server's, not this process's) and no vacuum (autovacuum's job).
    Several processes may run it on one database: one of them at a time prunes (the
    holder of the leader lease ``"retention"``), the others take over if it stops. Run it
    under an :class:`hyperqueue.Supervisor`::

        async with hq.Supervisor() as services:
            services.add(retention_service(storage, keep_for=30 * 86400))
    """
    if not keep_for >= 0:
        raise ValueError("keep_for must be >= 0 seconds")
    now = (clock if clock is not None else hq.SystemClock()).now

    async def prune() -> None:
        at = now()
        # one process prunes at a time; if it stops, another takes over within three
        # intervals
        if await storage.lead(RETENTION_LEASE, now=at, ttl=3 * interval) is not None:
            await storage.prune(older_than=keep_for, now=at, archive_dir=archive_dir)

    return hq.Service(name, prune, interval=interval)


# -- statements ----------------------------------------------------------------------

_CANDIDATES = (
    "SELECT id FROM hq_jobs WHERE status = $1 AND id > $2 AND finished_at < $3 ORDER BY id LIMIT $4"
)
# a step stays while its workflow runs: its result may be an input still to come
_LOCK_DOOMED = f"""
SELECT {prefixed("j")} FROM hq_jobs AS j
WHERE j.id = ANY($1::text[]) AND j.status = ANY($2::text[]) AND j.finished_at < $3
AND (j.workflow IS NULL OR NOT EXISTS (
    SELECT 1 FROM hq_jobs AS live WHERE live.workflow = j.workflow
    AND live.status IN ('pending', 'running', 'blocked')))
ORDER BY j.id FOR UPDATE OF j SKIP LOCKED
"""
_DELETE = "DELETE FROM hq_jobs WHERE id = ANY($1::text[]) RETURNING queue, task, status"
_DROP_FLOWS = (
    "DELETE FROM hq_workflows AS w WHERE w.id = ANY($1::text[]) "
    "AND NOT EXISTS (SELECT 1 FROM hq_jobs WHERE hq_jobs.workflow = w.id)"
)
# One range of ids per statement, each statement its own short transaction. ``left``
# counts the range's entries that stay (newer than the cutoff, or the newest entry,
# which keeps the largest id so the next id is one no reader has seen).
_PRUNE_EVENTS = """
WITH top AS (SELECT max(id) AS id FROM hq_job_events),
gone AS (
    DELETE FROM hq_job_events WHERE id >= $1 AND id < $2 AND at < $3
    AND id < (SELECT id FROM top) RETURNING 1
)
SELECT (SELECT count(*) FROM gone),
    (SELECT count(*) FROM hq_job_events WHERE id >= $1 AND id < $2),
    (SELECT id FROM top)
"""


async def candidates(conn: Any, status: str, after: str, cutoff: float, limit: int) -> list[str]:
    """Ids of up to ``limit`` jobs in ``status`` finished before ``cutoff``, after id
    ``after``, in id order (locks nothing)."""
    return [row[0] for row in await conn.fetch(_CANDIDATES, status, after, cutoff, limit)]


async def prune_batch(
    tx: Tx, ids: Sequence[str], cutoff: float, folder: Path | None
) -> tuple[int, str | None]:
    """Lock the jobs of ``ids`` that may go, archive them into ``folder`` (if given)
    and delete them; how many went, and the archive file."""
    await tx.lock_flows_of(ids)  # workflows before their steps, as every writer does
    rows = await tx.conn.fetch(_LOCK_DOOMED, list(ids), list(FINAL), cutoff)
    if not rows:
        return 0, None
    jobs = [job_from_row(row) for row in rows]
    written: str | None = None
    if folder is not None:
        written = str(await anyio.to_thread.run_sync(write_archive, folder, jobs))
    deleted = await tx.conn.fetch(_DELETE, [job.id for job in jobs])
    for queue, task, status in deleted:
        key = (queue, task, status)
        tx.counts[key] = tx.counts.get(key, 0) - 1
    flows = sorted({job.step.workflow for job in jobs if job.step is not None})
    if flows:  # workflows whose every step is gone
        await tx.conn.execute(_DROP_FLOWS, flows)
    return len(deleted), written


async def forget_keys(tx: Tx, now: float) -> int:
    status: str = await tx.conn.execute("DELETE FROM hq_job_keys WHERE expires_at <= $1", now)
    return int(status.rsplit(" ", 1)[1])


async def prune_events(conn: Any, cutoff: float) -> int:
    """Delete event log entries older than ``cutoff`` but never the newest one, a range
    of ids at a time from the oldest; stops at the first range where some entry stays
    (ids follow commit order, so later ranges are newer). Entries not numbered yet
    stay (see :mod:`._events`)."""
    from ._events import sequence

    await sequence(conn)
    first = await conn.fetchval("SELECT min(id) FROM hq_job_events")
    if first is None:
        return 0
    low = int(first)
    pruned = 0
    while True:
        gone, there, top = await conn.fetchrow(_PRUNE_EVENTS, low, low + EVENT_BATCH, cutoff)
        pruned += int(gone)
        low += EVENT_BATCH
        if gone < there or top is None or low > top:
            return pruned
