"""SQLiteStorage: durable jobs in one SQLite file, shared by the processes of one host.

Two connections per storage (apsw, see :mod:`._driver`), each with a daemon thread of
its own that runs its calls one at a time (:mod:`._thread_db`): a writer that runs
every write as one ``BEGIN IMMEDIATE`` transaction per batch (see :mod:`._batch`), and a
reader for lookups, listings and wake-up checks, which in WAL mode never waits for the
writer. Each transaction is one Python function run in the connection's thread, one hop
for the whole batch. The storage runs on asyncio and on trio.

Across processes, SQLite's write lock serializes claims, so no job is handed to two
live workers; leases and fencing tokens are columns, so a crashed process's jobs run
again once their lease expires and a late finish from it is refused.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar

import anyio
import anyio.to_thread

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

from . import _schedules, _search, _sql, _workflows
from ._batch import GroupCommit
from ._driver import Connection, DatabaseError, FullError, sqlite_version
from ._health import FIXED_IN, SQLiteHealth, wal_reset_bug
from ._open import check_path, prepare, storage_error
from ._retention import (
    DiskUsage,
    PruneReport,
    RetentionPolicy,
    RetentionReport,
    disk_usage,
    write_archive,
)
from ._thread_db import ThreadConnection

__all__ = ["SQLiteStorage"]

T = TypeVar("T")
_log = logging.getLogger("hyperqueue.sqlite")

IDLE_POLL_INTERVAL = 0.05
"""The longest wait between checks for other processes' work once a worker has been idle
for a while (``poll_interval`` while work comes)."""
_QUIET_CHECKS = 100  # checks that found nothing before the interval stretches (0.5 s)

CHECKPOINT_MARGIN = 8 << 20
"""Free bytes wanted beyond the WAL's size before a checkpoint at close."""
LOW_DISK_BYTES = 256 << 20
"""Free space under which health says degraded (writes may soon fail)."""
_STATUS = {status.value: status for status in JobStatus}
_STATUS["blocked"] = JobStatus.PENDING


