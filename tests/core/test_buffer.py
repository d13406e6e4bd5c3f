"""The metrics buffer: batching by size and age, retries with backoff, bounded loss, close."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from hyperqueue._buffer import BufferStats, MetricsBuffer
from hyperqueue._retry import Retry
from hyperqueue.testing import FakeClock

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def guard(seconds: float = 10.0) -> AsyncIterator[None]:
    """A real-time safety net so a broken test fails instead of hanging."""
    with anyio.fail_after(seconds):
        yield


class Sink:
    """Records each call; fails (or hangs) while told to."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.batches: list[list[int]] = []
        self.calls: list[tuple[float, list[int]]] = []
        self.failures = 0
        self.error: Exception = ConnectionError("sink down")
        self.hang = False
        self.gate: anyio.Event | None = None

    async def __call__(self, batch: list[int]) -> None:
        self.calls.append((self.clock.now(), list(batch)))
        if self.hang:
            await anyio.sleep_forever()
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise self.error
        self.batches.append(list(batch))


@pytest.fixture
def sink(clock: FakeClock) -> Sink:
    return Sink(clock)


NO_JITTER = Retry(5, backoff=1.0, multiplier=2.0, max_backoff=60.0, jitter=0.0)


def consistent(stats: BufferStats) -> bool:
    return stats.added == stats.flushed_points + stats.dropped_points + stats.pending_points


async def test_a_full_batch_is_sent_at_once(clock: FakeClock, sink: Sink) -> None:
    async with guard(), MetricsBuffer(sink, max_batch=3, interval=5.0, clock=clock) as buffer:
        for n in range(7):
            buffer.add(n)
        await anyio.wait_all_tasks_blocked()
        assert sink.batches == [[0, 1, 2], [3, 4, 5]]
        assert {at for at, _ in sink.calls} == {clock.now()}, "no time had to pass"
        stats = buffer.stats()
        assert (stats.added, stats.flushed_points, stats.flushed_batches) == (7, 6, 2)
        assert (stats.pending_points, stats.pending_batches) == (1, 1)


async def test_a_partial_batch_is_sent_when_its_first_point_is_interval_old(
    clock: FakeClock, sink: Sink
) -> None:
    async with guard(), MetricsBuffer(sink, max_batch=100, interval=5.0, clock=clock) as buffer:
        start = clock.now()
        buffer.add(1)
        await clock.advance(3.0)
        buffer.add(2)  # joins the batch; does not restart its interval
        await clock.advance(1.9)
        assert sink.calls == []
        await clock.advance(0.1)
        assert sink.calls == [(start + 5.0, [1, 2])]
        buffer.add(3)  # a new batch, a new interval
        await clock.advance(4.9)
        assert len(sink.calls) == 1
        await clock.advance(0.1)
        assert sink.calls[1] == (start + 10.0, [3])


async def test_an_idle_buffer_sets_no_timer(clock: FakeClock, sink: Sink) -> None:
    async with guard(), MetricsBuffer(sink, interval=5.0, clock=clock) as buffer:
        await anyio.wait_all_tasks_blocked()
        assert clock.next_deadline is None, "nothing to send: the flusher must not poll"
        buffer.add(1)
        await anyio.wait_all_tasks_blocked()
        assert clock.next_deadline == clock.now() + 5.0


async def test_a_failed_flush_is_retried_with_exponential_backoff(
    clock: FakeClock, sink: Sink
) -> None:
    sink.failures = 3
    async with guard(), MetricsBuffer(sink, max_batch=2, retry=NO_JITTER, clock=clock) as buffer:
        start = clock.now()
        buffer.add(1)
        buffer.add(2)
        await clock.advance(60.0)
        assert [at - start for at, _ in sink.calls] == [0.0, 1.0, 3.0, 7.0]
        assert sink.batches == [[1, 2]]
        stats = buffer.stats()
    assert (stats.failed_flushes, stats.retried, stats.flushed_batches) == (3, 3, 1)
    assert stats.dropped_batches == 0 and consistent(stats)


async def test_a_failed_batch_is_retried_before_newer_ones(clock: FakeClock, sink: Sink) -> None:
    sink.failures = 1
    async with guard(), MetricsBuffer(sink, max_batch=1, retry=NO_JITTER, clock=clock) as buffer:
        for n in (1, 2, 3):
            buffer.add(n)  # three batches queued before the first try
        await anyio.wait_all_tasks_blocked()  # the first try failed; backing off 1 s
        buffer.add(4)
        await anyio.wait_all_tasks_blocked()
        assert sink.batches == []
        await clock.advance(1.0)
        assert sink.batches == [[1], [2], [3], [4]]


