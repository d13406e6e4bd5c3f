"""How many jobs a worker pool claims beyond its free runners when it is left to decide.

A claim is one round trip to the storage (a transaction on SQLite and PostgreSQL), so a
pool that claims only for its free runners pays that trip for every job or two when jobs
are short. Claiming more costs something too: a claimed job counts as running, and while
it waits in the pool's buffer no idle runner elsewhere, in this process or another, can
take it.

So the pool claims as many extra jobs as it starts within :data:`HOLD_TARGET`, learnt
from two measures (:class:`AdaptivePrefetch`):

- an upper bound from the time a runner spends per job (a moving average ``d``): ``c``
  runners cannot start more than ``c / d`` jobs a second, so jobs of a few milliseconds
  or more get no extra claim at all;
- the truth, from each batch: how long the pool took to start every job of its last
  claim. Within the target, the next claim may take twice as many extra jobs (up to the
  bound and ``9 * concurrency``, ``19 * concurrency`` on the memory storage); over it,
  the extra shrinks in proportion. Runners share one thread, so jobs that never wait on
  I/O start one after another, not ``c`` at a time, and only this measure sees it.

An estimate can still be wrong when jobs change (a burst of slow ones after fast ones),
so the worker keeps a hard bound as well: jobs of a claim still waiting in the buffer
:data:`HOLD_LIMIT` after it are handed back to the storage as pending, without spending
an attempt, and the extra claim shrinks in proportion.
"""

from __future__ import annotations

__all__ = [
    "CAP_PER_RUNNER",
    "HOLD_LIMIT",
    "HOLD_TARGET",
    "MEMORY_CAP_PER_RUNNER",
    "AdaptivePrefetch",
]

HOLD_TARGET = 0.005
"""Seconds in which a pool should start every job of an adaptive claim."""

HOLD_LIMIT = 0.010
"""Seconds after which jobs of an adaptive claim still waiting go back to the storage."""

_WEIGHT = 0.2  # of the newest duration in the moving average: a few jobs move it
_FORGET = 200 * _WEIGHT  # after 200 jobs alike the older mean weighs under 1e-19
CAP_PER_RUNNER = 9
"""Extra jobs per runner at most (concurrency 10: 90 extra)."""

MEMORY_CAP_PER_RUNNER = 19
"""The cap on the memory storage, where a claim is no round trip but still costs the
pool a few wake-ups (runners, the flusher): claims of 200 jobs instead of 100 at
concurrency 10 halve that share of a short job's time. A job is still never held
past :data:`HOLD_LIMIT`, and the only other claimers are pools in this process."""


class AdaptivePrefetch:
    """The extra claim size: grown while batches start in time, cut when they do not,
    never above what the runners' time per job allows."""

    __slots__ = ("_cap", "_concurrency", "_extra", "_mean")

    def __init__(self, concurrency: int, *, cap_per_runner: int = CAP_PER_RUNNER) -> None:
        self._concurrency = concurrency
        self._cap = cap_per_runner * concurrency
        self._mean: float | None = None  # nothing is known until a job has run
        self._extra = concurrency  # the first guess, once a job has run

    def record(self, seconds: float, jobs: int = 1) -> None:
        """A runner spent ``seconds`` on each of ``jobs`` jobs in a row (running it and
        storing its outcome): as ``jobs`` calls for one job each, in one."""
        mean = self._mean
        if mean is None or jobs * _WEIGHT >= _FORGET:
            self._mean = seconds
        elif jobs == 1:
            self._mean = mean + _WEIGHT * (seconds - mean)
        else:
            self._mean = seconds + (1 - _WEIGHT) ** jobs * (mean - seconds)

    def batch_started(self, seconds: float) -> None:
        """The pool started the last job of its latest claim ``seconds`` after the claim."""
        if seconds <= HOLD_TARGET:
            self._extra = min(self._cap, max(1, 2 * self._extra))
        else:
            self._extra = int(self._extra * HOLD_TARGET / seconds)

    def held_too_long(self) -> None:
        """Jobs of a claim still waited :data:`HOLD_LIMIT` after it (and went back)."""
        self._extra = int(self._extra * HOLD_TARGET / HOLD_LIMIT)

    @property
    def extra(self) -> int:
        """Jobs to claim beyond the free runners now."""
        mean = self._mean
        if mean is None:
            return 0
        if mean <= 0:  # a fake clock that did not move, or jobs too short to measure
            return self._extra
        return min(self._extra, int(self._concurrency * HOLD_TARGET / mean))