class _Listener:
    """Signalled at once by writes in this process; other processes' writes are seen by
    checking ``PRAGMA data_version`` (a shared-memory read) every ``poll_interval``
    while the worker waits, and the shared work counter when the data changed.

    The check runs on a connection of its own, in the event loop's thread: it takes a
    few microseconds, where a hop to a worker thread takes a hundred, so an idle worker
    polling every 5 ms stays cheap. Only listeners use that connection, one call at a
    time (the event loop runs one of them at once)."""

    __slots__ = ("_event", "_quiet", "_storage", "data_version", "seen", "signalled")

    def __init__(self, storage: SQLiteStorage, data_version: int, seen: int) -> None:
        self._storage = storage
        self._event = anyio.Event()
        self._quiet = 0  # checks in a row that found nothing
        self.signalled = False
        self.data_version = data_version
        self.seen = seen

    def set(self, version: int | None = None) -> None:
        if version is not None and version > self.seen:
            self.seen = version
        self._quiet = 0
        if not self.signalled:
            self.signalled = True
            self._event.set()

    def clear(self) -> None:
        if self.signalled:
            self.signalled = False
            self._event = anyio.Event()

    async def wait(self) -> None:
        storage = self._storage
        while not self.signalled:
            with anyio.move_on_after(self._interval(storage.poll_interval)):
                await self._event.wait()
            if not self.signalled:
                data_version, work = storage._poll(self.data_version)
                self.data_version = data_version
                if work is not None and work > self.seen:
                    self.set(work)
                else:
                    self._quiet += 1

    def _interval(self, base: float) -> float:
        """``base`` while work comes and for the first ``_QUIET_CHECKS`` checks after;
        then doubling up to ``IDLE_POLL_INTERVAL``, so an idle worker costs little."""
        if self._quiet < _QUIET_CHECKS:
            return base
        steps = min((self._quiet - _QUIET_CHECKS) // 10 + 1, 16)
        stretched: float = base * (1 << steps)
        return max(min(stretched, IDLE_POLL_INTERVAL), base)


class SQLiteStorage:
    """Jobs in one SQLite file: durable across restarts and crashes, shared by several
    worker processes on one host. Runs on asyncio and trio.

    - ``synchronous``: ``"NORMAL"`` (default) loses no committed job when a process
      crashes, but may lose the last transactions on a power cut or OS crash;
      ``"FULL"`` survives those too, at the cost of an fsync per transaction.
    - ``busy_timeout``: seconds a write waits for another process's write lock before
      failing with :class:`~hyperqueue.StorageError` (default 5.0).
    - ``poll_interval``: seconds between checks for work written by other processes
      while a worker waits (default 0.005; writes in this process wake workers at
      once). Each check is one shared-memory read. After half a second without work
      the interval doubles step by step up to 50 ms, and falls back to
      ``poll_interval`` with the first work seen, so an idle worker costs little.
    - ``max_batch``: most writes grouped into one transaction (default 1,000).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        busy_timeout: float = 5.0,
        poll_interval: float = 0.005,
        max_batch: int = 1000,
    ) -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError("synchronous must be 'NORMAL' or 'FULL'")
        if not 0 <= busy_timeout <= 600:
            raise ValueError("busy_timeout must be between 0 and 600 seconds")
        if not 0.001 <= poll_interval <= 10:
            raise ValueError("poll_interval must be between 0.001 and 10 seconds")
        if not 1 <= max_batch <= 100_000:
            raise ValueError("max_batch must be between 1 and 100,000")
        self.path = Path(path)
        self.synchronous = synchronous
        self.busy_timeout = busy_timeout
        self.poll_interval = poll_interval
        self._writer: ThreadConnection | None = None
        self._reader: ThreadConnection | None = None
        self._batches = GroupCommit(self._apply, max_batch=max_batch)
        self._listeners: list[_Listener] = []
        self._claimed = _sql.Claimed()
        self.origin = secrets.token_hex(8)
        self._opening = anyio.Lock()
        self._host = socket.gethostname()
        self._full_at: float | None = None  # when a write last failed on a full disk
        self._poller: Connection | None = None  # listeners' data_version checks

    def __repr__(self) -> str:
        return f"SQLiteStorage({str(self.path)!r})"

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        async with self._opening:
            if self._writer is not None:
                return
            await anyio.to_thread.run_sync(check_path, self.path)
            writer = self._connection()
            await writer.open(prepare, self.path, self.synchronous)
            reader = self._connection()
            try:
                await reader.open(_query_only)
            except BaseException:
                await writer.aclose()
                raise
            self._writer, self._reader = writer, reader
            try:
                self._poller = await anyio.to_thread.run_sync(self._open_poller)
                await self._write(_sql.register_process, self._host, os.getpid(), time.time())
            except BaseException:
                await self._close()
                raise

    def _open_poller(self) -> Connection:
        conn = Connection(self.path, busy_timeout=self.busy_timeout)
        _query_only(conn)
        return conn

    def _poll(self, data_version: int) -> tuple[int, int | None]:
        """``_sql.poll`` on the poller connection, in this thread (see :class:`_Listener`)."""
        poller = self._poller
        if poller is None:
            raise StorageError(f"SQLite storage {str(self.path)!r} is not open")
        try:
            return _sql.poll(poller, data_version)
        except (DatabaseError, ValueError) as exc:
            raise storage_error(self.path, exc, "reading") from exc

    def _connection(self) -> ThreadConnection:
        return ThreadConnection(self.path, what="SQLite storage", busy_timeout=self.busy_timeout)

    async def aclose(self) -> None:
        if self._writer is None:
            return
        with anyio.CancelScope(shield=True):
            # a stale row would only make health count a process too many
            with contextlib.suppress(StorageError):
                await self._write(_sql.unregister_process, self._host, os.getpid())
            await self._batches.exclusive(self._close)

    async def _close(self) -> None:
        writer, reader = self._writer, self._reader
        self._writer = self._reader = None
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.close()
        if writer is not None and reader is not None:
            await self._keep_wal_if_no_room(writer, reader)
        if reader is not None:
            await reader.aclose()
        if writer is not None:
            await writer.aclose()

    async def _keep_wal_if_no_room(
        self, writer: ThreadConnection, reader: ThreadConnection
    ) -> None:
        """Closing the last connection checkpoints the WAL into the database, which may
        grow the file by up to the WAL's size: after a full disk, with less free than
        that, the checkpoint would fill the disk again and the next start would fail.
        Then the WAL stays as it is (it is the data; the next open reads it)."""
        try:
            usage = await anyio.to_thread.run_sync(disk_usage, self.path, 0)
        except OSError:
            return
        if usage.free_bytes >= usage.wal_bytes + CHECKPOINT_MARGIN:
            return
        _log.warning(
            "SQLite storage %r: %d bytes free, less than the WAL (%d bytes) needs to be "
            "checkpointed; leaving the WAL as it is for the next start",
            str(self.path),
            usage.free_bytes,
            usage.wal_bytes,
        )
        with contextlib.suppress(Exception):
            await writer.call(Connection.keep_wal_on_close)
            await reader.call(Connection.keep_wal_on_close)

    # -- plumbing --------------------------------------------------------------------

    def _require_open(self) -> None:
        if self._writer is None:
            raise StorageError(f"SQLite storage {str(self.path)!r} is not open")

    async def _apply(self, ops: list[_sql.Op]) -> None:
        """Run one batch in the writer thread; wake local listeners if it made work."""
        writer = self._writer
        if writer is None:
            error: BaseException = StorageError(f"SQLite storage {str(self.path)!r} is closed")
            for op in ops:
                op.error = error
            return
        try:
            version = await writer.call(_sql.apply_batch, ops, self.origin)
        except Exception as exc:
            if isinstance(exc, FullError):
                self._full_at = time.time()
            for op in ops:
                op.error = self._error(exc, "writing")
            return
        self._full_at = None  # a write went through: there is room again
        for op in ops:
            if op.error is not None:
                if isinstance(op.error, FullError):
                    self._full_at = time.time()
                op.error = self._error(op.error, "writing")
        if version is not None:
            for listener in self._listeners:
                listener.set(version)

    def _error(self, exc: BaseException, doing: str) -> BaseException:
        if isinstance(exc, HyperqueueError) or not isinstance(exc, DatabaseError | ValueError):
            return exc
        return storage_error(self.path, exc, doing)

    async def execute_write(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
        """Run one statement on a table of this file in the next write transaction,
        with the jobs' writes (group commit), and return its rows.

        For side tables kept in the job database (the server's audit log): a second
        connection that writes the same file contends for its one write lock, and a
        waiter sleeps in SQLite's busy handler for milliseconds at a time; through the
        storage's writer, a burst of requests shares transactions with the jobs'."""
        return await self._write(_sql.execute_one, sql, tuple(params))

    async def execute_write_many(
        self, sql: str, take: Callable[[], Sequence[Sequence[object]]]
    ) -> int:
        """Insert the rows that ``take()`` returns with ``sql`` (an INSERT of one
        ``VALUES (?, ...)`` row, run as multi-row statements), in the next write
        transaction (group commit); returns how many rows it took.

        ``take`` is called in the storage's writer thread as that transaction runs, not
        now: rows that a caller adds until then join it. A log whose rows trickle in
        (the server's audit records, one per answer) is written with the transaction
        that runs anyway, in one trip, rather than in a batch closed before it and
        another for what came in meanwhile. ``take`` runs on another thread: it must
        only take from a thread-safe container (a ``collections.deque``)."""
        count: int = await self._write(_sql.execute_taken, sql, _sql.TakeOnce(take))
        return count

    async def _write(self, fn: Callable[..., T], *args: Any, gather: bool = False) -> T:
        self._require_open()
        result: T = await self._batches.submit(fn, *args, gather=gather)
        return result

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        reader = self._reader
        if reader is None:
            raise StorageError(f"SQLite storage {str(self.path)!r} is not open")
        try:
            result: T = await reader.call(fn, *args)
        except (DatabaseError, ValueError) as exc:
            raise storage_error(self.path, exc, "reading") from exc
        return result

    # -- the Storage protocol: writes ----------------------------------------------------

    async def enqueue(
        self,
        jobs: Sequence[Job],
        *,
        now: float,
        key_ttl: float | None,
        max_queued: Mapping[str, int] | None = None,
    ) -> list[Job]:
        if not jobs:
            return []
        return await self._write(_sql.enqueue, jobs, now, key_ttl, max_queued)

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
        return await self._write(  # gathers the outcomes a worker stores as it claims
            _sql.claim, self._claimed, queues, limit, now, lease, worker, tasks, max_running,
            gather=True,
        )  # fmt: skip

    async def mark_started(self, starts: Sequence[tuple[str, int, float]]) -> list[bool]:
        if not starts:
            return []
        return await self._write(_sql.mark_started, self._claimed, starts)

    async def finish(self, outcomes: Sequence[Outcome], *, now: float) -> list[Job | None]:
        if not outcomes:
            return []
        return await self._write(_sql.finish, self._claimed, outcomes, now)

    async def extend(
        self, leases: Sequence[tuple[str, int]], *, now: float, lease: float
    ) -> list[bool]:
        if not leases:
            return []
        return await self._write(_sql.extend, leases, now + lease)

    async def rescue(self, *, now: float) -> list[Job]:
        # every worker calls this every lease / 3: look first, write only when needed
        if not await self._read(_sql.any_expired, now):
            return []
        return await self._write(_sql.rescue, now)

    async def cancel(self, job_id: str, *, now: float) -> Job:
        return _raise_refusal(await self._write(_sql.cancel, job_id, now))

    async def retry(self, job_id: str, *, now: float) -> Job:
        return _raise_refusal(await self._write(_sql.retry, job_id, now))

    async def set_progress(
        self, job_id: str, token: int, progress: object, *, now: float = 0.0
    ) -> bool:
        return await self._write(_sql.set_progress, self._claimed, job_id, token, progress, now)

    # -- workflows (see _workflows) ----------------------------------------------------------

    async def enqueue_workflow(
        self,
        workflow: WorkflowRecord,
        jobs: Sequence[Job],
        *,
        now: float,
        max_queued: Mapping[str, int] | None = None,
    ) -> None:
        await self._write(_workflows.enqueue_workflow, workflow, jobs, now, max_queued)

    async def get_workflow(
        self, workflow_id: str
    ) -> tuple[WorkflowRecord, builtins.list[Job]] | None:
        return await self._read(_workflows.get_workflow, workflow_id)

    async def cancel_workflow(self, workflow_id: str, *, now: float) -> builtins.list[Job]:
        return _raise_refusal(await self._write(_workflows.cancel_workflow, workflow_id, now))

    async def retry_workflow(self, workflow_id: str, *, now: float) -> builtins.list[Job]:
        return _raise_refusal(await self._write(_workflows.retry_workflow, workflow_id, now))

    # -- periodic jobs (see _schedules) ----------------------------------------------------

    async def save_schedule(self, schedule: Schedule, *, now: float) -> Schedule:
        return await self._write(_schedules.save, schedule, now)

    async def schedules(self) -> builtins.list[Schedule]:
        return await self._read(_schedules.read_all)

    async def fire_schedule(
        self, name: str, *, slot: float, job: Job | None, missed: int, now: float
    ) -> bool:
        return await self._write(_schedules.fire, name, slot, job, missed, now)

    async def pause_schedule(self, name: str, *, paused: bool, now: float) -> Schedule:
        return _raise_refusal(await self._write(_schedules.pause, name, paused, now))

    async def pause_queue(self, name: str, *, paused: bool, now: float) -> None:
        await self._write(_sql.pause_queue, name, paused, now)

    async def paused_queues(self) -> builtins.list[str]:
        return await self._read(_sql.paused_queues)

    async def register_worker(self, info: WorkerInfo) -> None:
        await self._write(_sql.register_worker, info)

    async def unregister_worker(self, name: str) -> None:
        await self._write(_sql.unregister_worker, name)

    # -- the Storage protocol: reads -----------------------------------------------------

    async def get(self, job_id: str) -> Job | None:
        return await self._read(_sql.get, job_id)

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
        filters: dict[str, Any] = {}
        if status is not None:
            filters["status"] = JobStatus(status).value
        if queue is not None:
            filters["queue"] = queue
        if task is not None:
            filters["task"] = task
        if tenant is not None:
            filters["tenant"] = tenant
        found = await self._read(_sql.list_jobs, filters, cursor, limit + 1)
        items = found[:limit]
        more = len(found) > limit
        return Page(items=items, next_cursor=items[-1].id if more else None)

    # -- search, counts and bulk actions (see _search) ----------------------------------

    async def _fingerprints(self, where: JobFilter) -> None:
        """Fill in the fingerprints a filter by fingerprint needs (a few batches, once)."""
        if where.fingerprint is not None:
            while await self._write(_search.fill_fingerprints) == _search.FILL_BATCH:
                pass

    async def search(
        self, where: JobFilter, *, cursor: str | None = None, limit: int = 100
    ) -> Page:
        await self._fingerprints(where)
        found = await self._read(_search.search, where, cursor, limit + 1)
        items = found[:limit]
        return Page(items=items, next_cursor=items[-1].id if len(found) > limit else None)

    async def count(self, where: JobFilter) -> int:
        await self._fingerprints(where)
        return await self._read(_search.count, where)

    async def cancel_matching(
        self, where: JobFilter, *, now: float, limit: int, before: str | None = None
    ) -> builtins.list[Job]:
        await self._fingerprints(where)
        return await self._write(_search.cancel_matching, where, now, limit, before)

    async def retry_matching(
        self, where: JobFilter, *, now: float, limit: int, before: str | None = None
    ) -> builtins.list[Job]:
        await self._fingerprints(where)
        return await self._write(_search.retry_matching, where, now, limit, before)

    async def discard_matching(
        self, where: JobFilter, *, limit: int, before: str | None = None
    ) -> builtins.list[Job]:
        await self._fingerprints(where)
        return await self._write(_search.discard_matching, where, limit, before)

    async def error_groups(
        self, where: JobFilter, *, limit: int = 100
    ) -> builtins.list[ErrorGroup]:
        while await self._write(_search.fill_fingerprints) == _search.FILL_BATCH:
            pass
        return await self._read(_search.error_groups, where, limit)

    async def counts(self) -> dict[str, dict[JobStatus, int]]:
        out: dict[str, dict[JobStatus, int]] = {}
        for queue, status, n in await self._read(_sql.counts):
            by_status = out.get(queue)
            if by_status is None:
                by_status = out[queue] = dict.fromkeys(JobStatus, 0)
            by_status[_STATUS[status]] += n  # blocked steps are pending
        return out

    async def next_run_at(
        self, queues: Sequence[str] | None, tasks: Sequence[str] | None = None
    ) -> float | None:
        return await self._read(_sql.next_run_at, queues, tasks)

    async def backlog(self) -> builtins.list[TaskBacklog]:
        return await self._read(_sql.backlog)

    async def workers(self, *, now: float) -> builtins.list[WorkerInfo]:
        return await self._read(_sql.workers, now)

    async def read_events(
        self, *, after: int, limit: int = 1000, skip_origin: str | None = None
    ) -> builtins.list[StoredEvent]:
        return await self._read(_sql.read_events, after, limit, skip_origin)

    async def last_event_id(self) -> int:
        return await self._read(_sql.last_event_id)

    @asynccontextmanager
    async def listen(self) -> AsyncIterator[_Listener]:
        data_version, seen = self._poll(-1)
        assert seen is not None
        listener = _Listener(self, data_version, seen)
        self._listeners.append(listener)
        try:
            yield listener
        finally:
            self._listeners.remove(listener)

    # -- maintenance -------------------------------------------------------------------

    async def prune(
        self,
        *,
        older_than: float,
        now: float,
        archive_dir: str | os.PathLike[str] | None = None,
        batch: int = 1000,
    ) -> PruneReport:
        """Delete jobs that finished more than ``older_than`` seconds before ``now``.

        Jobs go in the order they were enqueued, ``batch`` at a time (default 1,000);
        each batch is first archived to its own gzip JSON-lines file in ``archive_dir``
        when one is given. Expired idempotency keys are forgotten too."""
        if not older_than >= 0:
            raise ValueError("older_than must be >= 0 seconds")
        if not 1 <= batch <= 100_000:
            raise ValueError("batch must be between 1 and 100,000")
        cutoff = now - older_than
        folder = None if archive_dir is None else Path(archive_dir)
        pruned = archived = 0
        files: builtins.list[str] = []
        after = 0
        while True:
            jobs, after = await self._read(_sql.finished_before, cutoff, after, batch)
            if not jobs:
                break
            if folder is not None:
                written = await anyio.to_thread.run_sync(write_archive, folder, jobs)
                files.append(str(written))
                archived += len(jobs)
            pruned += await self._write(_sql.delete_finished, [j.id for j in jobs], cutoff)
            if len(jobs) < batch:
                break
        forgotten = await self._write(_sql.forget_keys, now)
        events = await self._write(_sql.prune_events, cutoff)
        return PruneReport(
            cutoff=cutoff,
            pruned=pruned,
            archived=archived,
            files=tuple(files),
            keys_forgotten=forgotten,
            events_pruned=events,
        )

    async def disk_usage(self) -> DiskUsage:
        """Sizes of the database files and the free space on their file system."""
        free_pages = await self._read(_free_pages_bytes)
        return await anyio.to_thread.run_sync(disk_usage, self.path, free_pages)

    async def enforce_retention(self, policy: RetentionPolicy, *, now: float) -> RetentionReport:
        """Prune by ``policy``; when free disk space is under ``policy.min_free_bytes``,
        prune to ``low_disk_keep_for`` instead and give the freed pages back to the file
        system. Meant to run periodically as a supervised service."""
        before = await self.disk_usage()
        low = before.free_bytes < policy.min_free_bytes
        keep_for = min(policy.keep_for, policy.low_disk_keep_for) if low else policy.keep_for
        report = await self.prune(older_than=keep_for, now=now, archive_dir=policy.archive_dir)
        if low and report.pruned:
            await self.vacuum()
        after = await self.disk_usage()
        return RetentionReport(low_disk=low, before=before, after=after, prune=report)

    async def vacuum(self) -> None:
        """Rebuild the file to give space freed by pruning back to the file system.

        Needs free disk space about the size of the database, and holds the write lock
        while it runs (seconds per GB): run it in a quiet hour.
        """
        await self._exclusive("VACUUM", "PRAGMA wal_checkpoint(TRUNCATE)")

    async def optimize(self) -> None:
        """``PRAGMA optimize``: refresh the planner's statistics where they went stale.
        Cheap; run it every few hours and before closing long-lived processes."""
        await self._exclusive("PRAGMA optimize")

    async def recount(self) -> None:
        """Rebuild the per-queue counts from the jobs themselves (one table scan).

        Every write keeps the counts in step; this is for a file edited by hand, since
        claims on every queue look for pending work in the queues the counts name.
        """
        await self._write(_sql.recount)

    async def checkpoint(self) -> None:
        """Copy the WAL back into the database and truncate it to zero bytes."""
        await self._exclusive("PRAGMA wal_checkpoint(TRUNCATE)")

    async def _exclusive(self, *statements: str) -> None:
        self._require_open()

        async def run() -> None:
            writer = self._writer
            if writer is None:
                raise StorageError(f"SQLite storage {str(self.path)!r} is closed")
            for statement in statements:
                try:
                    await writer.call(_run_statement, statement)
                except DatabaseError as exc:
                    raise storage_error(self.path, exc, statement) from exc

        await self._batches.exclusive(run)

    async def health(self) -> SQLiteHealth:
        """Read the database once and report latency, the SQLite version and whether
        that version's WAL-reset bug matters here (several processes on the file), and
        the room left: unhealthy while writes fail on a full disk (or the database's size
        limit), degraded when less than 256 MiB is free or the database is over 90% of
        its size limit."""
        version = sqlite_version()
        bug = wal_reset_bug(version)
        started = time.perf_counter()
        path = str(self.path)
        try:
            processes = await self._read(_processes)
            pages, limit = await self._read(_size_in_pages)
            usage = await anyio.to_thread.run_sync(disk_usage, self.path, 0)
        except (StorageError, OSError) as exc:
            return SQLiteHealth(
                status="unhealthy",
                latency_ms=(time.perf_counter() - started) * 1000,
                message=str(exc),
                sqlite_version=version,
                wal_reset_bug=bug,
                processes=0,
                path=path,
            )
        latency = (time.perf_counter() - started) * 1000
        alive = sum(1 for host, pid in processes if host != self._host or _alive(pid))
        fixed = ".".join(map(str, FIXED_IN))
        status: Literal["healthy", "degraded", "unhealthy"] = "healthy"
        notes: builtins.list[str] = []
        mib = 1 << 20
        if self._full_at is not None:
            status = "unhealthy"
            notes.append(
                f"writes fail: the disk is full ({usage.free_bytes // mib} MiB free) or the "
                "database reached its size limit; free space or prune old jobs"
            )
        elif usage.free_bytes < LOW_DISK_BYTES:
            status = "degraded"
            notes.append(
                f"low disk: {usage.free_bytes // mib} MiB free where the database lives; "
                "writes fail when it runs out"
            )
        if pages > limit * 0.9:
            status = "unhealthy" if status == "unhealthy" else "degraded"
            notes.append(f"the database is at {pages / limit:.0%} of its size limit")
        if bug and alive > 1:
            status = "unhealthy" if status == "unhealthy" else "degraded"
            notes.append(
                f"SQLite {version} has the WAL-reset bug (fixed in {fixed}) and {alive} "
                "processes use this file: rare corruption is possible; upgrade SQLite"
            )
        elif bug:
            notes.append(
                f"SQLite {version} has the WAL-reset bug (fixed in {fixed}); harmless while "
                "one process uses the file"
            )
        return SQLiteHealth(
            status=status,
            latency_ms=latency,
            message="; ".join(notes) or f"SQLite {version}",
            sqlite_version=version,
            wal_reset_bug=bug,
            processes=alive,
            path=path,
            free_bytes=usage.free_bytes,
            wal_bytes=usage.wal_bytes,
            database_bytes=usage.database_bytes,
        )


def _raise_refusal(result: T | Exception) -> T:
    if isinstance(result, Exception):
        raise result
    return result


def _query_only(conn: Connection) -> None:
    conn.execute("PRAGMA query_only = ON")


def _run_statement(conn: Connection, statement: str) -> None:
    conn.execute(statement)


def _free_pages_bytes(conn: Connection) -> int:
    pages: int = conn.execute("PRAGMA freelist_count").fetchone()[0]
    size: int = conn.execute("PRAGMA page_size").fetchone()[0]
    return pages * size


def _size_in_pages(conn: Connection) -> tuple[int, int]:
    """The database's pages, and the most it may have (``max_page_count``)."""
    pages: int = conn.execute("PRAGMA page_count").fetchone()[0]
    limit: int = conn.execute("PRAGMA max_page_count").fetchone()[0]
    return pages, limit


def _processes(conn: Connection) -> builtins.list[tuple[str, int]]:
    return conn.execute("SELECT host, pid FROM hq_processes").fetchall()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
