"""Time, injected: the system clock in production, a fake one in tests.

Everything time-dependent in hyperqueue (delays, retries, leases, timeouts, drains) asks
a :class:`Clock`, so a test can move time forward instead of sleeping.
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

import anyio

__all__ = ["Clock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """Where hyperqueue gets the time and waits for it to pass."""

    def now(self) -> float:
        """Seconds since the epoch; stored in jobs, so shared between processes."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return after ``seconds`` have passed on this clock."""
        ...

    def cancel_after(self, seconds: float) -> anyio.CancelScope:
        """A cancel scope that this clock cancels once ``seconds`` have passed."""
        ...


class SystemClock:
    """Wall-clock time for timestamps; the event loop's clock for waiting."""

    __slots__ = ()

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(seconds, 0.0))

    def cancel_after(self, seconds: float) -> anyio.CancelScope:
        return anyio.CancelScope(deadline=anyio.current_time() + max(seconds, 0.0))

    def __repr__(self) -> str:
        return "SystemClock()"
