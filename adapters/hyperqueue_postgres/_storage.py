"""PostgresStorage: jobs in one PostgreSQL database, shared by processes on many hosts.

asyncio only (asyncpg is an asyncio library): a queue on this storage runs under
asyncio, not trio.

- Claims take due jobs in claim order with ``FOR UPDATE SKIP LOCKED ... LIMIT n`` and
  mark them running in the same statement: one round trip per batch, and two claimers
  never wait for each other nor get the same job. Tenant caps count running jobs inside
  the claim's transaction under the tenant's advisory lock, so every process sees the
  same figures.
- Leases and fencing tokens are columns: a worker on a host that died or was cut off
  loses its jobs when its lease expires (any process rescues them), and its late
  finishes are refused.
- What a job becomes is decided by :mod:`hyperqueue.transitions`; the statements only
  find and lock the rows (see :mod:`._sql`).
- The event log numbers entries in commit order, after the commit (see :mod:`._events`).
- Counts are exact: each transaction appends its count deltas per queue, task and
  status (no row shared by two writers), reads sum them, and folds replace them by
  their sums now and then (on :meth:`~PostgresStorage.counts` and every few rescues).
- Tables are prefixed ``hq_``: a transactional enqueue shares the application's
  database. Job values (args, kwargs, result, progress, headers) are JSONB, so object
  keys come back in JSONB's order, and a string holding ``\\u0000`` is refused (JSONB
  cannot store it): the enqueue fails with :class:`~hyperqueue.StorageError`.
- Workers are woken by ``LISTEN/NOTIFY`` on one dedicated connection per storage, as a
  hint: an idle worker also looks every ``poll_interval`` seconds, so a lost
  notification (a dropped connection, a failover) delays work by that much at most.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import os
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import anyio
import asyncpg
from msgspec.structs import replace

from hyperqueue import (
    ErrorGroup,
    HyperqueueError,
    Job,
    JobFilter,
    JobStatus,
    Outcome,
    Page,
    Schedule,
    StorageError,
    StoredEvent,
    TaskBacklog,
    WorkerInfo,
    WorkflowRecord,
)

from . import _events, _leader, _retention, _schedules, _search, _sql, _workflows
from ._retention import PruneReport
from ._rows import INSERT_LOGGED, insert_args
from ._schema import LOCK_CLASS, migrate
from ._tx import CHANNEL, Tx
from ._wakeup import NotifyGate

__all__ = ["PostgresStorage"]

T = TypeVar("T")
_log = logging.getLogger("hyperqueue.postgres")
_STATUS = {status.value: status for status in JobStatus}
_STATUS["blocked"] = JobStatus.PENDING
_FOLD_LOCK = LOCK_CLASS + 5
_FOLD_EVERY = 4  # rescues between two looks at the count deltas (folded past 256 rows)
_RETRIES = 3  # attempts of a transaction that lost a deadlock or serialization race
RESCUE_LEASE = "rescue"
"""The leader lease of rescue sweeps and count folds (see :meth:`PostgresStorage.lead`)."""


def _plain(job: Job) -> bool:
    """A job the one-statement enqueue takes: no key to check, no workflow to settle."""
    return job.key is None and job.step is None


_PASSWORD = re.compile(r"(://[^:/@?]*):[^@/?]*@")

_ARRAYS = "SELECT $1::int8[], $2::int4[], $3::float8[], $4::bool[], $5::text[]"


async def _warm(conn: Any) -> None:
    """Learn the array types the storage's statements use, once per connection.

    asyncpg looks up a type it has no codec for with a query of its own on the first
    statement that needs it, on each connection; that query takes 10-20 ms, so the
    first claims and finishes on every new connection waited for it (the p99 of
    enqueue-to-start was mostly these). Preparing one statement with all of them
    moves that look-up to the connection's opening."""
    await conn.prepare(_ARRAYS)


