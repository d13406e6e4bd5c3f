"""How many jobs a worker pool claims beyond its free runners when it is left to decide.

A claim is one round trip to the storage (a transaction on SQLite and PostgreSQL), so a
pool that claims only for its free runners pays that trip for every job or two when jobs
are short. Claiming more costs something too: a claimed job counts as running, and while
it waits in the pool's buffer no idle runner elsewhere, in this process or another, can
take it.

The pool therefore sizes the extra claim by what it can start soon: ``concurrency``
runners that spend ``d`` seconds per job start ``concurrency / d`` jobs a second, so
``k`` extra jobs wait about ``k * d / concurrency``. :class:`AdaptivePrefetch` keeps
``d`` as a moving average of what runners really spend per job and claims the ``k``
that start within :data:`HOLD_TARGET`; short jobs get large claims (up to ``9 *
concurrency``), jobs of a few milliseconds or more get none.

An average can be wrong when jobs change (a burst of slow ones after fast ones), so the
worker also keeps a bound: jobs of a claim still waiting in the buffer
:data:`HOLD_LIMIT` after the claim are handed back to the storage as pending, without
spending an attempt, and the estimate is reset to "no extra" until runners report
shorter jobs again.
"""

from __future__ import annotations

__all__ = ["HOLD_LIMIT", "HOLD_TARGET", "AdaptivePrefetch"]

HOLD_TARGET = 0.005
"""Seconds that the last job of an adaptive claim should wait before a runner starts it."""

HOLD_LIMIT = 0.010
"""Seconds after which jobs of an adaptive claim still waiting go back to the storage."""

_WEIGHT = 0.2  # of the newest duration in the moving average: a few jobs move it
_CAP_PER_RUNNER = 9  # extra jobs per runner at most (concurrency 10 -> 90 extra)


class AdaptivePrefetch:
    """The extra claim size from a moving average of the time a runner spends per job."""

    __slots__ = ("_cap", "_concurrency", "_mean")

    def __init__(self, concurrency: int) -> None:
        self._concurrency = concurrency
        self._cap = _CAP_PER_RUNNER * concurrency
        self._mean: float | None = None  # nothing is known until a job has run

    def record(self, seconds: float) -> None:
        """A runner spent ``seconds`` on one job (running it and storing its outcome)."""
        mean = self._mean
        self._mean = seconds if mean is None else mean + _WEIGHT * (seconds - mean)

    def held_too_long(self) -> None:
        """Jobs waited past :data:`HOLD_LIMIT`: claim no extra until shorter jobs are seen."""
        self._mean = 2 * self._concurrency * HOLD_TARGET

    @property
    def extra(self) -> int:
        """Jobs to claim beyond the free runners now."""
        mean = self._mean
        if mean is None:
            return 0
        if mean <= 0:  # a fake clock that did not move, or jobs too short to measure
            return self._cap
        return min(self._cap, int(self._concurrency * HOLD_TARGET / mean))