async def test_when_batches_pile_up_the_oldest_is_dropped(clock: FakeClock, sink: Sink) -> None:
    sink.failures = 1_000
    patient = Retry(100, backoff=10.0, multiplier=1.0, jitter=0.0)
    buffer = MetricsBuffer(sink, max_batch=2, max_pending_batches=2, retry=patient, clock=clock)
    async with guard(), buffer:
        for n in range(2):
            buffer.add(n)  # batch [0, 1] fails and waits 10 s to be tried again
        await anyio.wait_all_tasks_blocked()
        for n in range(2, 8):
            buffer.add(n)  # [2, 3], [4, 5] and [6, 7] push out [0, 1] and [2, 3]
        stats = buffer.stats()
        assert (stats.dropped_batches, stats.dropped_points) == (2, 4)
        assert (stats.pending_batches, stats.pending_points) == (2, 4)
        sink.failures = 0
        await clock.advance(10.0)
        assert sink.batches == [[4, 5], [6, 7]]
        assert consistent(buffer.stats())


async def test_a_batch_that_fails_after_newer_ones_filled_the_queue_is_the_one_dropped(
    clock: FakeClock, sink: Sink
) -> None:
    sink.failures = 1
    sink.gate = anyio.Event()
    buffer = MetricsBuffer(sink, max_batch=1, max_pending_batches=2, retry=NO_JITTER, clock=clock)
    async with guard(), buffer:
        buffer.add(1)
        await anyio.wait_all_tasks_blocked()  # [1] is with the sink
        buffer.add(2)
        buffer.add(3)
        sink.gate.set()  # [1] fails; [2] and [3] fill the queue, so [1] goes
        await anyio.wait_all_tasks_blocked()
        stats = buffer.stats()
        assert (stats.dropped_batches, stats.dropped_points, stats.pending_batches) == (1, 1, 2)
        await clock.advance(1.0)
        assert sink.batches == [[2], [3]]


async def test_a_batch_that_keeps_failing_is_given_up_after_the_retry_attempts(
    clock: FakeClock, sink: Sink
) -> None:
    sink.failures = 3
    retry = Retry(3, backoff=1.0, multiplier=2.0, jitter=0.0)
    async with guard(), MetricsBuffer(sink, max_batch=1, retry=retry, clock=clock) as buffer:
        buffer.add(1)
        await clock.advance(10.0)
        assert len(sink.calls) == 3 and sink.batches == []
        buffer.add(2)  # the sink works again: newer points still get through
        await anyio.wait_all_tasks_blocked()
        assert sink.batches == [[2]]
        stats = buffer.stats()
    assert (stats.dropped_batches, stats.failed_flushes, stats.retried) == (1, 3, 2)


async def test_an_error_the_policy_does_not_retry_drops_the_batch_at_once(
    clock: FakeClock, sink: Sink
) -> None:
    sink.failures = 1
    sink.error = ValueError("rejected")
    retry = Retry(5, on=ConnectionError, jitter=0.0)
    async with guard(), MetricsBuffer(sink, max_batch=1, retry=retry, clock=clock) as buffer:
        buffer.add(1)
        buffer.add(2)
        await anyio.wait_all_tasks_blocked()
        assert [batch for _, batch in sink.calls] == [[1], [2]]
        stats = buffer.stats()
    assert (stats.dropped_batches, stats.retried, stats.flushed_batches) == (1, 0, 1)


async def test_a_sink_call_that_hangs_times_out_and_is_retried(
    clock: FakeClock, sink: Sink
) -> None:
    sink.hang = True
    buffer = MetricsBuffer(sink, max_batch=1, flush_timeout=3.0, retry=NO_JITTER, clock=clock)
    async with guard(), buffer:
        buffer.add(1)
        await clock.advance(2.9)
        assert buffer.stats().failed_flushes == 0
        sink.hang = False
        await clock.advance(0.1)  # timed out; tried again 1 s later
        assert buffer.stats().failed_flushes == 1
        await clock.advance(1.0)
        assert sink.batches == [[1]]
        assert [at for at, _ in sink.calls] == [clock.now() - 4.0, clock.now()]