class _Listener:
    """Signalled by this process's writes at once, by other processes' writes through
    the storage's LISTEN connection; ``wait`` also returns every ``poll_interval``
    seconds, so the worker looks for work even if a notification was lost."""

    __slots__ = ("_event", "_storage", "signalled")

    def __init__(self, storage: PostgresStorage) -> None:
        self._storage = storage
        self._event = anyio.Event()
        self.signalled = False

    def set(self) -> None:
        if not self.signalled:
            self.signalled = True
            self._event.set()

    def clear(self) -> None:
        if self.signalled:
            self.signalled = False
            self._event = anyio.Event()

    async def wait(self) -> None:
        storage = self._storage
        with anyio.move_on_after(storage.poll_interval):
            await self._event.wait()
        if not self.signalled and storage.notify and not storage._is_listening():
            await storage._start_listening()  # the connection was lost: try again


class PostgresStorage:
    """Jobs in one PostgreSQL database (``dsn``, as asyncpg takes it), shared by worker
    processes on many hosts. asyncio only. Install with
    ``pip install 'hyperqueue-jobs[postgres]'``.

    - ``min_size``, ``max_size``: the connection pool's bounds (default 4 and 10); the
      LISTEN connection comes on top, one per storage object. The ``min_size``
      connections open (and learn the storage's types) with the storage, so a worker's
      first jobs do not wait for connections to open: with 1, the first jobs of a
      worker waited 10-25 ms while its pool grew.
    - ``notify``: wake idle workers with ``LISTEN/NOTIFY`` (default ``True``). With
      PgBouncer in transaction mode, LISTEN does not work: pass ``notify=False`` (idle
      workers then look every ``poll_interval``) and ``statement_cache_size=0``.
    - ``poll_interval``: seconds between looks of an idle worker when nothing woke it
      (default 0.5).
    - ``connect_timeout``: seconds to wait for a connection (default 10).
    - ``statement_cache_size``: prepared statements kept per connection (default 100).

    ``enqueue(..., connection=conn)`` stores jobs on the application's own asyncpg
    connection, inside its transaction: they exist exactly when it commits.
    """

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = 4,
        max_size: int = 10,
        notify: bool = True,
        poll_interval: float = 0.5,
        connect_timeout: float = 10.0,
        statement_cache_size: int = 100,
    ) -> None:
        if not 1 <= max_size <= 1000 or not 0 <= min_size <= max_size:
            raise ValueError("pool sizes must satisfy 0 <= min_size <= max_size <= 1000")
        if not 0.01 <= poll_interval <= 60:
            raise ValueError("poll_interval must be between 0.01 and 60 seconds")
        if not 0 < connect_timeout <= 600:
            raise ValueError("connect_timeout must be between 0 and 600 seconds")
        self.dsn = dsn
        self.min_size = min_size
        self.max_size = max_size
        self.notify = notify
        self.poll_interval = poll_interval
        self.connect_timeout = connect_timeout
        self.statement_cache_size = statement_cache_size
        self.origin = secrets.token_hex(8)
        self._pool: Any = None
        self._listen_conn: Any = None
        self._listening = anyio.Lock()
        self._opening = anyio.Lock()
        self._listeners: list[_Listener] = []
        self._flows: dict[str, str | None] = {}  # workflow of each job claimed here
        self._rescues = 0
        self._last_rescue: float | None = None
        self._gate = NotifyGate(self._notify_now)

    def __repr__(self) -> str:
        return f"PostgresStorage({self._where()!r})"

    def _where(self) -> str:
        return _PASSWORD.sub(r"\1:***@", self.dsn)

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "PostgresStorage runs on asyncio only (asyncpg is asyncio-only); "
                "run the queue under asyncio, or use SQLiteStorage with trio"
            ) from None
        async with self._opening:
            if self._pool is not None:
                return
            try:
                pool = await asyncpg.create_pool(
                    self.dsn,
                    min_size=self.min_size,
                    max_size=self.max_size,
                    timeout=self.connect_timeout,
                    statement_cache_size=self.statement_cache_size,
                    server_settings={"application_name": "hyperqueue", "jit": "off"},
                    init=_warm,
                )
            except Exception as exc:
                raise self._error(exc, "connecting") from exc
            try:
                async with pool.acquire() as conn:
                    await migrate(conn)
            except BaseException as exc:
                with anyio.CancelScope(shield=True):
                    await pool.close()
                if isinstance(exc, Exception):
                    raise self._error(exc, "migrating the schema") from exc
                raise
            self._pool = pool

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            await self._gate.aclose()  # a wake-up still owed goes out first
            pool, self._pool = self._pool, None
            await self._stop_listening()
            if pool is not None:
                with contextlib.suppress(Exception):  # the lease then just runs out
                    async with pool.acquire(timeout=self.connect_timeout) as conn:
                        await _leader.release(conn, self.origin)
                await pool.close()

    # -- plumbing --------------------------------------------------------------------

    def _require_open(self) -> Any:
        pool = self._pool
        if pool is None:
            raise StorageError(f"PostgreSQL storage {self._where()!r} is not open")
        return pool

    def _error(self, exc: BaseException, doing: str) -> BaseException:
        """A StorageError naming the database and saying what the error means."""
        if isinstance(exc, HyperqueueError):
            return exc
        text = str(exc) or type(exc).__name__
        if isinstance(exc, asyncpg.InvalidCatalogNameError):
            problem = f"the database does not exist ({text}); create it or fix the DSN"
        elif isinstance(
            exc, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError
        ):
            problem = f"authentication failed ({text}); check the user and password in the DSN"
        elif isinstance(exc, asyncpg.InsufficientPrivilegeError):
            problem = (
                f"permission denied ({text}); the user needs CREATE on the database to "
                "migrate it, and rights on the hq_ tables"
            )
        elif isinstance(exc, asyncpg.CannotConnectNowError | OSError | TimeoutError):
            problem = (
                f"cannot connect ({text}); is the server running and accepting "
                "connections at that address?"
            )
        elif isinstance(exc, asyncpg.PostgresError):
            problem = f"{text} (SQLSTATE {exc.sqlstate})"
        else:
            problem = text
        error = StorageError(f"PostgreSQL storage {self._where()!r}: {doing} failed: {problem}")
        error.__cause__ = exc
        return error

    def _wake(self) -> None:
        for listener in self._listeners:
            listener.set()

    async def _write(
        self, doing: str, fn: Callable[..., Awaitable[T]], *args: Any, connection: Any = None
    ) -> T:
        """Run ``fn(tx, *args)`` in one transaction (on ``connection``, inside the
        caller's transaction, if given); retried when it lost a deadlock."""
        pool: Any = self._require_open() if connection is None else None
        for attempt in range(_RETRIES):
            try:
                if connection is not None:
                    async with connection.transaction():
                        tx = Tx(connection, self.origin, notify=self.notify)
                        result = await fn(tx, *args)
                        await tx.flush()
                    return result  # committed with the caller's transaction: it notifies
                async with pool.acquire() as conn:
                    tx = Tx(conn, self.origin, notify=self.notify, gate=self._gate)
                    try:
                        async with conn.transaction():
                            result = await fn(tx, *args)
                            await tx.flush()
                    finally:
                        if tx.took:
                            self._gate.landed()
                if tx.owes_notify:
                    self._gate.missed()
            except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError) as exc:
                if connection is not None or attempt == _RETRIES - 1:
                    raise self._error(exc, doing) from exc
                continue
            except HyperqueueError:
                raise
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                raise self._error(exc, doing) from exc
            if tx.work:
                self._wake()
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    async def _run(self, doing: str, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``fn(conn, *args)`` on a pooled connection (each statement its own
        transaction unless ``fn`` opens one)."""
        pool = self._require_open()
        try:
            async with pool.acquire() as conn:
                return await fn(conn, *args)
        except HyperqueueError:
            raise
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise self._error(exc, doing) from exc

    # -- the Storage protocol: writes ----------------------------------------------------

    async def enqueue(
        self,
        jobs: Sequence[Job],
        *,
        now: float,
        key_ttl: float | None,
        max_queued: Mapping[str, int] | None = None,
        connection: Any = None,
    ) -> list[Job]:
        """Store new pending jobs (see :meth:`hyperqueue.abc.Storage.enqueue`).

        ``connection``: an asyncpg connection of the application, usually inside its
        own transaction: the jobs are stored in that transaction (a savepoint of it),
        so they exist exactly when it commits, and vanish if it rolls back. Workers
        are notified at its commit. Keep that transaction short: until it ends, an
        enqueue elsewhere of the same idempotency key waits for it, and so does one for
        the same tenant when ``max_queued`` is given (its quota lock is held). The
        event log is not held up: entries are numbered after their commit.
        """
        if not jobs:
            return []
        if connection is None and not max_queued and all(_plain(job) for job in jobs):
            return await self._enqueue_plain(jobs, now)
        return await self._write(
            "enqueuing", _sql.enqueue, jobs, now, key_ttl, max_queued, connection=connection
        )

    async def _enqueue_plain(self, jobs: Sequence[Job], now: float) -> list[Job]:
        """The common enqueue (no idempotency key, quota or workflow step) in one
        statement and one round trip: the rows, their counts, their log entries and the
        NOTIFY commit together, as the general path's transaction does."""
        pool = self._require_open()
        pending = JobStatus.PENDING
        fresh = [job if job.status is pending else replace(job, status=pending) for job in jobs]
        gate = self._gate
        took = self.notify and gate.take()
        try:
            async with pool.acquire() as conn:
                await conn.execute(INSERT_LOGGED, *insert_args(fresh), now, self.origin, took)
        except HyperqueueError:
            raise
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise self._error(exc, "enqueuing") from exc
        finally:
            if took:
                gate.landed()
        if self.notify and not took:
            gate.missed()
        self._wake()
        return fresh

    async def _notify_now(self) -> None:
        """The gate's trailing NOTIFY, a statement of its own."""
        async with self._require_open().acquire() as conn:
            await conn.execute("SELECT pg_notify($1, '')", CHANNEL)

    async def claim(
        self,
        queues: Sequence[str] | None,
        *,
        limit: int,
        now: float,
        lease: float,
        worker: str,
        tasks: Sequence[str] | None = None,
        max_running: Mapping[str, int] | None = None,
    ) -> list[Job]:
        if limit < 1:
            return []
        if max_running:
            jobs = await self._write(
                "claiming",
                _sql.claim_capped,
                queues,
                limit,
                now,
                lease,
                worker,
                tasks,
                max_running,
            )
        else:
            jobs = await self._run("claiming", _sql.claim, queues, limit, now, lease, worker, tasks)
        flows = self._flows
        if len(flows) > 100_000:  # jobs whose outcome never came: forget them all
            flows.clear()
        for job in jobs:
            flows[job.id] = None if job.step is None else job.step.workflow
        return jobs

    async def mark_started(self, starts: Sequence[tuple[str, int, float]]) -> list[bool]:
        if not starts:
            return []
        return await self._run("marking jobs started", _sql.mark_started, starts, self.origin)

    async def finish(self, outcomes: Sequence[Outcome], *, now: float) -> list[Job | None]:
        if not outcomes:
            return []
        known = self._flows
        flows: list[str] | None = None
        if all(o.id in known for o in outcomes):
            flows = [w for o in outcomes if (w := known.pop(o.id)) is not None]
        return await self._write("finishing jobs", _sql.finish, outcomes, now, flows)

    async def extend(
        self, leases: Sequence[tuple[str, int]], *, now: float, lease: float
    ) -> list[bool]:
        if not leases:
            return []
        return await self._run("extending leases", _sql.extend, leases, now + lease)

    async def rescue(self, *, now: float) -> list[Job]:
        """Rescue jobs whose lease expired (see :meth:`hyperqueue.abc.Storage.rescue`),
        if this storage holds the rescue leader lease; else nothing.

        Every worker pool calls this every ``lease / 3``; one process at a time sweeps
        and folds counts for all. The lease lasts three times the time between this
        storage's last two calls (10 s at first, between 0.1 and 60 s), so when the
        leader's process dies or freezes, another takes over within about three of
        its own intervals: a lost job waits for its own lease, then at most that.
        """
        last, self._last_rescue = self._last_rescue, now
        ttl = 10.0 if last is None or now <= last else min(max(3 * (now - last), 0.1), 60.0)
        if await self.lead(RESCUE_LEASE, now=now, ttl=ttl) is None:
            return []
        self._rescues += 1
        if self._rescues % _FOLD_EVERY == 0:
            await self._run("folding counts", _fold)
        # look first, write only when needed
        if not await self._run("looking for expired leases", _sql.any_expired, now):
            return []
        return await self._write("rescuing jobs", _sql.rescue, now)

    async def lead(self, name: str, *, now: float, ttl: float) -> int | None:
        """Take or keep the leader lease ``name`` until ``now + ttl``: the lease's term
        (a number that grows with each new holder, a fencing token) while this storage
        object holds it, else ``None``. Work that one process on the database should
        do at a time asks before each round; the holder keeps the lease by asking
        again before it ends, and gives up its leases when it closes. Hosts' clocks
        must be in step, as for job leases."""
        if not ttl > 0:
            raise ValueError("ttl must be > 0 seconds")
        return await self._run("taking a leader lease", _leader.take, name, self.origin, now, ttl)

    async def cancel(self, job_id: str, *, now: float) -> Job:
        return await self._write("cancelling a job", _sql.cancel, job_id, now)

    async def retry(self, job_id: str, *, now: float) -> Job:
        return await self._write("retrying a job", _sql.retry, job_id, now)

    async def set_progress(
        self, job_id: str, token: int, progress: object, *, now: float = 0.0
    ) -> bool:
        return await self._run(
            "recording progress", _sql.set_progress, job_id, token, progress, now, self.origin
        )

    # -- workflows -----------------------------------------------------------------------

    async def enqueue_workflow(
        self,
        workflow: WorkflowRecord,
        jobs: Sequence[Job],
        *,
        now: float,
        max_queued: Mapping[str, int] | None = None,
    ) -> None:
        await self._write(
            "enqueuing a workflow", _workflows.enqueue_workflow, workflow, jobs, now, max_queued
        )

    async def get_workflow(
        self, workflow_id: str
    ) -> tuple[WorkflowRecord, builtins.list[Job]] | None:
        return await self._run("reading a workflow", _workflows.get_workflow, workflow_id)

    async def cancel_workflow(self, workflow_id: str, *, now: float) -> builtins.list[Job]:
        return await self._write(
            "cancelling a workflow", _workflows.cancel_workflow, workflow_id, now
        )

    async def retry_workflow(self, workflow_id: str, *, now: float) -> builtins.list[Job]:
        return await self._write("retrying a workflow", _workflows.retry_workflow, workflow_id, now)

    # -- periodic jobs ---------------------------------------------------------------------

    async def save_schedule(self, schedule: Schedule, *, now: float) -> Schedule:
        return await self._write("saving a schedule", _schedules.save, schedule, now)

    async def schedules(self) -> builtins.list[Schedule]:
        return await self._run("reading schedules", _schedules.read_all)

    async def fire_schedule(
        self, name: str, *, slot: float, job: Job | None, missed: int, now: float
    ) -> bool:
        return await self._write("firing a schedule", _schedules.fire, name, slot, job, missed, now)

    async def pause_schedule(self, name: str, *, paused: bool, now: float) -> Schedule:
        return await self._write("pausing a schedule", _schedules.pause, name, paused, now)

    # -- paused queues -------------------------------------------------------------------

    async def pause_queue(self, name: str, *, paused: bool, now: float) -> None:
        await self._write("pausing a queue", _sql.pause_queue, name, paused, now)

    async def paused_queues(self) -> builtins.list[str]:
        return await self._run("reading paused queues", _sql.paused_queues)

    # -- workers -------------------------------------------------------------------------

    async def register_worker(self, info: WorkerInfo) -> None:
        await self._write("registering a worker", _sql.register_worker, info)

    async def unregister_worker(self, name: str) -> None:
        await self._run("unregistering a worker", _unregister, name)

    async def workers(self, *, now: float) -> builtins.list[WorkerInfo]:
        return await self._run("reading workers", _sql.workers, now)

    # -- reads -----------------------------------------------------------------------------

    async def get(self, job_id: str) -> Job | None:
        return await self._run("reading a job", _sql.get, job_id)

    async def list(
        self,
        *,
        status: JobStatus | None = None,
        queue: str | None = None,
        task: str | None = None,
        tenant: str | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page:
        filters: dict[str, str] = {}
        if status is not None:
            filters["status"] = JobStatus(status).value
        if queue is not None:
            filters["queue"] = queue
        if task is not None:
            filters["task"] = task
        if tenant is not None:
            filters["tenant"] = tenant
        found = await self._run("listing jobs", _sql.list_jobs, filters, cursor, limit + 1)
        items = found[:limit]
        more = len(found) > limit
        return Page(items=items, next_cursor=items[-1].id if more else None)

    # -- search, counts and bulk actions (see _search) ----------------------------------

    async def _fill_fingerprints(self) -> None:
        while await self._write("fingerprinting failed jobs", _search.fill_fingerprints) == (
            _search.FILL_BATCH
        ):
            pass

    async def search(
        self, where: JobFilter, *, cursor: str | None = None, limit: int = 100
    ) -> Page:
        if where.fingerprint is not None:
            await self._fill_fingerprints()
        found = await self._run("searching jobs", _search.search, where, cursor, limit + 1)
        items = found[:limit]
        return Page(items=items, next_cursor=items[-1].id if len(found) > limit else None)

    async def count(self, where: JobFilter) -> int:
        if where.fingerprint is not None:
            await self._fill_fingerprints()
        return await self._run("counting jobs", _search.count, where)

    async def estimate(self, where: JobFilter) -> int:
        """About how many jobs ``where`` takes, without reading job rows: for a table
        of many millions of jobs, where :meth:`count` of a filter on tenant, text or
        time would scan them. A filter of status, queue and task alone is counted
        exactly (from the count deltas, as :meth:`count` does); anything else is the
        planner's estimate from the table's statistics, as fresh as its last ANALYZE
        (autovacuum's, on the schedule the jobs table sets). Bulk actions guard with
        exact counts; use this for figures a person reads."""
        return await self._run("estimating a count", _search.estimate, where)

    async def cancel_matching(
        self, where: JobFilter, *, now: float, limit: int, before: str | None = None
    ) -> builtins.list[Job]:
        if where.fingerprint is not None:
            await self._fill_fingerprints()
        return await self._write(
            "cancelling jobs", _search.cancel_matching, where, now, limit, before
        )

    async def retry_matching(
        self, where: JobFilter, *, now: float, limit: int, before: str | None = None
    ) -> builtins.list[Job]:
        if where.fingerprint is not None:
            await self._fill_fingerprints()
        return await self._write("retrying jobs", _search.retry_matching, where, now, limit, before)

    async def discard_matching(
        self, where: JobFilter, *, limit: int, before: str | None = None
    ) -> builtins.list[Job]:
        if where.fingerprint is not None:
            await self._fill_fingerprints()
        return await self._write("discarding jobs", _search.discard_matching, where, limit, before)

    async def error_groups(
        self, where: JobFilter, *, limit: int = 100
    ) -> builtins.list[ErrorGroup]:
        await self._fill_fingerprints()
        return await self._run("grouping failed jobs", _search.error_groups, where, limit)

    async def counts(self) -> dict[str, dict[JobStatus, int]]:
        await self._run("folding counts", _fold)
        out: dict[str, dict[JobStatus, int]] = {}
        for queue, status, n in await self._run("counting jobs", _sql.counts):
            by_status = out.get(queue)
            if by_status is None:
                by_status = out[queue] = dict.fromkeys(JobStatus, 0)
            by_status[_STATUS[status]] += n  # blocked steps are pending
        return out

    async def next_run_at(
        self, queues: Sequence[str] | None, tasks: Sequence[str] | None = None
    ) -> float | None:
        return await self._run("reading the next run", _sql.next_run_at, queues, tasks)

    async def backlog(self) -> builtins.list[TaskBacklog]:
        return await self._run("reading the backlog", _sql.backlog)

    async def read_events(
        self, *, after: int, limit: int = 1000, skip_origin: str | None = None
    ) -> builtins.list[StoredEvent]:
        return await self._run("reading events", _events.read_events, after, limit, skip_origin)

    async def last_event_id(self) -> int:
        return await self._run("reading events", _events.last_event_id)

    # -- retention ---------------------------------------------------------------------

    async def prune(
        self,
        *,
        older_than: float,
        now: float,
        archive_dir: str | os.PathLike[str] | None = None,
        batch: int = 1000,
    ) -> PruneReport:
        """Delete jobs that finished more than ``older_than`` seconds before ``now``.

        Jobs go ``batch`` at a time (default 1,000), in id order (creation order) within
        each final status; each batch is one transaction that locks its jobs, writes
        them to their own gzip JSON-lines file in ``archive_dir`` when one is given
        (the SQLite adapter's format: :func:`~hyperqueue_postgres.read_archive`), then
        deletes them. The steps of a workflow that still has pending or running steps
        stay (their results may be inputs still to come); a workflow goes with its
        last step. Expired idempotency keys are forgotten, and event log entries older
        than the cutoff deleted, except the newest (its id is the largest, so no id is
        ever handed out twice). Processes may prune one database at once: they take
        different jobs."""
        if not older_than >= 0:
            raise ValueError("older_than must be >= 0 seconds")
        if not 1 <= batch <= 100_000:
            raise ValueError("batch must be between 1 and 100,000")
        cutoff = now - older_than
        folder = None if archive_dir is None else Path(archive_dir)
        pruned = 0
        files: builtins.list[str] = []
        for status in _retention.FINAL:
            after = ""
            while True:
                ids = await self._run(
                    "finding finished jobs", _retention.candidates, status, after, cutoff, batch
                )
                if not ids:
                    break
                gone, written = await self._write(
                    "pruning jobs", _retention.prune_batch, ids, cutoff, folder
                )
                pruned += gone
                if written is not None:
                    files.append(written)
                if len(ids) < batch:
                    break
                after = ids[-1]
        forgotten = await self._write("forgetting keys", _retention.forget_keys, now)
        events = await self._run("pruning events", _retention.prune_events, cutoff)
        return PruneReport(
            cutoff=cutoff,
            pruned=pruned,
            archived=pruned if folder is not None else 0,
            files=tuple(files),
            keys_forgotten=forgotten,
            events_pruned=events,
        )

    # -- wake-up -----------------------------------------------------------------------------

    @asynccontextmanager
    async def listen(self) -> AsyncIterator[_Listener]:
        self._require_open()
        if self.notify:
            await self._start_listening()
        listener = _Listener(self)
        self._listeners.append(listener)
        try:
            yield listener
        finally:
            self._listeners.remove(listener)

    async def _start_listening(self) -> None:
        """Open the LISTEN connection if it is not open; on failure, log and go on
        polling (the next idle wait tries again)."""
        async with self._listening:
            if self._is_listening() or self._pool is None:
                return
            await self._stop_listening()  # a connection the server closed
            try:
                conn = await asyncpg.connect(
                    self.dsn,
                    timeout=self.connect_timeout,
                    server_settings={"application_name": "hyperqueue listener"},
                )
                await conn.add_listener(CHANNEL, self._notified)
            except Exception as exc:
                _log.warning("%s; idle workers poll until it works", self._error(exc, "LISTEN"))
                return
            conn.add_termination_listener(self._lost)
            self._listen_conn = conn
            self._wake()  # notifications may have been missed before this

    def _is_listening(self) -> bool:
        conn = self._listen_conn
        return conn is not None and not conn.is_closed()

    def _notified(self, conn: object, pid: int, channel: str, payload: object) -> None:
        self._wake()

    def _lost(self, conn: object) -> None:
        if self._listen_conn is conn:
            self._listen_conn = None
            self._wake()  # look now; the next idle wait reconnects

    async def _stop_listening(self) -> None:
        conn, self._listen_conn = self._listen_conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close(timeout=5)


async def _fold(conn: Any) -> None:
    """Fold the count deltas, one process at a time (the others skip it)."""
    async with conn.transaction():
        if await conn.fetchval("SELECT pg_try_advisory_xact_lock($1, 0)", _FOLD_LOCK):
            await _sql.fold_counts(conn)


async def _unregister(conn: Any, name: str) -> None:
    await conn.execute("DELETE FROM hq_workers WHERE name = $1", name)
