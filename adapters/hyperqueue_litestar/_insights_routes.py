"""What the queue did over a recent window: ``GET /api/v1/insights`` (issue 14).

The operator's first questions, answered from what every storage already keeps: how many
jobs finished and failed (in total and per time bucket), how long jobs waited and ran
(p50 / p95), which tasks fail most and which run slowest, how old the oldest due pending
job is (the lag), which tasks were held back most (``job.deferred``: a rate limit or an
open circuit breaker put the job back without spending an attempt; the log holds every
process's deferrals; a job put back by a worker that does not know its task counts too),
and how this process's circuit breakers fared. ``hyperqueue insights``
prints it and the dashboard draws its overview charts from it.

It is computed here from public storage methods, with no storage-side aggregate:

- the event log (:meth:`~hyperqueue.abc.Storage.read_events`), whose ids only grow: the
  first entry of the window is found by a binary search over ids (about 20 reads of one
  entry for a million entries), then the window is read forward in pages;
- :meth:`~hyperqueue.abc.Storage.counts` and :meth:`~hyperqueue.abc.Storage.backlog`
  for what is pending and running now.

A window holding more than :data:`MAX_EVENTS` entries is cut to its newest ones
(``truncated`` says so), which bounds the cost of a request. Latencies come from the
finished jobs' ``run_at``, ``started_at`` and ``finished_at`` as the log hands them out
(SQLite and PostgreSQL read the job as it is stored now; a job retried since its event
lends no sample).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Annotated

import anyio
import msgspec
from litestar import get
from litestar.handlers import HTTPRouteHandler
from litestar.params import QueryParameter

import hyperqueue as hq
import hyperqueue.abc
from hyperqueue import Operation

__all__ = [
    "CACHE_SECONDS",
    "MAX_EVENTS",
    "BreakerFigures",
    "Bucket",
    "Insights",
    "InsightsSummary",
    "SlowTask",
    "TaskDeferrals",
    "TaskFailures",
    "compute_insights",
    "insights_routes",
]

MAX_EVENTS = 100_000
"""Most event-log entries one request reads; a busier window is cut to its newest ones."""

_PAGE = 5000
_TOP = 10
_FINAL = (hq.JobStatus.COMPLETED, hq.JobStatus.FAILED)


class Bucket(msgspec.Struct, frozen=True, kw_only=True):
    """One slice of the window: counts of events in ``[start, end)`` and the latencies
    of the jobs that finished in it."""

    start: float
    end: float
    enqueued: int = 0
    completed: int = 0
    failed: int = 0
    retried: int = 0
    cancelled: int = 0
    deferred: int = 0
    wait_p50: float | None = None
    wait_p95: float | None = None
    run_p50: float | None = None
    run_p95: float | None = None


class InsightsSummary(msgspec.Struct, frozen=True, kw_only=True):
    """The whole window at once, plus what is pending and running now."""

    enqueued: int
    completed: int
    failed: int
    retried: int
    cancelled: int
    rescued: int
    throughput_per_minute: float
    failure_rate: float | None
    wait_p50: float | None
    wait_p95: float | None
    run_p50: float | None
    run_p95: float | None
    pending: int
    running: int
    oldest_pending_age: float | None
    deferred: int = 0
    """Jobs put back by a rate limit or an open breaker (no attempt spent), every process."""


class TaskFailures(msgspec.Struct, frozen=True, kw_only=True):
    task: str
    failed: int
    completed: int
    failure_rate: float
    last_error: str | None


class SlowTask(msgspec.Struct, frozen=True, kw_only=True):
    task: str
    count: int
    run_p50: float
    run_p95: float
    run_max: float


class TaskDeferrals(msgspec.Struct, frozen=True, kw_only=True):
    """How often a task's jobs were held back (``deferred``) against how often they ran
    (``runs``: completed, failed and retried outcomes); ``share`` is
    ``deferred / (deferred + runs)``, the part of the pickups that spent no attempt."""

    task: str
    deferred: int
    runs: int
    share: float


class BreakerFigures(msgspec.Struct, frozen=True, kw_only=True):
    """A breaker of the serving process; ``trips`` counted since that process started."""

    name: str
    state: str
    trips: int
    state_since: float


class Insights(msgspec.Struct, frozen=True, kw_only=True):
    """The answer of ``GET /api/v1/insights`` (its fields: docs/reference/cli.md, under
    ``insights``)."""

    window: float
    bucket_seconds: float
    since: float
    until: float
    covered_since: float
    truncated: bool
    events_read: int
    summary: InsightsSummary
    series: list[Bucket]
    top_failing: list[TaskFailures]
    slowest: list[SlowTask]
    breakers: list[BreakerFigures]
    most_throttled: list[TaskDeferrals] = []


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The nearest-rank percentile of ``values`` (sorted or not); ``None`` when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


class _Samples:
    """Counts and latency samples of one bucket, one task or the whole window."""

    __slots__ = ("counts", "runs", "waits")

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.waits: list[float] = []
        self.runs: list[float] = []

    def count(self, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def get(self, kind: str) -> int:
        return self.counts.get(kind, 0)


_KINDS = {
    "job.enqueued": "enqueued",
    "job.completed": "completed",
    "job.failed": "failed",
    "job.retrying": "retried",
    "job.cancelled": "cancelled",
    "job.rescued": "rescued",
    "job.deferred": "deferred",
}


async def _first_after(storage: hq.abc.Storage, since: float, last: int) -> int:
    """The largest ``after`` whose next entry is at ``since`` or later (binary search:
    ids only grow, and the entries' times with them)."""
    low, high = 0, last
    while low < high:
        middle = (low + high) // 2
        entries = await storage.read_events(after=middle, limit=1)
        if not entries or entries[0].at >= since:
            high = middle
        else:
            low = entries[0].id
    return low


def _latencies(job: hq.Job) -> tuple[float, float] | None:
    """(wait, run) of a finished job: due to started, started to finished."""
    if job.status not in _FINAL or job.started_at is None or job.finished_at is None:
        return None
    wait = max(0.0, job.started_at - max(job.run_at, job.created_at))
    return wait, max(0.0, job.finished_at - job.started_at)


async def compute_insights(
    queue: hq.Queue, *, window: float = 3600.0, buckets: int = 60
) -> Insights:
    """What ``queue``'s storage recorded over the last ``window`` seconds, in ``buckets``
    equal slices, plus what is pending and running now (see the module docstring)."""
    storage = queue.storage
    until = queue.clock.now()
    since = until - window
    width = window / buckets
    last = await storage.last_event_id()
    start = await _first_after(storage, since, last)
    truncated = last - start > MAX_EVENTS
    if truncated:
        start = last - MAX_EVENTS
    total = _Samples()
    slices = [_Samples() for _ in range(buckets)]
    tasks: dict[str, _Samples] = {}
    last_error: dict[str, str | None] = {}
    covered_since: float | None = None
    read = 0
    after = start
    done = False
    while not done:
        entries = await storage.read_events(after=after, limit=_PAGE)
        done = not entries
        for entry in entries:
            after = entry.id
            if entry.at > until or read >= MAX_EVENTS:
                done = True
                break
            if entry.at < since:
                continue
            read += 1
            covered_since = entry.at if covered_since is None else covered_since
            kind = _KINDS.get(entry.type)
            if kind is None:
                continue
            index = min(buckets - 1, max(0, int((entry.at - since) / width)))
            job = entry.job
            task = tasks.setdefault(job.task, _Samples())
            for samples in (total, slices[index], task):
                samples.count(kind)
            if kind == "failed":
                last_error[job.task] = (job.error or "")[:200] or None
            latencies = _latencies(job) if kind in ("completed", "failed") else None
            if latencies is not None:
                for samples in (total, slices[index], task):
                    samples.waits.append(latencies[0])
                    samples.runs.append(latencies[1])
    return Insights(
        window=window,
        bucket_seconds=width,
        since=since,
        until=until,
        covered_since=since if not truncated or covered_since is None else covered_since,
        truncated=truncated,
        events_read=read,
        summary=await _summary(queue, total, window, until),
        series=[_bucket(s, since + i * width, width) for i, s in enumerate(slices)],
        top_failing=_top_failing(tasks, last_error),
        slowest=_slowest(tasks),
        most_throttled=_most_throttled(tasks),
        breakers=[
            BreakerFigures(
                name=b.name, state=str(b.state), trips=b.trips, state_since=b.state_since
            )
            for b in queue.breakers.stats()
        ],
    )


async def _summary(queue: hq.Queue, total: _Samples, window: float, now: float) -> InsightsSummary:
    storage = queue.storage
    pending = running = 0
    for by_status in (await storage.counts()).values():
        pending += by_status.get(hq.JobStatus.PENDING, 0)
        running += by_status.get(hq.JobStatus.RUNNING, 0)
    due = [
        item.oldest_run_at
        for item in await storage.backlog()
        if item.oldest_run_at is not None and item.oldest_run_at <= now
    ]
    completed, failed = total.get("completed"), total.get("failed")
    finished = completed + failed
    return InsightsSummary(
        enqueued=total.get("enqueued"),
        completed=completed,
        failed=failed,
        retried=total.get("retried"),
        cancelled=total.get("cancelled"),
        rescued=total.get("rescued"),
        throughput_per_minute=round(finished / (window / 60.0), 4),
        failure_rate=round(failed / finished, 4) if finished else None,
        wait_p50=percentile(total.waits, 0.5),
        wait_p95=percentile(total.waits, 0.95),
        run_p50=percentile(total.runs, 0.5),
        run_p95=percentile(total.runs, 0.95),
        pending=pending,
        running=running,
        oldest_pending_age=now - min(due) if due else None,
        deferred=total.get("deferred"),
    )


def _bucket(samples: _Samples, start: float, width: float) -> Bucket:
    return Bucket(
        start=start,
        end=start + width,
        enqueued=samples.get("enqueued"),
        completed=samples.get("completed"),
        failed=samples.get("failed"),
        retried=samples.get("retried"),
        cancelled=samples.get("cancelled"),
        deferred=samples.get("deferred"),
        wait_p50=percentile(samples.waits, 0.5),
        wait_p95=percentile(samples.waits, 0.95),
        run_p50=percentile(samples.runs, 0.5),
        run_p95=percentile(samples.runs, 0.95),
    )


def _top_failing(
    tasks: dict[str, _Samples], last_error: dict[str, str | None]
) -> list[TaskFailures]:
    rows = [
        TaskFailures(
            task=name,
            failed=s.get("failed"),
            completed=s.get("completed"),
            failure_rate=round(s.get("failed") / (s.get("failed") + s.get("completed")), 4),
            last_error=last_error.get(name),
        )
        for name, s in tasks.items()
        if s.get("failed")
    ]
    rows.sort(key=lambda row: (-row.failed, -row.failure_rate, row.task))
    return rows[:_TOP]


def _slowest(tasks: dict[str, _Samples]) -> list[SlowTask]:
    rows = [
        SlowTask(
            task=name,
            count=len(s.runs),
            run_p50=percentile(s.runs, 0.5) or 0.0,
            run_p95=percentile(s.runs, 0.95) or 0.0,
            run_max=max(s.runs),
        )
        for name, s in tasks.items()
        if s.runs
    ]
    rows.sort(key=lambda row: (-row.run_p95, row.task))
    return rows[:_TOP]


def _most_throttled(tasks: dict[str, _Samples]) -> list[TaskDeferrals]:
    rows = []
    for name, s in tasks.items():
        deferred = s.get("deferred")
        if not deferred:
            continue
        runs = s.get("completed") + s.get("failed") + s.get("retried")
        rows.append(
            TaskDeferrals(
                task=name,
                deferred=deferred,
                runs=runs,
                share=round(deferred / (deferred + runs), 4),
            )
        )
    rows.sort(key=lambda row: (-row.deferred, -row.share, row.task))
    return rows[:_TOP]


CACHE_SECONDS = 2.0
"""How long the route reuses an answer for the same window and buckets: dashboards that
poll together cost one computation."""


def insights_routes(queue: hq.Queue, modes: hq.ModeController) -> list[HTTPRouteHandler]:
    """``GET /insights`` over ``queue`` (viewer role, as every read). Concurrent requests
    for the same window share one computation, reused for :data:`CACHE_SECONDS`."""
    lock = anyio.Lock()
    cache: dict[tuple[float, int], tuple[float, Insights]] = {}

    @get(
        "/insights",
        operation_id="getInsights",
        summary="Throughput, failures, latencies and lag over a recent window",
        tags=["insights"],
    )
    async def insights(
        window: Annotated[float, QueryParameter(ge=60, le=604_800)] = 3600.0,
        buckets: Annotated[int, QueryParameter(ge=1, le=500)] = 60,
    ) -> Insights:
        modes.check(Operation.READ)
        key = (window, buckets)
        async with lock:
            hit = cache.get(key)
            if hit is not None and time.monotonic() - hit[0] < CACHE_SECONDS:
                return hit[1]
            answer = await compute_insights(queue, window=window, buckets=buckets)
            cache.clear()  # one entry: the window a dashboard polls
            cache[key] = (time.monotonic(), answer)
            return answer

    return [insights]
