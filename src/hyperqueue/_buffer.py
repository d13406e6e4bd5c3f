"""Batch metric points and hand them to an async sink, surviving a sink that fails.

Code that records metrics sits on hot paths (every job, every request), so recording
must be a list append: :meth:`MetricsBuffer.add` never awaits and never raises because
of the sink. A flusher task sends full batches at once and partial ones when they are
old enough; it waits for either, it does not poll. A sink that fails gets its batch
again with exponential backoff; meanwhile new batches queue behind it in a bounded
queue that drops the oldest, because under a long outage the newest figures are the
ones worth keeping and memory must stay bounded.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Generic, TypeVar

import anyio
import msgspec
from anyio.abc import TaskGroup, TaskStatus

from ._clock import Clock, SystemClock
from ._retry import Retry

__all__ = ["BufferStats", "MetricsBuffer"]

_logger = logging.getLogger("hyperqueue.buffer")

T = TypeVar("T")


class BufferStats(msgspec.Struct, frozen=True, kw_only=True):
    """Figures of a :class:`MetricsBuffer`.

    ``added`` = ``flushed_points`` + ``dropped_points`` + ``pending_points`` at any time.
    ``failed_flushes`` counts sink calls that raised or timed out, ``retried`` the sink
    calls that repeated a failed batch. ``pending_*`` is what is not delivered yet (the
    partial batch being filled counts as a batch): after the buffer closed, it is what
    could not be delivered before ``close_timeout``.
    """

    added: int
    flushed_points: int
    flushed_batches: int
    failed_flushes: int
    retried: int
    dropped_points: int
    dropped_batches: int
    pending_points: int
    pending_batches: int


class _Batch(Generic[T]):
    __slots__ = ("attempts", "points")

    def __init__(self, points: list[T]) -> None:
        self.points = points
        self.attempts = 0


_DEFAULT_RETRY = Retry(5, backoff=1.0, multiplier=2.0, max_backoff=30.0, jitter=1.0)


def _seconds(name: str, value: float, *, zero: bool) -> float:
    if not (math.isfinite(value) and (value >= 0 if zero else value > 0)):
        raise ValueError(f"{name} must be a finite number of seconds {'>=' if zero else '>'} 0")
    return float(value)


def _count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, not {value!r}")
    return value


class MetricsBuffer(Generic[T]):
    """Collect points with :meth:`add`; ``async with`` runs the flusher that batches them
    to ``sink`` (``async def sink(batch: list[T]) -> None``).

    A batch goes to the sink when it holds ``max_batch`` points (default 500) or when
    ``interval`` seconds (default 5) have passed since its first point, on ``clock``.
    Batches go one at a time, oldest first. A sink call that raises, or takes longer
    than ``flush_timeout`` (default 30 s), is repeated after ``retry.delay(attempt)``
    seconds; a batch is given up (dropped and counted) after ``retry.attempts`` tries or
    on an exception ``retry`` does not retry on. The default retry makes 5 tries, waiting
    ``min(2 ** (n - 1), 30) + uniform(0, 1)`` seconds after try ``n``. At most
    ``max_pending_batches`` (default 100) batches wait, plus the one being sent; a new
    batch beyond that pushes out the oldest, which is dropped and counted.

    Leaving the block seals the last partial batch and keeps sending for at most
    ``close_timeout`` seconds (default 10), even when the host was cancelled; what is
    left is reported as pending in :meth:`stats`. The sink must not modify the list it
    gets: the same list is sent again on a retry.
    """

    def __init__(
        self,
        sink: Callable[[list[T]], Awaitable[None]],
        *,
        max_batch: int = 500,
        interval: float = 5.0,
        max_pending_batches: int = 100,
        retry: Retry | None = None,
        flush_timeout: float = 30.0,
        close_timeout: float = 10.0,
        clock: Clock | None = None,
    ) -> None:
        self._sink = sink
        self._max_batch = _count("max_batch", max_batch)
        self._interval = _seconds("interval", interval, zero=False)
        self._max_pending = _count("max_pending_batches", max_pending_batches)
        self._retry = retry if retry is not None else _DEFAULT_RETRY
        self._flush_timeout = _seconds("flush_timeout", flush_timeout, zero=False)
        self._close_timeout = _seconds("close_timeout", close_timeout, zero=True)
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._batch: list[T] = []
        self._due = 0.0
        self._queue: deque[_Batch[T]] = deque()
        self._inflight: _Batch[T] | None = None
        self._wake: anyio.Event | None = None
        self._tg: TaskGroup | None = None
        self._scope: anyio.CancelScope | None = None
        self._stopped: anyio.Event | None = None
        self._closing = False
        self._sealed = 0
        self._flushed_points = 0
        self._flushed_batches = 0
        self._failed = 0
        self._retried = 0
        self._dropped_points = 0
        self._dropped_batches = 0

    # -- the producer's side -------------------------------------------------------

    def add(self, point: T) -> None:
        """Buffer one point; never awaits, never raises because of the sink."""
        batch = self._batch
        batch.append(point)
        size = len(batch)
        if size == 1:  # a new batch: its interval starts now
            self._due = self._clock.now() + self._interval
            if self._wake is not None:
                self._wake.set()
        if size >= self._max_batch:
            self._seal()

    def _seal(self) -> None:
        points = self._batch
        if not points:
            return
        self._batch = []
        self._sealed += len(points)
        if len(self._queue) >= self._max_pending:
            self._drop(self._queue.popleft(), "the queue of waiting batches is full")
        self._queue.append(_Batch(points))
        if self._wake is not None:
            self._wake.set()

    def _drop(self, batch: _Batch[T], why: str) -> None:
        self._dropped_points += len(batch.points)
        self._dropped_batches += 1
        _logger.warning("dropped a batch of %d metric points: %s", len(batch.points), why)

    def stats(self) -> BufferStats:
        """A snapshot of the buffer's figures."""
        waiting = list(self._queue)
        if self._inflight is not None:
            waiting.append(self._inflight)
        pending_points = len(self._batch) + sum(len(b.points) for b in waiting)
        return BufferStats(
            added=self._sealed + len(self._batch),
            flushed_points=self._flushed_points,
            flushed_batches=self._flushed_batches,
            failed_flushes=self._failed,
            retried=self._retried,
            dropped_points=self._dropped_points,
            dropped_batches=self._dropped_batches,
            pending_points=pending_points,
            pending_batches=len(waiting) + (1 if self._batch else 0),
        )

    # -- the flusher ---------------------------------------------------------------

    async def _run(self, *, task_status: TaskStatus[None]) -> None:
        # Shielded so that leaving the block still delivers what is buffered when the
        # host is cancelled; __aexit__ cancels ``self._scope`` at the close deadline.
        stopped = self._stopped
        assert stopped is not None
        try:
            with anyio.CancelScope(shield=True) as self._scope:
                task_status.started()
                await self._loop()
        finally:
            stopped.set()

    async def _loop(self) -> None:
        clock = self._clock
        while True:
            if self._queue:
                await self._flush_oldest()
            elif self._batch and (self._closing or clock.now() >= self._due):
                self._seal()
            elif self._closing:
                return
            else:
                self._wake = wake = anyio.Event()
                try:
                    if self._batch:
                        with clock.cancel_after(self._due - clock.now()):
                            await wake.wait()
                    else:
                        await wake.wait()
                finally:
                    self._wake = None

    async def _flush_oldest(self) -> None:
        batch = self._inflight = self._queue.popleft()
        if batch.attempts:
            self._retried += 1
        error: Exception | None = None
        try:
            with self._clock.cancel_after(self._flush_timeout) as scope:
                await self._sink(batch.points)
            if scope.cancelled_caught:
                error = TimeoutError(f"the sink took longer than {self._flush_timeout} s")
        except Exception as exc:  # the sink's failure is data: retry or drop
            error = exc
        except BaseException:  # cancelled at the close deadline: not delivered
            self._queue.appendleft(batch)
            raise
        finally:
            self._inflight = None
        if error is None:
            self._flushed_points += len(batch.points)
            self._flushed_batches += 1
            return
        self._failed += 1
        batch.attempts += 1
        retry = self._retry
        if batch.attempts >= retry.attempts or not retry.retries(error):
            self._drop(batch, f"the sink failed {batch.attempts} time(s): {error!r}")
            return
        delay = retry.delay(batch.attempts)
        _logger.warning(
            "metrics sink failed on a batch of %d points (try %d of %d); retrying in %.3f s",
            len(batch.points),
            batch.attempts,
            retry.attempts,
            delay,
            exc_info=error,
        )
        if len(self._queue) >= self._max_pending:
            # Newer batches filled the queue during the try: this one is the oldest.
            self._drop(batch, "the queue of waiting batches is full")
        else:
            self._queue.appendleft(batch)
        await self._clock.sleep(delay)

    # -- lifecycle -----------------------------------------------------------------

    async def __aenter__(self) -> MetricsBuffer[T]:
        if self._tg is not None:
            raise RuntimeError("this MetricsBuffer is already running")
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        self._closing = False
        self._stopped = anyio.Event()
        try:
            await tg.start(self._run)
        except BaseException as exc:
            self._tg = None
            await tg.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        tg, stopped = self._tg, self._stopped
        assert tg is not None and stopped is not None, "__aexit__ without __aenter__"
        self._closing = True
        try:
            self._seal()
            if self._wake is not None:
                self._wake.set()
            with (
                anyio.CancelScope(shield=True),
                self._clock.cancel_after(self._close_timeout),
            ):
                await stopped.wait()
        finally:
            if self._scope is not None:
                self._scope.cancel()
            try:
                swallowed = await tg.__aexit__(exc_type, exc, tb)
            finally:
                self._tg = None
                self._scope = None
        pending = self.stats().pending_points
        if pending:
            _logger.warning(
                "closed with %d metric points undelivered after %s s",
                pending,
                self._close_timeout,
            )
        return swallowed
