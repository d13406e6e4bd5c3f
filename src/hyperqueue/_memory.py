"""In-memory storage: the reference backend, for tests, tools and one-process services.

Claim order is (priority rank, run_at, sequence). Due jobs of one queue sit in a FIFO
lane per priority (O(1)) plus a heap for the few that arrive out of order (O(log n));
jobs scheduled for later wait in a heap by run_at and move over once due. So claiming
the next job never scans, however many jobs are queued. Due jobs of a tenant wait in
their tenant's own line instead; a claim that sees such lines shares turns between
tenants (fair share, see ``_claim_fair``): its order is (rank, the tenant's running
jobs plus the place in its line, run_at, sequence), jobs without a tenant being one
tenant. Cancelling a pending
job leaves its entry behind; a per-job count of such stale entries lets a claim skip
them, and for the rare job that is pending again while stale entries of it remain, the
sequence number of its live entry tells the two apart.
"""

from __future__ import annotations

import builtins
import heapq
import itertools
import secrets
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager

import anyio
import msgspec
from msgspec.structs import replace

from . import transitions as move
from ._errors import (
    InvalidTransition,
    JobNotFound,
    QuotaExceeded,
    ScheduleNotFound,
    WorkflowNotFound,
)
from ._filter import ErrorGroup, JobFilter
from ._models import (
    _RANK,
    Job,
    JobStatus,
    Outcome,
    Page,
    Schedule,
    StoredEvent,
    TaskBacklog,
    WorkerInfo,
    WorkflowRecord,
)

__all__ = ["MemoryStorage"]

_PENDING = JobStatus.PENDING
_RUNNING = JobStatus.RUNNING
_COMPLETED = JobStatus.COMPLETED
_FAILED = JobStatus.FAILED
_CANCELLED = JobStatus.CANCELLED
_COMPLETED_EVENT = "job.completed"
_FAILED_ONLY = frozenset({_FAILED})

# Jobs enqueued to run now arrive in run_at order, so each priority level keeps its due
# jobs in a FIFO lane of (run_at, seq, id): O(1) push and pop. A due job that would sort
# before a lane's tail (a delayed job coming due, a retry, a clock that stepped back)
# goes to a small heap of (rank, run_at, seq, id) instead, and a claim takes whichever
# head sorts first. Delayed jobs wait in a heap of (run_at, seq, rank, id).
_RANKS = 4
_Key = tuple[int, float, int]


class _Lanes:
    """The pending jobs of one named queue and task.

    The fifo and ready parts hold the due jobs without a tenant; ``lines`` the due jobs
    of each tenant, one ``_Lanes`` per tenant using only its fifo and ready parts (a
    line is dropped once empty). Delayed jobs of every tenant share ``delayed``."""

    __slots__ = ("delayed", "fifo", "lines", "ready")

    def __init__(self) -> None:
        self.fifo: list[deque[tuple[float, int, str]]] = [deque() for _ in range(_RANKS)]
        self.ready: list[tuple[int, float, int, str]] = []
        self.delayed: list[tuple[float, int, int, str]] = []
        self.lines: dict[str, _Lanes] = {}

    def push_due(self, rank: int, run_at: float, seq: int, job_id: str) -> None:
        lane = self.fifo[rank]
        if not lane or lane[-1][:2] < (run_at, seq):
            lane.append((run_at, seq, job_id))
        else:
            heapq.heappush(self.ready, (rank, run_at, seq, job_id))

    def push_line(self, tenant: str, rank: int, run_at: float, seq: int, job_id: str) -> None:
        line = self.lines.get(tenant)
        if line is None:
            line = self.lines[tenant] = _Lanes()
        line.push_due(rank, run_at, seq, job_id)

    def promote(self, now: float, jobs: Mapping[str, Job]) -> None:
        delayed = self.delayed
        while delayed and delayed[0][0] <= now:
            run_at, seq, rank, job_id = heapq.heappop(delayed)
            job = jobs.get(job_id)
            if job is not None and job.tenant is not None:
                self.push_line(job.tenant, rank, run_at, seq, job_id)
            else:
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

    def take(self, limit: int) -> list[tuple[float, int, str]]:
        """Remove up to ``limit`` next entries, in claim order: (run_at, seq, job id).

        With no out-of-order entry waiting (the usual case) each lane gives its head run
        at once, without comparing keys entry by entry."""
        ready = self.ready
        out: list[tuple[float, int, str]] = []
        if not ready:
            for lane in self.fifo:
                if lane:
                    if len(lane) <= limit - len(out):
                        out += lane
                        lane.clear()
                    else:
                        popleft = lane.popleft
                        out += [popleft() for _ in range(limit - len(out))]
                    if len(out) >= limit:
                        break
            return out
        while len(out) < limit and (ready or any(self.fifo)):
            out.append(self.pop())
        return out

    def pop(self) -> tuple[float, int, str]:
        """Remove the next entry; returns its (run_at, seq, job id)."""
        ready = self.ready
        for rank, lane in enumerate(self.fifo):
            if lane:
                if ready and ready[0][:3] < (rank, *lane[0][:2]):
                    return heapq.heappop(ready)[1:]
                return lane.popleft()
        return heapq.heappop(ready)[1:]

    def ids(self) -> Iterable[str]:
        """Every job id with an entry (stale ones included: callers check status)."""
        for lane in self.fifo:
            for entry in lane:
                yield entry[2]
        for item in self.ready:
            yield item[3]
        for later in self.delayed:
            yield later[3]
        for line in self.lines.values():
            yield from line.ids()

    def earliest(self) -> float | None:
        """The earliest run_at of a pending job (any due job counts as due now)."""
        due = self.head()
        if self.lines:
            heads = [head[1] for line in self.lines.values() if (head := line.head())]
            if due is not None:
                heads.append(due[1])
            if heads:
                return min(heads)
        elif due is not None:
            return due[1]
        return self.delayed[0][0] if self.delayed else None


