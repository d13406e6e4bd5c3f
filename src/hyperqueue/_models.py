"""The records that cross the storage boundary: jobs, outcomes, pages and figures.

They are frozen msgspec Structs so that every backend encodes and decodes them the same
way and cheaply. New fields must get defaults so that stored jobs still decode.
"""

from __future__ import annotations

import enum
from typing import Any

import msgspec

__all__ = ["Job", "JobStatus", "Outcome", "Page", "Priority", "QueueStats"]


class JobStatus(enum.StrEnum):
    """Where a job is in its life. ``pending`` includes delayed and retry-scheduled jobs."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in _FINAL


_FINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})


class Priority(enum.StrEnum):
    """Claim order across levels; within one level jobs run first in, first out."""

    CRITICAL = "critical"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @property
    def rank(self) -> int:
        """0 for critical up to 3 for low: smaller runs first."""
        return _RANK[self]


_RANK = {Priority.CRITICAL: 0, Priority.HIGH: 1, Priority.NORMAL: 2, Priority.LOW: 3}


class Job(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One unit of work and everything known about it.

    A job is immutable: every transition yields a new ``Job`` from storage, which is the
    single source of truth. Times are seconds since the epoch on the queue's clock.
    ``token`` is the fencing token: it grows on every claim, and storage accepts a
    finish or a lease extension only with the token of the current claim.
    """

    id: str
    task: str
    queue: str = "default"
    status: JobStatus = JobStatus.PENDING
    priority: Priority = Priority.NORMAL
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = {}
    attempts: int = 0
    max_attempts: int = 1
    result: Any = None
    error: str | None = None
    traceback: str | None = None
    progress: Any = None
    key: str | None = None
    tenant: str | None = None
    timeout: float | None = None
    created_at: float = 0.0
    run_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    token: int = 0
    lease_until: float | None = None
    worker: str | None = None


class Outcome(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """How one claimed job ended, as a worker reports it to storage.

    ``status`` is completed, failed or cancelled for a final outcome, or pending for a job
    that goes back to wait: a retry scheduled at ``run_at``, or with ``released`` a job
    handed back during shutdown, whose attempt is not counted.
    """

    id: str
    token: int
    status: JobStatus
    result: Any = None
    error: str | None = None
    traceback: str | None = None
    run_at: float | None = None
    released: bool = False


class Page(msgspec.Struct, frozen=True, kw_only=True):
    """One page of a job listing, newest first; pass ``next_cursor`` to get the next."""

    items: list[Job]
    next_cursor: str | None = None


class QueueStats(msgspec.Struct, frozen=True, kw_only=True):
    """Counts of jobs by status in one named queue."""

    queue: str
    pending: int = 0
    running: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0

    @property
    def total(self) -> int:
        return self.pending + self.running + self.completed + self.failed + self.cancelled
