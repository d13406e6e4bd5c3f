"""In-memory storage: the reference backend, for tests, tools and one-process services.

Claim order is (priority rank, run_at, sequence). Due jobs of one queue sit in a FIFO
lane per priority (O(1)) plus a heap for the few that arrive out of order (O(log n));
jobs scheduled for later wait in a heap by run_at and move over once due. So claiming
the next job never scans, however many jobs are queued. Cancelling a pending job leaves
its entry behind; a per-job count of such stale entries lets a claim skip them, and
for the rare job that is pending again while stale entries of it remain, the sequence
number of its live entry tells the two apart.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager

import anyio
from msgspec.structs import replace

from ._errors import InvalidTransition, JobNotFound
from ._models import _RANK, Job, JobStatus, Outcome, Page

__all__ = ["MemoryStorage"]

_PENDING = JobStatus.PENDING
_RUNNING = JobStatus.RUNNING
_COMPLETED = JobStatus.COMPLETED
_FAILED = JobStatus.FAILED
_CANCELLED = JobStatus.CANCELLED

# Jobs enqueued to run now arrive in run_at order, so each priority level keeps its due
# jobs in a FIFO lane of (run_at, seq, id): O(1) push and pop. A due job that would sort
# before a lane's tail (a delayed job coming due, a retry, a clock that stepped back)
# goes to a small heap of (rank, run_at, seq, id) instead, and a claim takes whichever
# head sorts first. Delayed jobs wait in a heap of (run_at, seq, rank, id).
_RANKS = 4
_Key = tuple[int, float, int]


class _Lanes:
    """The pending jobs of one named queue."""

    __slots__ = ("delayed", "fifo", "ready")

    def __init__(self) -> None:
        self.fifo: list[deque[tuple[float, int, str]]] = [deque() for _ in range(_RANKS)]
        self.ready: list[tuple[int, float, int, str]] = []
        self.delayed: list[tuple[float, int, int, str]] = []

    def push_due(self, rank: int, run_at: float, seq: int, job_id: str) -> None:
        lane = self.fifo[rank]
        if not lane or lane[-1][:2] < (run_at, seq):
            lane.append((run_at, seq, job_id))
        else:
            heapq.heappush(self.ready, (rank, run_at, seq, job_id))

    def promote(self, now: float) -> None:
        delayed = self.delayed
        while delayed and delayed[0][0] <= now:
            run_at, seq, rank, job_id = heapq.heappop(delayed)
            self.push_due(rank, run_at, seq, job_id)

    def head(self) -> _Key | None:
        """The sort key of the next job to claim, or None when nothing is due."""
        ready = self.ready
        for rank, lane in enumerate(self.fifo):
            if lane:
                run_at, seq, _ = lane[0]
                if ready and ready[0][:3] < (rank, run_at, seq):
                    return ready[0][:3]
                return (rank, run_at, seq)
        return ready[0][:3] if ready else None

    def pop(self) -> tuple[float, int, str]:
        """Remove the next entry; returns its (run_at, seq, job id)."""
        ready = self.ready
        for rank, lane in enumerate(self.fifo):
            if lane:
                if ready and ready[0][:3] < (rank, *lane[0][:2]):
                    return heapq.heappop(ready)[1:]
                return lane.popleft()
        return heapq.heappop(ready)[1:]

    def earliest(self) -> float | None:
        """The earliest run_at of a pending job (any due job counts as due now)."""
        due = self.head()
        if due is not None:
            return due[1]
        return self.delayed[0][0] if self.delayed else None


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


class MemoryStorage:
    """Keeps every job in this process; nothing survives a restart.

    Shared by several :class:`~hyperqueue.Queue` objects in one process, it behaves like
    any other backend: workers of one queue wake when another enqueues.
    """

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._lanes: dict[str, _Lanes] = {}
        self._stale: dict[str, int] = {}
        self._live_seq: dict[str, int] = {}  # only for jobs that also have stale entries
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
        lanes = self._lanes.get(job.queue)
        if lanes is None:
            lanes = self._lanes[job.queue] = _Lanes()
        self._seq = seq = self._seq + 1
        if self._stale and job.id in self._stale:
            self._live_seq[job.id] = seq
        rank = _RANK[job.priority]
        run_at = job.run_at
        if run_at > now:
            heapq.heappush(lanes.delayed, (run_at, seq, rank, job.id))
        else:
            lane = lanes.fifo[rank]
            if not lane or lane[-1][0] <= run_at:
                lane.append((run_at, seq, job.id))
            else:
                heapq.heappush(lanes.ready, (rank, run_at, seq, job.id))

    def _notify(self) -> None:
        for listener in self._listeners:
            if not listener.signalled:
                listener.set()

    def _drop_stale(self, job_id: str) -> None:
        """Account for one popped heap entry left behind by a cancel."""
        left = self._stale[job_id] - 1
        if left:
            self._stale[job_id] = left
        else:
            del self._stale[job_id]

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
        names: Iterable[str] = self._lanes if queues is None else queues
        candidates: list[_Lanes] = []
        for name in names:
            lanes = self._lanes.get(name)
            if lanes is None:
                continue
            if lanes.delayed and lanes.delayed[0][0] <= now:
                lanes.promote(now)
            if lanes.head() is not None:
                candidates.append(lanes)
        claimed: list[Job] = []
        if not candidates:
            return claimed
        jobs = self._jobs
        running = self._running
        stale = self._stale
        lease_until = now + lease
        best = candidates[0]
        while len(claimed) < limit:
            if len(candidates) > 1:
                heads = [(lanes.head(), n) for n, lanes in enumerate(candidates)]
                live = [(h, n) for h, n in heads if h is not None]
                if not live:
                    break
                best = candidates[min(live)[1]]
            elif best.head() is None:
                break
            _, seq, job_id = best.pop()
            job = jobs.get(job_id)
            if job is None:
                continue
            if stale and job_id in stale:
                if job.status is _PENDING and self._live_seq.get(job_id) == seq:
                    del self._live_seq[job_id]  # the live entry; the rest are stale
                else:
                    self._drop_stale(job_id)  # an entry a cancel left behind
                    continue
            elif job.status is not _PENDING:
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
            self._live_seq.pop(job_id, None)
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

        if status is _RUNNING:  # few: look at them only (a tenant's cap asks this per job)
            candidates: Iterable[Job] = (self._jobs[job_id] for job_id in self._running)
        else:
            candidates = self._jobs.values()
        found = heapq.nlargest(limit + 1, filter(keep, candidates), key=lambda job: job.id)
        more = len(found) > limit
        items = found[:limit]
        return Page(items=items, next_cursor=items[-1].id if more else None)

    async def counts(self) -> dict[str, dict[JobStatus, int]]:
        return {name: dict(counts) for name, counts in self._counts.items()}

    async def next_run_at(self, queues: Sequence[str] | None) -> float | None:
        names: Iterable[str] = self._lanes if queues is None else queues
        earliest: float | None = None
        for name in names:
            lanes = self._lanes.get(name)
            when = None if lanes is None else lanes.earliest()
            if when is not None and (earliest is None or when < earliest):
                earliest = when
        return earliest

    @asynccontextmanager
    async def listen(self) -> AsyncIterator[_Listener]:
        listener = _Listener()
        self._listeners.append(listener)
        try:
            yield listener
        finally:
            self._listeners.remove(listener)