def _first(lines: Sequence[_Lanes]) -> tuple[_Key | None, _Lanes]:
    """The sort key of the next entry among one tenant's ``lines`` (None when they are
    empty), and the line that holds it."""
    best = lines[0]
    key = best.head()
    for line in lines[1:]:
        head = line.head()
        if head is not None and (key is None or head < key):
            key, best = head, line
    return key, best


class _Entry(msgspec.Struct, frozen=True, gc=False):
    """One event log entry: a Struct that the garbage collector does not track (a log of
    100,000 tuples would make every collection walk it)."""

    id: int
    type: str
    at: float
    job: Job


class _Flow:
    """A workflow's bookkeeping: its steps released and not ended (``active``, held
    under its concurrency) and its blocked steps waiting on nothing but a slot."""

    __slots__ = ("active", "ready", "record")

    def __init__(self, record: WorkflowRecord) -> None:
        self.record = record
        self.active = 0
        self.ready: deque[str] = deque()


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

    Its event log starts when it is first read (:meth:`read_events` or
    :meth:`last_event_id`, as a stream starting at the live end does): every process
    that writes to a memory storage is this one, so until someone reads the log nobody
    can miss an entry, and a queue that never reads it pays nothing for it. From then
    on it keeps the last ``event_history`` entries (100,000 by default).
    """

    def __init__(self, *, event_history: int = 100_000) -> None:
        if event_history < 1:
            raise ValueError("event_history must be at least 1")
        self.origin = secrets.token_hex(8)
        self._jobs: dict[str, Job] = {}
        # pending jobs by (queue, task): a claim looks only at the tasks it can run
        self._lanes: dict[tuple[str, str], _Lanes] = {}
        self._log: deque[_Entry] = deque(maxlen=event_history)
        self._logging = False
        self._next_event_id = itertools.count(1).__next__
        self._tenants: dict[str, list[int]] = {}  # tenant -> [pending, running]
        self._tenants_running = 0  # the running jobs with a tenant, for fair share
        self._workers: dict[str, WorkerInfo] = {}
        self._stale: dict[str, int] = {}
        self._live_seq: dict[str, int] = {}  # only for jobs that also have stale entries
        self._running: dict[str, None] = {}
        self._keys: dict[tuple[str | None, str], tuple[str, float | None]] = {}
        self._key_expiry: deque[tuple[float, tuple[str | None, str]]] = deque()
        self._counts: dict[str, dict[JobStatus, int]] = {}
        self._listeners: list[_Listener] = []
        self._seq = 0
        self._schedules: dict[str, Schedule] = {}
        self._flows: dict[str, _Flow] = {}
        self._paused: set[str] = set()

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"MemoryStorage(jobs={len(self._jobs)})"

    # -- bookkeeping -----------------------------------------------------------------

    def _count(self, job: Job, old: JobStatus | None, new: JobStatus) -> None:
        counts = self._counts.get(job.queue)
        if counts is None:
            counts = self._counts[job.queue] = dict.fromkeys(JobStatus, 0)
        if old is not None:
            counts[old] -= 1
        counts[new] += 1
        if job.tenant is not None:
            self._count_tenant(job.tenant, old, new)

    def _count_tenant(self, tenant: str, old: JobStatus | None, new: JobStatus) -> None:
        figures = self._tenants.get(tenant)
        if figures is None:
            figures = self._tenants[tenant] = [0, 0]
        if old is _PENDING:
            figures[0] -= 1
        elif old is _RUNNING:
            figures[1] -= 1
            self._tenants_running -= 1
        if new is _PENDING:
            figures[0] += 1
        elif new is _RUNNING:
            figures[1] += 1
            self._tenants_running += 1

    def _log_event(self, kind: str, at: float, job: Job) -> None:
        if self._logging:
            self._log.append(_Entry(self._next_event_id(), kind, at, job))

    def _push(self, job: Job, now: float) -> None:
        lane_key = (job.queue, job.task)
        lanes = self._lanes.get(lane_key)
        if lanes is None:
            lanes = self._lanes[lane_key] = _Lanes()
        self._seq = seq = self._seq + 1
        if self._stale and job.id in self._stale:
            self._live_seq[job.id] = seq
        rank = _RANK[job.priority]
        run_at = job.run_at
        if run_at > now:
            heapq.heappush(lanes.delayed, (run_at, seq, rank, job.id))
        elif job.tenant is not None:  # a line per tenant: claims share turns (fair share)
            lanes.push_line(job.tenant, rank, run_at, seq, job.id)
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

    def _live(self, job_id: str, seq: int) -> Job | None:
        """The pending job that the lane entry ``(seq, job_id)`` just popped names, or
        ``None`` for an entry left behind: its job gone or no longer pending, or one of
        the entries a cancel left (accounted for here)."""
        job = self._jobs.get(job_id)
        if job is None:
            return None
        if self._stale and job_id in self._stale:
            if job.status is _PENDING and self._live_seq.get(job_id) == seq:
                del self._live_seq[job_id]  # the live entry; the rest are stale
                return job
            self._drop_stale(job_id)  # an entry a cancel left behind
            return None
        return job if job.status is _PENDING else None

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

    async def enqueue(
        self,
        jobs: Sequence[Job],
        *,
        now: float,
        key_ttl: float | None,
        max_queued: Mapping[str, int] | None = None,
    ) -> list[Job]:
        if max_queued:  # all or nothing: checked for the whole batch first
            self._check_quotas(jobs, max_queued)
        one = self._enqueue_one
        return [one(job, now, key_ttl, None) for job in jobs]

    def _enqueue_one(
        self, job: Job, now: float, key_ttl: float | None, max_queued: Mapping[str, int] | None
    ) -> Job:
        """:meth:`enqueue` of one job, without a coroutine: nothing here waits, so a
        :class:`~hyperqueue.Queue` on exactly this class calls it directly, sparing
        every ``task.enqueue()`` a coroutine. Returns the job stored, or the job its
        idempotency key made before."""
        if max_queued:
            self._check_quotas((job,), max_queued)
        if self._key_expiry:
            self._forget_expired_keys(now)
        if job.key is not None:
            scoped = (job.tenant, job.key)
            seen = self._keys.get(scoped)
            if seen is not None and (seen[1] is None or seen[1] > now):
                existing = self._jobs.get(seen[0])
                if existing is not None:
                    if self._listeners:
                        self._notify()
                    return existing
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
        # the usual job (due now, no tenant, its lane there and no later entry at the
        # lane's tail) goes straight to the end of its FIFO lane; any other to _push
        lanes = self._lanes.get((job.queue, job.task))
        run_at = job.run_at
        lane = None
        if job.tenant is not None:
            self._count_tenant(job.tenant, None, _PENDING)
        elif lanes is not None and run_at <= now and not self._stale:
            lane = lanes.fifo[_RANK[job.priority]]
            if lane and lane[-1][0] > run_at:
                lane = None
        if lane is not None:
            self._seq = seq = self._seq + 1
            lane.append((run_at, seq, job.id))
        else:
            self._push(job, now)
        if self._logging:
            self._log.append(_Entry(self._next_event_id(), "job.enqueued", now, job))
        if self._listeners:
            self._notify()
        return job

    def _check_quotas(self, jobs: Sequence[Job], max_queued: Mapping[str, int]) -> None:
        adding: dict[str, int] = {}
        for job in jobs:
            if job.tenant is not None and job.tenant in max_queued:
                adding[job.tenant] = adding.get(job.tenant, 0) + 1
        for tenant, n in adding.items():
            queued = self._tenants.get(tenant, [0, 0])[0]
            if queued + n > max_queued[tenant]:
                raise QuotaExceeded(tenant, max_queued[tenant], queued)

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
        candidates: list[_Lanes] = []
        paused = self._paused
        fair = False  # fair share between tenants when due jobs of a tenant are in view
        for (queue_name, task_name), lanes in self._lanes.items():
            if queues is not None and queue_name not in queues:
                continue
            if paused and queue_name in paused:
                continue
            if tasks is not None and task_name not in tasks:
                continue
            if lanes.delayed and lanes.delayed[0][0] <= now:
                lanes.promote(now, self._jobs)
            if lanes.lines:
                fair = True
                candidates.append(lanes)
            elif lanes.head() is not None:
                candidates.append(lanes)
        claimed: list[Job] = []
        if not candidates:
            return claimed
        if fair:
            return self._claim_fair(candidates, limit, now, lease, worker, max_running)
        if len(candidates) == 1:
            return self._claim_lanes(candidates[0], limit, now, lease, worker)
        # only jobs without a tenant are due here: the (rank, run_at, seq) merge of the
        # lanes' heads is the claim order, and no tenant cap applies
        jobs = self._jobs
        running = self._running
        while len(claimed) < limit:
            heads = [(lanes.head(), n) for n, lanes in enumerate(candidates)]
            live = [(h, n) for h, n in heads if h is not None]
            if not live:
                break
            _, seq, job_id = candidates[min(live)[1]].pop()
            job = self._live(job_id, seq)
            if job is None:
                continue
            job = move.claimed(job, now=now, lease=lease, worker=worker)
            jobs[job.id] = job
            running[job.id] = None
            counts = self._counts[job.queue]
            counts[_PENDING] -= 1
            counts[_RUNNING] += 1
            claimed.append(job)
        return claimed

    def _claim_lanes(
        self, lanes: _Lanes, limit: int, now: float, lease: float, worker: str
    ) -> list[Job]:
        """A claim from the due jobs without a tenant of one queue and task, the usual
        claim: their entries in order, taken from the lanes a batch at a time, and the
        queue's counts moved once for the claim (every job is of that queue)."""
        jobs = self._jobs
        running = self._running
        live_job = self._live
        claimed_job = move.claimed
        claimed: list[Job] = []
        append = claimed.append
        while len(claimed) < limit:
            entries = lanes.take(limit - len(claimed))
            if not entries:
                break
            for _, seq, job_id in entries:
                job = live_job(job_id, seq)
                if job is None:
                    continue
                jobs[job_id] = job = claimed_job(job, now=now, lease=lease, worker=worker)
                running[job_id] = None
                append(job)
        if claimed:
            counts = self._counts[claimed[0].queue]
            counts[_PENDING] -= len(claimed)
            counts[_RUNNING] += len(claimed)
        return claimed

    def _claim_fair(
        self,
        candidates: Sequence[_Lanes],
        limit: int,
        now: float,
        lease: float,
        worker: str,
        max_running: Mapping[str, int] | None,
    ) -> list[Job]:
        """Claim in fair-share order: (rank, k, run_at, seq), where k is the tenant's
        running jobs when the claim starts plus the job's place among the due pending
        jobs of its tenant and priority (jobs without a tenant are one tenant, their
        running jobs being those no tenant counts). A heap holds one turn per tenant,
        its next job's key; taking a job puts the tenant's next one back with k + 1. A
        tenant at its running cap leaves the heap, its jobs untouched: first in its line
        for the next claim."""
        jobs = self._jobs
        running = self._running
        figures = self._tenants
        by_tenant: dict[str | None, list[_Lanes]] = {None: list(candidates)}
        for lanes in candidates:
            for name, line in lanes.lines.items():
                by_tenant.setdefault(name, []).append(line)
        tenants = list(by_tenant.items())
        best: list[_Lanes] = []
        bases: list[int] = []  # each tenant's running jobs: its k starts there
        turns: list[tuple[int, int, float, int, int]] = []
        for n, (tenant, lines) in enumerate(tenants):
            if tenant is None:
                base = len(running) - self._tenants_running
            else:
                counted = figures.get(tenant)
                base = counted[1] if counted is not None else 0
            bases.append(base)
            key, line = _first(lines)
            best.append(line)
            if key is not None:
                turns.append((key[0], base, key[1], key[2], n))
        heapq.heapify(turns)
        claimed: list[Job] = []
        while turns and len(claimed) < limit:
            rank, k, _, _, n = heapq.heappop(turns)
            tenant, lines = tenants[n]
            if max_running and tenant is not None:
                cap = max_running.get(tenant)
                if cap is not None and figures.get(tenant, [0, 0])[1] >= cap:
                    continue  # at its cap: out of this claim, its line untouched
            _, seq, job_id = best[n].pop()
            job = self._live(job_id, seq)
            taken = job is not None
            if job is not None:
                job = move.claimed(job, now=now, lease=lease, worker=worker)
                jobs[job_id] = job
                running[job_id] = None
                counts = self._counts[job.queue]
                counts[_PENDING] -= 1
                counts[_RUNNING] += 1
                if job.tenant is not None:
                    self._count_tenant(job.tenant, _PENDING, _RUNNING)
                claimed.append(job)
            key, best[n] = _first(lines)
            if key is not None:
                place = (k + 1 if taken else k) if key[0] == rank else bases[n]
                heapq.heappush(turns, (key[0], place, key[1], key[2], n))
        for lanes in candidates:
            held = lanes.lines
            for name in [name for name, line in held.items() if line.head() is None]:
                del held[name]
        return claimed

    async def mark_started(self, starts: Sequence[tuple[str, int, float]]) -> list[bool]:
        out: list[bool] = []
        jobs = self._jobs
        for job_id, token, at in starts:
            job = jobs.get(job_id)
            if job is None or job.status is not _RUNNING or job.token != token:
                out.append(False)
                continue
            jobs[job_id] = job = move.started(job, at)
            self._log_event("job.started", at, job)
            out.append(True)
        return out

    async def finish(self, outcomes: Sequence[Outcome], *, now: float) -> list[Job | None]:
        out: list[Job | None] = []
        append = out.append
        wake = False
        jobs = self._jobs
        running = self._running
        counts_of = self._counts
        finished = move.finished
        logging = self._logging
        log = self._log
        next_event_id = self._next_event_id
        # completions of jobs without a tenant or workflow (most outcomes) are counted
        # a run at a time: the number in a row of one queue, added once
        done_queue: str | None = None
        done = 0
        for outcome in outcomes:
            job_id = outcome.id
            job = jobs.get(job_id)
            if job is None or job.status is not _RUNNING or job.token != outcome.token:
                append(None)
                continue
            job = jobs[job_id] = finished(job, outcome, now=now)
            del running[job_id]
            status = job.status
            if status is _COMPLETED and not logging and job.tenant is None and job.step is None:
                if job.queue != done_queue:
                    if done:
                        self._count_done(done_queue, done)
                    done_queue, done = job.queue, 0
                done += 1
                append(job)
                continue
            if logging and outcome.started_at is not None:  # started and ended in one
                # write: the started entry shows the job as it ended, as SQLite's do
                log.append(_Entry(next_event_id(), "job.started", outcome.started_at, job))
            if status is _PENDING:
                self._push(job, now)
                wake = True
            counts = counts_of[job.queue]
            counts[_RUNNING] -= 1
            counts[status] += 1
            if job.tenant is not None:
                self._count_tenant(job.tenant, _RUNNING, status)
            if logging:
                kind = _COMPLETED_EVENT if status is _COMPLETED else move.outcome_event(outcome)
                if kind is not None:
                    log.append(_Entry(next_event_id(), kind, now, job))
            if job.step is not None and status is not _PENDING:
                wake = self._step_ended(job, now, released=True) or wake
            append(job)
        if done:
            self._count_done(done_queue, done)
        if wake and self._listeners:
            self._notify()
        return out

    def _count_done(self, queue: str | None, done: int) -> None:
        """``done`` running jobs of ``queue`` completed (none of a tenant)."""
        assert queue is not None
        counts = self._counts[queue]
        counts[_RUNNING] -= done
        counts[_COMPLETED] += done

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
            job = move.rescued(job, now=now)
            if job.status is _PENDING:
                self._push(job, now)
            self._jobs[job_id] = job
            del self._running[job_id]
            self._count(job, _RUNNING, job.status)
            self._log_event("job.rescued", now, job)
            if job.step is not None and job.status is _FAILED:
                self._step_ended(job, now, released=True)
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
        if job.status is not _PENDING and job.status is not _RUNNING:
            raise InvalidTransition(job_id, job.status, "cancel")
        job = self._cancel(job, now)
        if self._listeners:
            self._notify()  # the end of a step may have released others
        return job

    def _cancel(self, job: Job, now: float) -> Job:
        """Cancel a pending or running job (and, for a step, what depends on it)."""
        job_id = job.id
        blocked = job.step is not None and job.step.blocked
        if job.status is _RUNNING:
            del self._running[job_id]
        elif not blocked:  # a blocked step has no entry in the lanes
            self._stale[job_id] = self._stale.get(job_id, 0) + 1
            self._live_seq.pop(job_id, None)
        old = job.status
        job = move.cancelled(job, now=now)
        self._jobs[job_id] = job
        if blocked:  # never counted for its tenant
            self._counts[job.queue][old] -= 1
            self._counts[job.queue][_CANCELLED] += 1
        else:
            self._count(job, old, _CANCELLED)
        self._log_event("job.cancelled", now, job)
        if job.step is not None:
            self._step_ended(job, now, released=not blocked)
        return job

    async def retry(self, job_id: str, *, now: float) -> Job:
        job = self._require(job_id)
        if job.status is not _FAILED and job.status is not _CANCELLED:
            raise InvalidTransition(job_id, job.status, "retry")
        old = job.status
        job = move.retried(job, now=now)
        self._jobs[job_id] = job
        self._count(job, old, _PENDING)
        self._push(job, now)
        if job.step is not None and (flow := self._flows.get(job.step.workflow)) is not None:
            flow.active += 1  # released at once: it holds a slot of its workflow
        self._log_event("job.enqueued", now, job)
        if self._listeners:
            self._notify()
        return job

    async def set_progress(
        self, job_id: str, token: int, progress: object, *, now: float = 0.0
    ) -> bool:
        job = self._jobs.get(job_id)
        if job is None or job.status is not _RUNNING or job.token != token:
            return False
        self._jobs[job_id] = job = replace(job, progress=progress)
        self._log_event("job.progress", now, job)
        return True

    # -- workflows ---------------------------------------------------------------------

    async def enqueue_workflow(
        self,
        workflow: WorkflowRecord,
        jobs: Sequence[Job],
        *,
        now: float,
        max_queued: Mapping[str, int] | None = None,
    ) -> None:
        if max_queued:
            self._check_quotas(jobs, max_queued)
        flow = self._flows[workflow.id] = _Flow(workflow)
        logging = self._logging
        for job in jobs:
            if job.status is not _PENDING:
                job = replace(job, status=_PENDING)
            self._jobs[job.id] = job
            counts = self._counts.get(job.queue)
            if counts is None:
                counts = self._counts[job.queue] = dict.fromkeys(JobStatus, 0)
            counts[_PENDING] += 1  # blocked: counted for its tenant once released
            if logging:
                self._log.append(_Entry(self._next_event_id(), "job.enqueued", now, job))
            if job.step is not None and job.step.waiting == 0:
                flow.ready.append(job.id)
        if self._release(flow, now) and self._listeners:
            self._notify()

    def _release(self, flow: _Flow, now: float) -> bool:
        """Release ready steps while the workflow has free slots; True if any was."""
        cap = flow.record.concurrency
        ready = flow.ready
        jobs = self._jobs
        released = False
        while ready and (cap is None or flow.active < cap):
            job = jobs.get(ready.popleft())
            if job is None or job.status is not _PENDING or job.step is None:
                continue
            if not job.step.blocked:
                continue
            job = jobs[job.id] = move.released(job, now=now)
            if job.tenant is not None:
                self._count_tenant(job.tenant, None, _PENDING)
            self._push(job, now)
            flow.active += 1
            released = True
        return released

    def _step_ended(self, job: Job, now: float, *, released: bool) -> bool:
        """A step reached a final status: free its slot, settle its children (cancel
        or count down, in turn for those it cancels), release what is ready."""
        assert job.step is not None
        flow = self._flows.get(job.step.workflow)
        if flow is None:
            return False
        if released:
            flow.active = max(flow.active - 1, 0)
        jobs = self._jobs
        ended = [job]
        while ended:
            parent = ended.pop()
            assert parent.step is not None
            for child_id in parent.step.children:
                child = jobs.get(child_id)
                if child is None:
                    continue
                after = move.parent_finished(child, parent, now=now)
                if after is child:
                    continue
                jobs[child_id] = after
                assert after.step is not None
                if after.status is _CANCELLED:
                    counts = self._counts[after.queue]
                    counts[_PENDING] -= 1
                    counts[_CANCELLED] += 1
                    self._log_event("job.cancelled", now, after)
                    ended.append(after)
                elif after.step.waiting == 0:
                    flow.ready.append(child_id)
        return self._release(flow, now)

    async def get_workflow(
        self, workflow_id: str
    ) -> tuple[WorkflowRecord, builtins.list[Job]] | None:
        flow = self._flows.get(workflow_id)
        if flow is None:
            return None
        jobs = self._jobs
        steps = flow.record.steps.values()
        return flow.record, [jobs[job_id] for job_id in steps if job_id in jobs]

    async def cancel_workflow(self, workflow_id: str, *, now: float) -> builtins.list[Job]:
        flow = self._flows.get(workflow_id)
        if flow is None:
            raise WorkflowNotFound(workflow_id)
        jobs = self._jobs
        live = [i for i in flow.record.steps.values() if i in jobs and not jobs[i].status.is_final]
        for job_id in live:
            job = jobs[job_id]
            if not job.status.is_final:  # else cancelled with a parent just now
                self._cancel(job, now)
        return [jobs[job_id] for job_id in live]

    async def retry_workflow(self, workflow_id: str, *, now: float) -> builtins.list[Job]:
        flow = self._flows.get(workflow_id)
        if flow is None:
            raise WorkflowNotFound(workflow_id)
        jobs = self._jobs
        steps = [jobs[job_id] for job_id in flow.record.steps.values() if job_id in jobs]
        for job in steps:
            if not job.status.is_final:
                raise InvalidTransition(workflow_id, f"{job.status} (step {job.id})", "retry")
        rerun = move.steps_to_retry(steps)
        if not rerun:
            raise InvalidTransition(workflow_id, "completed", "retry")
        done = {job.id for job in steps if job.id not in rerun}
        again: builtins.list[Job] = []
        for job in steps:
            if job.id in done:
                continue
            assert job.step is not None
            waiting = sum(1 for parent in job.step.parents if parent not in done)
            after = jobs[job.id] = move.step_retried(job, waiting=waiting, now=now)
            counts = self._counts[job.queue]
            counts[job.status] -= 1
            counts[_PENDING] += 1
            self._log_event("job.enqueued", now, after)
            if waiting == 0:
                flow.ready.append(job.id)
            again.append(after)
        flow.active = 0
        if self._release(flow, now) and self._listeners:
            self._notify()
        return again

    # -- periodic jobs ---------------------------------------------------------------

    async def save_schedule(self, schedule: Schedule, *, now: float) -> Schedule:
        old = self._schedules.get(schedule.name)
        self._schedules[schedule.name] = schedule = move.schedule_saved(schedule, old, now=now)
        return schedule

    async def schedules(self) -> builtins.list[Schedule]:
        return [self._schedules[name] for name in sorted(self._schedules)]

    async def fire_schedule(
        self, name: str, *, slot: float, job: Job | None, missed: int, now: float
    ) -> bool:
        schedule = self._schedules.get(name)
        if schedule is None or not move.schedule_fires(schedule, slot):
            return False
        job_id = None
        if job is not None:  # no await inside enqueue: this call is atomic
            [stored] = await self.enqueue((job,), now=now, key_ttl=move.SLOT_KEY_TTL)
            job_id = stored.id
        self._schedules[name] = move.schedule_fired(
            schedule, slot=slot, job_id=job_id, missed=missed, now=now
        )
        return True

    async def pause_schedule(self, name: str, *, paused: bool, now: float) -> Schedule:
        schedule = self._schedules.get(name)
        if schedule is None:
            raise ScheduleNotFound(name)
        self._schedules[name] = schedule = move.schedule_paused(schedule, paused=paused, now=now)
        return schedule

    # -- paused queues -----------------------------------------------------------------

    async def pause_queue(self, name: str, *, paused: bool, now: float) -> None:
        if paused:
            self._paused.add(name)
        elif name in self._paused:
            self._paused.discard(name)
            self._notify()

    async def paused_queues(self) -> builtins.list[str]:
        return sorted(self._paused)

    # -- workers -----------------------------------------------------------------------

    async def register_worker(self, info: WorkerInfo) -> None:
        self._workers[info.name] = info

    async def unregister_worker(self, name: str) -> None:
        self._workers.pop(name, None)

    async def workers(self, *, now: float) -> list[WorkerInfo]:
        return [info for info in self._workers.values() if info.expires_at > now]

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

        if status is _RUNNING:  # few: look at them only
            candidates: Iterable[Job] = (self._jobs[job_id] for job_id in self._running)
        else:
            candidates = self._jobs.values()
        found = heapq.nlargest(limit + 1, filter(keep, candidates), key=lambda job: job.id)
        more = len(found) > limit
        items = found[:limit]
        return Page(items=items, next_cursor=items[-1].id if more else None)

    # -- search (see _filter) ---------------------------------------------------------

    def _matching(
        self, where: JobFilter, before: str | None, statuses: frozenset[JobStatus] | None = None
    ) -> Iterable[Job]:
        for job in self._jobs.values():
            if before is not None and job.id >= before:
                continue
            if statuses is not None and job.status not in statuses:
                continue
            if where.matches(job):
                yield job

    async def search(
        self, where: JobFilter, *, cursor: str | None = None, limit: int = 100
    ) -> Page:
        found = heapq.nlargest(limit + 1, self._matching(where, cursor), key=lambda j: j.id)
        items = found[:limit]
        return Page(items=items, next_cursor=items[-1].id if len(found) > limit else None)

    async def count(self, where: JobFilter) -> int:
        return sum(1 for _ in self._matching(where, None))

    def _batch(
        self, where: JobFilter, action: str, before: str | None, limit: int
    ) -> builtins.list[Job]:
        narrowed = where.for_action(action)
        if narrowed is None:
            return []
        found = self._matching(narrowed, before)
        if action == "discard":  # a step stays while its workflow runs, as retention keeps it
            found = (job for job in found if not self._in_live_flow(job))
        return heapq.nlargest(limit, found, key=lambda j: j.id)

    async def cancel_matching(
        self, where: JobFilter, *, now: float, limit: int, before: str | None = None
    ) -> builtins.list[Job]:
        out: builtins.list[Job] = []
        for job in self._batch(where, "cancel", before, limit):
            job = self._jobs[job.id]  # a parent cancelled just now may have taken it
            if job.status is _CANCELLED:
                out.append(job)
            elif not job.status.is_final:
                out.append(self._cancel(job, now))
        if out and self._listeners:
            self._notify()
        return out

    async def retry_matching(
        self, where: JobFilter, *, now: float, limit: int, before: str | None = None
    ) -> builtins.list[Job]:
        return [
            await self.retry(job.id, now=now) for job in self._batch(where, "retry", before, limit)
        ]

    async def discard_matching(
        self, where: JobFilter, *, limit: int, before: str | None = None
    ) -> builtins.list[Job]:
        gone: builtins.list[Job] = []
        for job in self._batch(where, "discard", before, limit):
            flow = None if job.step is None else self._flows.get(job.step.workflow)
            del self._jobs[job.id]
            self._counts[job.queue][job.status] -= 1
            if flow is not None and not any(i in self._jobs for i in flow.record.steps.values()):
                del self._flows[flow.record.id]
            gone.append(job)
        return gone

    def _in_live_flow(self, job: Job) -> bool:
        """Whether ``job`` is a step of a workflow that has a step not final yet."""
        flow = None if job.step is None else self._flows.get(job.step.workflow)
        if flow is None:
            return False
        jobs = self._jobs
        return any(
            (step := jobs.get(i)) is not None and not step.status.is_final
            for i in flow.record.steps.values()
        )

    async def error_groups(
        self, where: JobFilter, *, limit: int = 100
    ) -> builtins.list[ErrorGroup]:
        return ErrorGroup.fold(self._matching(where, None, _FAILED_ONLY), limit=limit)

    async def counts(self) -> dict[str, dict[JobStatus, int]]:
        return {name: dict(counts) for name, counts in self._counts.items()}

    async def backlog(self) -> builtins.list[TaskBacklog]:
        out: builtins.list[TaskBacklog] = []
        for (queue_name, task_name), lanes in self._lanes.items():
            pending = [
                job
                for job_id in lanes.ids()
                if (job := self._jobs.get(job_id)) is not None and job.status is _PENDING
            ]
            unique = {job.id: job for job in pending}
            if unique:
                out.append(
                    TaskBacklog(
                        queue=queue_name,
                        task=task_name,
                        pending=len(unique),
                        oldest_run_at=min(job.run_at for job in unique.values()),
                    )
                )
        return out

    async def next_run_at(
        self, queues: Sequence[str] | None, tasks: Sequence[str] | None = None
    ) -> float | None:
        earliest: float | None = None
        paused = self._paused
        for (queue_name, task_name), lanes in self._lanes.items():
            if queues is not None and queue_name not in queues:
                continue
            if queue_name in paused:
                continue
            if tasks is not None and task_name not in tasks:
                continue
            when = lanes.earliest()
            if when is not None and (earliest is None or when < earliest):
                earliest = when
        return earliest

    async def read_events(
        self, *, after: int, limit: int = 1000, skip_origin: str | None = None
    ) -> builtins.list[StoredEvent]:
        self._logging = True
        log = self._log
        if not log or after >= log[-1].id or skip_origin == self.origin:
            return []  # (this object wrote every entry: skipping its origin skips all)
        start = max(after + 1 - log[0].id, 0)
        origin = self.origin
        return [
            StoredEvent(id=entry.id, type=entry.type, at=entry.at, job=entry.job, origin=origin)
            for entry in (log[i] for i in range(start, min(start + limit, len(log))))
        ]

    async def last_event_id(self) -> int:
        self._logging = True
        log = self._log
        return log[-1].id if log else 0  # the newest entry is never dropped

    @asynccontextmanager
    async def listen(self) -> AsyncIterator[_Listener]:
        listener = _Listener()
        self._listeners.append(listener)
        try:
            yield listener
        finally:
            self._listeners.remove(listener)
