"""In-memory storage: the reference backend, for tests, tools and one-process services.

Pending jobs sit in one heap per queue, ordered by (priority rank, run_at, sequence), so
claiming the next job costs O(log n) however many are queued. Jobs scheduled for later
wait in a second heap per queue ordered by run_at and move over once due. Cancelling a
pending job leaves its heap entry behind; a per-job count of such stale entries lets a
claim skip them without a search.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager

import anyio
from msgspec.structs import replace

from ._errors import InvalidTransition, JobNotFound
from ._models import Job, JobStatus, Outcome, Page

__all__ = ["MemoryStorage"]

_PENDING = JobStatus.PENDING
_RUNNING = JobStatus.RUNNING
_COMPLETED = JobStatus.COMPLETED
_FAILED = JobStatus.FAILED
_CANCELLED = JobStatus.CANCELLED

# ready heap entry: (rank, run_at, seq, job id); delayed heap entry: (run_at, seq, job id)
_ReadyEntry = tuple[int, float, int, str]
_DelayedEntry = tuple[float, int, str]


class _Listener:
    __slots__ = ("_event", "signalled")

    def __init__(self) -> None:
        self._event = anyio.Event()
        self.signalled = False

    def set(self) -> None:
        self.signalled = True
        self._event.set()

    def clear(self) -> None:
        if self.signalled:
            self.signalled = False
            self._event = anyio.Event()

    async def wait(self) -> None:
        await self._event.wait()


class _QueueHeaps:
    __slots__ = ("delayed", "ready")

    def __init__(self) -> None:
        self.ready: list[_ReadyEntry] = []
        self.delayed: list[_DelayedEntry] = []


class MemoryStorage:
    """Keeps every job in this process; nothing survives a restart.

    Shared by several :class:`~hyperqueue.Queue` objects in one process, it behaves like
    any other backend: workers of one queue wake when another enqueues.
    """

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._heaps: dict[str, _QueueHeaps] = {}
        self._stale: dict[str, int] = {}
        self._running: dict[str, None] = {}
        self._keys: dict[tuple[str | None, str], tuple[str, float | None]] = {}
        self._key_expiry: deque[tuple[float, tuple[str | None, str]]] = deque()
        self._counts: dict[str, dict[JobStatus, int]] = {}
        self._listeners: list[_Listener] = []
        self._seq = 0

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"MemoryStorage(jobs={len(self._jobs)})"

    # -- bookkeeping -----------------------------------------------------------------

    def _count(self, queue: str, old: JobStatus | None, new: JobStatus) -> None:
        counts = self._counts.get(queue)
        if counts is None:
            counts = self._counts[queue] = dict.fromkeys(JobStatus, 0)
        if old is not None:
            counts[old] -= 1
        counts[new] += 1

    def _push(self, job: Job, now: float) -> None:
        heaps = self._heaps.get(job.queue)
        if heaps is None:
            heaps = self._heaps[job.queue] = _QueueHeaps()
        self._seq = seq = self._seq + 1
        if job.run_at > now:
            heapq.heappush(heaps.delayed, (job.run_at, seq, job.id))
        else:
            heapq.heappush(heaps.ready, (job.priority.rank, job.run_at, seq, job.id))

    def _notify(self) -> None:
        for listener in self._listeners:
            if not listener.signalled:
                listener.set()

    def _live_entry(self, job_id: str) -> Job | None:
        """The pending job an entry stands for, or None for a stale entry."""
        stale = self._stale.get(job_id)
        if stale:
            if stale == 1:
                del self._stale[job_id]
            else:
                self._stale[job_id] = stale - 1
            return None
        job = self._jobs.get(job_id)
        if job is None or job.status is not _PENDING:
            return None
        return job

    def _promote_due(self, heaps: _QueueHeaps, now: float) -> None:
        delayed = heaps.delayed
        while delayed and delayed[0][0] <= now:
            run_at, seq, job_id = heapq.heappop(delayed)
            job = self._jobs.get(job_id)
            rank = job.priority.rank if job is not None else 0
            heapq.heappush(heaps.ready, (rank, run_at, seq, job_id))

    def _forget_expired_keys(self, now: float) -> None:
        expiry = self._key_expiry
        while expiry and expiry[0][0] <= now:
            _, scoped = expiry.popleft()
            entry = self._keys.get(scoped)
            if entry is not None and entry[1] is not None and entry[1] <= now:
                del self._keys[scoped]

    # -- writes ----------------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[Job], *, now: float, key_ttl: float | None) -> list[Job]:
        out: list[Job] = []
        if self._key_expiry:
            self._forget_expired_keys(now)
        for job in jobs:
            if job.key is not None:
                scoped = (job.tenant, job.key)
                seen = self._keys.get(scoped)
                if seen is not None and (seen[1] is None or seen[1] > now):
                    existing = self._jobs.get(seen[0])
                    if existing is not None:
                        out.append(existing)
                        continue
                expires = None if key_ttl is None else now + key_ttl
                self._keys[scoped] = (job.id, expires)
                if expires is not None:
                    self._key_expiry.append((expires, scoped))
            if job.status is not _PENDING:
                job = replace(job, status=_PENDING)
            self._jobs[job.id] = job
            counts = self._counts.get(job.queue)
            if counts is None:
                counts = self._counts[job.queue] = dict.fromkeys(JobStatus, 0)
            counts[_PENDING] += 1
            self._push(job, now)
            out.append(job)
        if self._listeners:
            self._notify()
        return out

    async def claim(
        self,
        queues: Sequence[str] | None,
        *,
        limit: int,
        now: float,
        lease: float,
        worker: str,
    ) -> list[Job]:
        names: Iterable[str] = self._heaps if queues is None else queues
        candidates: list[_QueueHeaps] = []
        for name in names:
            heaps = self._heaps.get(name)
            if heaps is None:
                continue
            if heaps.delayed and heaps.delayed[0][0] <= now:
                self._promote_due(heaps, now)
            if heaps.ready:
                candidates.append(heaps)
        claimed: list[Job] = []
        if not candidates:
            return claimed
        jobs = self._jobs
        running = self._running
        lease_until = now + lease
        while len(claimed) < limit and candidates:
            if len(candidates) == 1:
                best = candidates[0]
            else:
                best = min(candidates, key=lambda h: h.ready[0])
            entry = heapq.heappop(best.ready)
            if not best.ready:
                candidates.remove(best)
            job = self._live_entry(entry[3])
            if job is None:
                continue
            job = replace(
                job,
                status=_RUNNING,
                attempts=job.attempts + 1,
                token=job.token + 1,
                started_at=now,
                lease_until=lease_until,
                worker=worker,
            )
            jobs[job.id] = job
            running[job.id] = None
            counts = self._counts[job.queue]
            counts[_PENDING] -= 1
            counts[_RUNNING] += 1
            claimed.append(job)
        return claimed

    async def finish(self, outcomes: Sequence[Outcome], *, now: float) -> list[Job | None]:
        out: list[Job | None] = []
        wake = False
        jobs = self._jobs
        for outcome in outcomes:
            job = jobs.get(outcome.id)
            if job is None or job.status is not _RUNNING or job.token != outcome.token:
                out.append(None)
                continue
            status = outcome.status
            if status is _PENDING:
                job = replace(
                    job,
                    status=_PENDING,
                    attempts=job.attempts - 1 if outcome.released else job.attempts,
                    run_at=now if outcome.run_at is None else outcome.run_at,
                    error=outcome.error if outcome.error is not None else job.error,
                    traceback=outcome.traceback if outcome.traceback is not None else job.traceback,
                    lease_until=None,
                )
                self._push(job, now)
                wake = True
            else:
                job = replace(
                    job,
                    status=status,
                    result=outcome.result,
                    error=outcome.error,
                    traceback=outcome.traceback,
                    finished_at=now,
                    lease_until=None,
                )
            jobs[job.id] = job
            del self._running[job.id]
            counts = self._counts[job.queue]
            counts[_RUNNING] -= 1
            counts[status] += 1
            out.append(job)
        if wake and self._listeners:
            self._notify()
        return out

    async def extend(
        self, leases: Sequence[tuple[str, int]], *, now: float, lease: float
    ) -> list[bool]:
        out: list[bool] = []
        until = now + lease
        for job_id, token in leases:
            job = self._jobs.get(job_id)
            if job is None or job.status is not _RUNNING or job.token != token:
                out.append(False)
                continue
            self._jobs[job_id] = replace(job, lease_until=until)
            out.append(True)
        return out

    async def rescue(self, *, now: float) -> list[Job]:
        rescued: list[Job] = []
        for job_id in list(self._running):
            job = self._jobs[job_id]
            if job.lease_until is None or job.lease_until > now:
                continue
            message = f"lease expired on worker {job.worker!r}"
            if job.attempts >= job.max_attempts:
                job = replace(job, status=_FAILED, error=message, finished_at=now, lease_until=None)
            else:
                job = replace(job, status=_PENDING, run_at=now, error=message, lease_until=None)
                self._push(job, now)
            self._jobs[job_id] = job
            del self._running[job_id]
            self._count(job.queue, _RUNNING, job.status)
            rescued.append(job)
        if rescued and self._listeners:
            self._notify()
        return rescued

    def _require(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    async def cancel(self, job_id: str, *, now: float) -> Job:
        job = self._require(job_id)
        if job.status is _CANCELLED:
            return job
        if job.status is _PENDING:
            self._stale[job_id] = self._stale.get(job_id, 0) + 1
        elif job.status is _RUNNING:
            del self._running[job_id]
        else:
            raise InvalidTransition(job_id, job.status, "cancel")
        old = job.status
        job = replace(job, status=_CANCELLED, finished_at=now, lease_until=None)
        self._jobs[job_id] = job
        self._count(job.queue, old, _CANCELLED)
        return job

    async def retry(self, job_id: str, *, now: float) -> Job:
        job = self._require(job_id)
        if job.status is not _FAILED and job.status is not _CANCELLED:
            raise InvalidTransition(job_id, job.status, "retry")
        old = job.status
        job = replace(
            job,
            status=_PENDING,
            attempts=0,
            run_at=now,
            result=None,
            error=None,
            traceback=None,
            progress=None,
            started_at=None,
            finished_at=None,
            lease_until=None,
        )
        self._jobs[job_id] = job
        self._count(job.queue, old, _PENDING)
        self._push(job, now)
        if self._listeners:
            self._notify()
        return job

    async def set_progress(self, job_id: str, token: int, progress: object) -> bool:
        job = self._jobs.get(job_id)
        if job is None or job.status is not _RUNNING or job.token != token:
            return False
        self._jobs[job_id] = replace(job, progress=progress)
        return True

    # -- reads -----------------------------------------------------------------------

    async def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

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
        def keep(job: Job) -> bool:
            return (
                (cursor is None or job.id < cursor)
                and (status is None or job.status == status)
                and (queue is None or job.queue == queue)
                and (task is None or job.task == task)
                and (tenant is None or job.tenant == tenant)
            )

        found = heapq.nlargest(limit + 1, filter(keep, self._jobs.values()), key=lambda job: job.id)
        more = len(found) > limit
        items = found[:limit]
        return Page(items=items, next_cursor=items[-1].id if more else None)

    async def counts(self) -> dict[str, dict[JobStatus, int]]:
        return {name: dict(counts) for name, counts in self._counts.items()}

    async def next_run_at(self, queues: Sequence[str] | None) -> float | None:
        names: Iterable[str] = self._heaps if queues is None else queues
        earliest: float | None = None
        for name in names:
            heaps = self._heaps.get(name)
            if heaps is None:
                continue
            if heaps.ready:
                earliest = _earlier(earliest, heaps.ready[0][1])
            if heaps.delayed:
                earliest = _earlier(earliest, heaps.delayed[0][0])
        return earliest

    @asynccontextmanager
    async def listen(self) -> AsyncIterator[_Listener]:
        listener = _Listener()
        self._listeners.append(listener)
        try:
            yield listener
        finally:
            self._listeners.remove(listener)


def _earlier(a: float | None, b: float) -> float:
    return b if a is None or b < a else a
