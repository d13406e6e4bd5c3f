"""A clock that only moves when a test moves it."""

from __future__ import annotations

import heapq

import anyio
import anyio.lowlevel

__all__ = ["FakeClock"]


class FakeClock:
    """Implements :class:`hyperqueue.abc.Clock`; time stands still until :meth:`advance`.

    ``advance`` steps through every timer that falls due in order, letting the tasks it
    wakes run (until all tasks are blocked again) before the next step, so a retry's
    backoff, a lease's expiry and a job's timeout happen exactly as they would in real
    time, only instantly.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = float(start)
        self._seq = 0
        self._timers: list[tuple[float, int, anyio.Event | anyio.CancelScope]] = []

    def now(self) -> float:
        return self._now

    def _schedule(self, deadline: float, timer: anyio.Event | anyio.CancelScope) -> None:
        self._seq += 1
        heapq.heappush(self._timers, (deadline, self._seq, timer))

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        event = anyio.Event()
        self._schedule(self._now + seconds, event)
        await event.wait()

    def cancel_after(self, seconds: float) -> anyio.CancelScope:
        scope = anyio.CancelScope()
        if seconds <= 0:
            scope.cancel()
        else:
            self._schedule(self._now + seconds, scope)
        return scope

    @property
    def next_deadline(self) -> float | None:
        """When the earliest pending timer falls due (``None`` when there is none)."""
        return self._timers[0][0] if self._timers else None

    async def advance(self, seconds: float = 0.0) -> None:
        """Move time forward by ``seconds``, firing due timers in order."""
        if seconds < 0:
            raise ValueError("time only moves forward")
        target = self._now + seconds
        await anyio.wait_all_tasks_blocked()
        while self._timers and self._timers[0][0] <= target:
            deadline = self._timers[0][0]
            self._now = max(self._now, deadline)
            while self._timers and self._timers[0][0] <= deadline:
                _, _, timer = heapq.heappop(self._timers)
                if isinstance(timer, anyio.Event):
                    timer.set()
                else:
                    timer.cancel()
            await anyio.wait_all_tasks_blocked()
        self._now = target
        await anyio.wait_all_tasks_blocked()

    async def advance_to(self, when: float) -> None:
        """Move time forward to ``when`` (seconds since the epoch)."""
        await self.advance(max(when - self._now, 0.0))

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now})"