async def test_leaving_the_block_sends_what_is_left(clock: FakeClock, sink: Sink) -> None:
    async with guard():
        async with MetricsBuffer(sink, max_batch=10, interval=60.0, clock=clock) as buffer:
            for n in range(13):
                buffer.add(n)
        assert sink.batches == [list(range(10)), [10, 11, 12]]
        stats = buffer.stats()
        assert (stats.flushed_points, stats.pending_points, stats.pending_batches) == (13, 0, 0)


async def test_closing_retries_a_failing_sink_until_the_deadline(
    clock: FakeClock, sink: Sink
) -> None:
    sink.failures = 2
    buffer = MetricsBuffer(sink, retry=NO_JITTER, close_timeout=5.0, clock=clock)
    closed = anyio.Event()

    async def run() -> None:
        async with buffer:
            buffer.add(1)
        closed.set()

    async with guard(), anyio.create_task_group() as tg:
        tg.start_soon(run)
        await clock.advance(3.0)  # tries at +0, +1 and +3
        await closed.wait()
    assert sink.batches == [[1]]


async def test_a_sink_that_hangs_cannot_hold_up_closing(clock: FakeClock, sink: Sink) -> None:
    sink.hang = True
    buffer = MetricsBuffer(sink, max_batch=2, close_timeout=2.0, clock=clock)
    closed = anyio.Event()

    async def run() -> None:
        async with buffer:
            for n in range(5):
                buffer.add(n)
        closed.set()

    async with guard(), anyio.create_task_group() as tg:
        tg.start_soon(run)
        await clock.advance(1.9)
        assert not closed.is_set()
        await clock.advance(0.1)
        await closed.wait()
    stats = buffer.stats()
    assert (stats.flushed_points, stats.pending_points, stats.pending_batches) == (0, 5, 3)
    assert consistent(stats)


async def test_a_cancelled_host_still_gets_its_points_sent(clock: FakeClock, sink: Sink) -> None:
    async with guard():
        with anyio.CancelScope() as scope:
            async with MetricsBuffer(sink, clock=clock) as buffer:
                buffer.add(1)
                buffer.add(2)
                scope.cancel()
                await anyio.sleep_forever()
        assert scope.cancelled_caught
    assert sink.batches == [[1, 2]]


async def test_add_from_many_tasks_loses_and_repeats_nothing(clock: FakeClock) -> None:
    received: list[tuple[int, int]] = []

    async def sink(batch: list[tuple[int, int]]) -> None:
        await anyio.lowlevel.checkpoint()
        received.extend(batch)

    async def producer(buffer: MetricsBuffer[tuple[int, int]], task: int) -> None:
        for n in range(100):
            buffer.add((task, n))
            if n % 7 == 0:
                await anyio.lowlevel.checkpoint()

    buffer = MetricsBuffer(sink, max_batch=13, max_pending_batches=1000, clock=clock)
    async with guard(), buffer, anyio.create_task_group() as tg:
        for task in range(20):
            tg.start_soon(producer, buffer, task)
    assert sorted(received) == [(t, n) for t in range(20) for n in range(100)]
    for task in range(20):
        assert [n for t, n in received if t == task] == list(range(100))
    stats = buffer.stats()
    assert stats.added == stats.flushed_points == 2000


async def test_points_added_before_the_block_are_sent_once_it_runs(
    clock: FakeClock, sink: Sink
) -> None:
    buffer = MetricsBuffer(sink, max_batch=2, clock=clock)
    for n in range(3):
        buffer.add(n)
    assert buffer.stats().pending_points == 3
    async with guard(), buffer:
        await anyio.wait_all_tasks_blocked()
        assert sink.batches == [[0, 1]]
    assert sink.batches == [[0, 1], [2]]


async def test_a_buffer_runs_once_at_a_time(clock: FakeClock, sink: Sink) -> None:
    buffer = MetricsBuffer(sink, clock=clock)
    async with guard(), buffer:
        with pytest.raises(RuntimeError, match="already running"):
            await buffer.__aenter__()


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("max_batch", 0),
        ("max_pending_batches", 0),
        ("interval", 0.0),
        ("interval", float("inf")),
        ("flush_timeout", 0.0),
        ("close_timeout", -1.0),
    ],
)
def test_options_are_checked(option: str, value: Any) -> None:
    async def sink(batch: list[int]) -> None:
        pass

    with pytest.raises(ValueError, match=option):
        MetricsBuffer(sink, **{option: value})
