"""Slow jobs: runs that took longer than a threshold, as events and log lines.

An execution hook (see :mod:`hyperqueue._hooks`): ``queue.hooks.append(SlowJobs(queue,
after=30.0))`` (``hyperqueue serve`` and ``worker`` add it from
``workers.slow_job_seconds``). A run is timed on the queue's clock from when its runner
took it to when its outcome was known; one that took ``after`` seconds or more is
published as a :class:`SlowJob` event on the queue's bus and logged as a warning on the
``hyperqueue.worker`` logger. Deferred runs (the function was not called) are left out.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import TYPE_CHECKING

from ._events import Event
from ._hooks import JobRun
from ._models import Job

if TYPE_CHECKING:
    from ._queue import Queue

__all__ = ["SlowJob", "SlowJobs"]

_log = logging.getLogger("hyperqueue.worker")


class SlowJob(Event, frozen=True, kw_only=True, tag="job.slow"):
    """A run of ``job`` took ``seconds``, at least the ``threshold`` it was held to;
    ``outcome`` is how that run ended (completed, retry, failed, interrupted)."""

    job: Job
    seconds: float
    threshold: float
    outcome: str


class SlowJobs:
    """Reports the runs that take ``after`` seconds or more (see the module docstring)."""

    __slots__ = ("after", "queue")

    def __init__(self, queue: Queue, *, after: float) -> None:
        if not after > 0:
            raise ValueError("after must be > 0 seconds")
        self.queue = queue
        self.after = after

    def __call__(self, run: JobRun, /) -> _Timer:
        return _Timer(self, run)

    def report(self, run: JobRun, seconds: float) -> None:
        job = run.job
        outcome = run.outcome or "interrupted"
        _log.warning(
            "slow job: %s %s (queue %s, attempt %d) ran %.3f s (threshold %.3f s), %s",
            job.task,
            job.id,
            job.queue,
            run.attempt,
            seconds,
            self.after,
            outcome,
        )
        events = self.queue.events
        if events.active:
            events.publish(
                SlowJob(
                    at=self.queue.clock.now(),
                    job=job,
                    seconds=seconds,
                    threshold=self.after,
                    outcome=outcome,
                )
            )


class _Timer:
    __slots__ = ("_run", "_slow", "_start")

    def __init__(self, slow: SlowJobs, run: JobRun) -> None:
        self._slow = slow
        self._run = run
        self._start = 0.0

    def __enter__(self) -> None:
        self._start = self._slow.queue.clock.now()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._run.outcome == "deferred":
            return
        seconds = self._slow.queue.clock.now() - self._start
        if seconds >= self._slow.after:
            self._slow.report(self._run, seconds)
