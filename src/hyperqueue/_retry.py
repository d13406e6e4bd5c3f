"""Retry policy: how many attempts, how long to wait between them, which errors qualify.

The waits come from tenacity's strategies (``wait_exponential`` plus ``wait_random``), so
the formula is the well-known one: before attempt ``n + 1`` the queue waits
``min(backoff * multiplier ** (n - 1), max_backoff) + uniform(0, jitter)`` seconds.
"""

from __future__ import annotations

import math

import tenacity

__all__ = ["Retry"]

ExceptionTypes = type[BaseException] | tuple[type[BaseException], ...]


class Retry:
    """A bounded retry policy, shared by the queue and usable on its own.

    ``attempts`` counts the first try: ``Retry(3)`` runs a job at most three times.
    Defaults: 3 attempts, first wait 1 s, doubling, at most 60 s, plus up to 1 s of jitter,
    on any ``Exception``.
    """

    __slots__ = ("_wait", "attempts", "backoff", "jitter", "max_backoff", "multiplier", "on")

    def __init__(
        self,
        attempts: int = 3,
        *,
        backoff: float = 1.0,
        multiplier: float = 2.0,
        max_backoff: float = 60.0,
        jitter: float = 1.0,
        on: ExceptionTypes = Exception,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1 (it counts the first try)")
        for name, value in (("backoff", backoff), ("max_backoff", max_backoff), ("jitter", jitter)):
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number of seconds >= 0")
        if not multiplier >= 1:
            raise ValueError("multiplier must be at least 1")
        self.attempts = attempts
        self.backoff = backoff
        self.multiplier = multiplier
        self.max_backoff = max_backoff
        self.jitter = jitter
        self.on = on
        self._wait: tenacity.wait.wait_base = tenacity.wait_exponential(
            multiplier=backoff, exp_base=multiplier, max=max_backoff
        ) + tenacity.wait_random(0, jitter)

    def retries(self, exc: BaseException) -> bool:
        """Whether ``exc`` is one this policy retries on."""
        return isinstance(exc, self.on)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        state = tenacity.RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
        state.attempt_number = attempt
        return float(self._wait(state))

    def __repr__(self) -> str:
        return (
            f"Retry({self.attempts}, backoff={self.backoff}, multiplier={self.multiplier}, "
            f"max_backoff={self.max_backoff}, jitter={self.jitter}, on={self.on!r})"
        )
