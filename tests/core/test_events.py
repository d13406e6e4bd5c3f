"""The event bus: inline, async and stream subscribers, matching, history and resume."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

import hyperqueue as hq
from hyperqueue._events import (
    Event,
    EventBus,
    JobCompleted,
    JobEnqueued,
    JobEvent,
    JobFailed,
    JobStarted,
)
from hyperqueue.testing import FakeClock

pytestmark = pytest.mark.anyio


class WorkerStopped(Event, frozen=True, kw_only=True, tag="worker.stopped"):
    name: str


JOB = hq.Job(id="j1", task="t")


def completed(n: int = 0) -> JobCompleted:
    return JobCompleted(at=float(n), job=JOB)


@asynccontextmanager
async def guard(seconds: float = 10.0) -> AsyncIterator[None]:
    """A real-time safety net so a broken test fails instead of hanging."""
    with anyio.fail_after(seconds):
        yield


# -- inline handlers ---------------------------------------------------------------


async def test_handlers_see_events_in_order_with_increasing_ids() -> None:
    bus = EventBus()
    seen: list[float] = []
    bus.subscribe(lambda e: seen.append(e.at))
    ids = [bus.publish(completed(n)) for n in range(5)]
    assert ids == [1, 2, 3, 4, 5]
    assert seen == [0.0, 1.0, 2.0, 3.0, 4.0]


async def test_active_tells_publishers_whether_anyone_listens() -> None:
    bus = EventBus()
    assert bus.active is False
    unsubscribe = bus.subscribe(lambda e: None)
    assert bus.active is True
    unsubscribe()
    assert bus.active is False
    async with bus.stream():
        assert bus.active is True
    assert bus.active is False
    assert EventBus(history=10).active is True


async def test_a_failing_handler_is_logged_and_breaks_nobody(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = EventBus()
    seen: list[int] = []

    def broken(event: Event) -> None:
        raise RuntimeError("subscriber bug")

    bus.subscribe(broken, name="broken")
    bus.subscribe(lambda e: seen.append(1))
    with caplog.at_level(logging.ERROR, logger="hyperqueue.events"):
        assert bus.publish(completed()) == 1
        assert bus.publish(completed()) == 2
    assert seen == [1, 1]
    assert "broken" in caplog.text and "subscriber bug" in caplog.text
    (figures,) = [s for s in bus.stats().subscribers if s.name == "broken"]
    assert (figures.delivered, figures.failed) == (2, 2)


async def test_a_type_matches_its_subclasses_only() -> None:
    bus = EventBus()
    jobs: list[Event] = []
    failed: list[Event] = []
    bus.subscribe(jobs.append, JobEvent)
    bus.subscribe(failed.append, JobFailed)
    events = [
        JobEnqueued(at=0, job=JOB),
        JobFailed(at=1, job=JOB),
        WorkerStopped(at=2, name="w"),
        JobCompleted(at=3, job=JOB),
    ]
    for event in events:
        bus.publish(event)
    assert jobs == [events[0], events[1], events[3]]
    assert failed == [events[1]]


async def test_no_selector_is_a_wildcard() -> None:
    bus = EventBus()
    seen: list[Event] = []
    bus.subscribe(seen.append)
    events = [JobStarted(at=0, job=JOB), WorkerStopped(at=1, name="w")]
    for event in events:
        bus.publish(event)
    assert seen == events


async def test_tag_patterns_match_the_event_type_tag() -> None:
    bus = EventBus()
    jobs: list[str] = []
    failures: list[str] = []
    mixed: list[str] = []
    bus.subscribe(lambda e: jobs.append(type(e).__name__), "job.*")
    bus.subscribe(lambda e: failures.append(type(e).__name__), "job.fail*")
    bus.subscribe(lambda e: mixed.append(type(e).__name__), JobCompleted, "worker.*")
    for event in (
        JobEnqueued(at=0, job=JOB),
        JobFailed(at=0, job=JOB),
        WorkerStopped(at=0, name="w"),
        JobCompleted(at=0, job=JOB),
    ):
        bus.publish(event)
    assert jobs == ["JobEnqueued", "JobFailed", "JobCompleted"]
    assert failures == ["JobFailed"]
    assert mixed == ["WorkerStopped", "JobCompleted"]


async def test_a_subscription_added_later_sees_later_events_of_a_known_class() -> None:
    bus = EventBus()
    first: list[int] = []
    bus.subscribe(lambda e: first.append(1), JobCompleted)
    bus.publish(completed())  # the class's subscribers are now cached
    second: list[int] = []
    bus.subscribe(lambda e: second.append(1), "job.completed")
    bus.publish(completed())
    assert (first, second) == ([1, 1], [1])


async def test_selectors_are_checked() -> None:
    bus = EventBus()
    not_a_selector: Any
    for not_a_selector in (int, completed(), 3):
        with pytest.raises(TypeError, match="tag patterns"):
            bus.subscribe(lambda e: None, not_a_selector)
    with pytest.raises(ValueError, match="buffer"):
        bus.subscribe_async(_noop, buffer=0)
    with pytest.raises(ValueError, match="history"):
        EventBus(history=-1)


async def _noop(event: Event) -> None:
    pass


async def test_unsubscribed_handlers_hear_nothing_more() -> None:
    bus = EventBus()
    seen: list[int] = []
    unsubscribe = bus.subscribe(lambda e: seen.append(1))
    bus.publish(completed())
    unsubscribe()
    unsubscribe()  # twice is harmless
    bus.publish(completed())
    assert seen == [1]


async def test_a_handler_may_unsubscribe_while_events_are_delivered() -> None:
    bus = EventBus()
    seen: list[str] = []

    def once(event: Event) -> None:
        seen.append("once")
        unsubscribe()

    unsubscribe = bus.subscribe(once)
    bus.subscribe(lambda e: seen.append("other"))
    bus.publish(completed())
    bus.publish(completed())
    assert seen == ["once", "other", "other"]


# -- async handlers ----------------------------------------------------------------


async def test_async_handlers_receive_every_event_in_order() -> None:
    bus = EventBus()
    seen: list[float] = []

    async def record(event: JobCompleted) -> None:
        await anyio.lowlevel.checkpoint()
        seen.append(event.at)

    async with guard(), bus:
        bus.subscribe_async(record, JobCompleted)
        for n in range(50):
            bus.publish(completed(n))
        bus.publish(WorkerStopped(at=0, name="w"))
        await anyio.wait_all_tasks_blocked()
        assert seen == [float(n) for n in range(50)]


async def test_a_slow_async_handler_drops_its_own_overflow_and_delays_nobody() -> None:
    bus = EventBus()
    release = anyio.Event()
    slow: list[float] = []
    fast: list[float] = []

    async def stuck(event: JobCompleted) -> None:
        await release.wait()
        slow.append(event.at)

    async def quick(event: JobCompleted) -> None:
        fast.append(event.at)

    async with guard(), bus:
        bus.subscribe_async(stuck, buffer=2, name="slow")
        bus.subscribe_async(quick, buffer=100, name="fast")
        bus.publish(completed(0))
        await anyio.wait_all_tasks_blocked()  # the slow handler holds event 0
        for n in range(1, 10):
            bus.publish(completed(n))  # 1 and 2 wait in its buffer, 3..9 are dropped
        await anyio.wait_all_tasks_blocked()
        assert fast == [float(n) for n in range(10)]
        assert slow == []
        figures = {s.name: s for s in bus.stats().subscribers}
        assert (figures["slow"].dropped, figures["slow"].pending) == (7, 2)
        assert (figures["fast"].dropped, figures["fast"].delivered) == (0, 10)
        assert bus.dropped == 7
        release.set()
        await anyio.wait_all_tasks_blocked()
        assert slow == [0.0, 1.0, 2.0]
        bus.publish(completed(10))  # room again: it hears new events
        await anyio.wait_all_tasks_blocked()
        assert slow == [0.0, 1.0, 2.0, 10.0]


async def test_a_failing_async_handler_is_logged_and_keeps_receiving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = EventBus()
    calls: list[float] = []
    other: list[float] = []

    async def flaky(event: JobCompleted) -> None:
        calls.append(event.at)
        raise ValueError(f"cannot handle {event.at}")

    async def fine(event: JobCompleted) -> None:
        other.append(event.at)

    with caplog.at_level(logging.ERROR, logger="hyperqueue.events"):
        async with guard(), bus:
            bus.subscribe_async(flaky, name="flaky")
            bus.subscribe_async(fine)
            for n in range(3):
                bus.publish(completed(n))
            await anyio.wait_all_tasks_blocked()
            (figures,) = [s for s in bus.stats().subscribers if s.name == "flaky"]
    assert calls == other == [0.0, 1.0, 2.0]
    assert (figures.delivered, figures.failed) == (3, 3)
    logged = [r.getMessage() for r in caplog.records if r.exc_info]
    assert logged == [
        f"async event handler 'flaky' failed on event {n} (job.completed)" for n in (1, 2, 3)
    ]


async def test_events_published_before_the_bus_runs_wait_in_the_buffer() -> None:
    bus = EventBus()
    seen: list[float] = []

    async def record(event: JobCompleted) -> None:
        seen.append(event.at)

    bus.subscribe_async(record, buffer=3)
    for n in range(5):
        bus.publish(completed(n))
    assert seen == []
    async with guard(), bus:
        await anyio.wait_all_tasks_blocked()
        assert seen == [0.0, 1.0, 2.0]
    assert bus.stats().dropped == 2


async def test_unsubscribing_an_async_handler_discards_what_it_had_not_handled() -> None:
    bus = EventBus()
    release = anyio.Event()
    seen: list[float] = []

    async def record(event: JobCompleted) -> None:
        await release.wait()
        seen.append(event.at)

    async with guard(), bus:
        unsubscribe = bus.subscribe_async(record)
        for n in range(3):
            bus.publish(completed(n))
        await anyio.wait_all_tasks_blocked()
        unsubscribe()
        assert bus.active is False
        release.set()
        await anyio.wait_all_tasks_blocked()
        bus.publish(completed(3))
        await anyio.wait_all_tasks_blocked()
    assert seen == [0.0]  # the one in hand finishes; the rest are not delivered


async def test_a_handler_that_never_awaits_lets_the_others_run() -> None:
    bus = EventBus()
    log: list[str] = []

    async def greedy(event: JobCompleted) -> None:
        log.append("greedy")

    async def other(event: JobCompleted) -> None:
        log.append("other")

    async with guard(), bus:
        bus.subscribe_async(greedy)
        bus.subscribe_async(other)
        for n in range(200):
            bus.publish(completed(n))
        await anyio.wait_all_tasks_blocked()
    assert log.count("greedy") == log.count("other") == 200
    # Each yields after 32 events instead of emptying its whole buffer first; a scheduler
    # may run the same task last in one round and first in the next (trio shuffles).
    runs = "".join("g" if name == "greedy" else "o" for name in log)
    assert "g" * 65 not in runs and "o" * 65 not in runs


async def test_leaving_the_bus_lets_async_handlers_finish_their_buffers(
    clock: FakeClock,
) -> None:
    bus = EventBus(clock=clock)  # time stands still: leaving must not wait for a deadline
    seen: list[float] = []

    async def record(event: JobCompleted) -> None:
        await anyio.lowlevel.checkpoint()
        seen.append(event.at)

    async with guard():
        async with bus:
            bus.subscribe_async(record)
            for n in range(20):
                bus.publish(completed(n))
        assert seen == [float(n) for n in range(20)]
        # The subscription ended with the block.
        assert bus.active is False
        assert bus.stats().delivered == 20


async def test_a_cancelled_host_still_hands_over_the_buffered_events() -> None:
    bus = EventBus()
    seen: list[float] = []

    async def record(event: JobCompleted) -> None:
        await anyio.lowlevel.checkpoint()
        seen.append(event.at)

    async with guard():
        with anyio.CancelScope() as scope:
            async with bus:
                bus.subscribe_async(record)
                for n in range(5):
                    bus.publish(completed(n))
                scope.cancel()
                await anyio.sleep_forever()
        assert scope.cancelled_caught
        assert seen == [0.0, 1.0, 2.0, 3.0, 4.0]


async def test_a_handler_that_hangs_is_cancelled_at_the_close_deadline(
    clock: FakeClock,
) -> None:
    bus = EventBus(clock=clock, close_timeout=5.0)
    cancelled = anyio.Event()
    closed = anyio.Event()

    async def hang(event: JobCompleted) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()

    async def run_bus() -> None:
        async with bus:
            bus.subscribe_async(hang, name="hang")
            bus.publish(completed(0))
            bus.publish(completed(1))
        closed.set()

    async with guard(), anyio.create_task_group() as tg:
        tg.start_soon(run_bus)
        await clock.advance(4.9)
        assert not closed.is_set() and not cancelled.is_set()
        await clock.advance(0.1)
        await closed.wait()
        assert cancelled.is_set()
    figures = bus.stats()
    assert figures.delivered == 1  # the second event never reached the handler
    assert figures.dropped == 1 and bus.active is False


async def test_a_bus_runs_once_at_a_time() -> None:
    bus = EventBus()
    async with guard(), bus:
        with pytest.raises(RuntimeError, match="already running"):
            await bus.__aenter__()
    async with bus:  # and can run again afterwards
        pass


# -- history, streams and resume ---------------------------------------------------


async def test_history_is_bounded_and_replayed_after_an_id() -> None:
    bus = EventBus(history=3)
    for n in range(5):
        bus.publish(completed(n))
    assert [(i, e.at) for i, e in bus.replay()] == [(3, 2.0), (4, 3.0), (5, 4.0)]
    assert [i for i, _ in bus.replay(after=4)] == [5]
    assert list(bus.replay(after=5)) == []
    figures = bus.stats()
    assert (figures.history, figures.history_limit, figures.published) == (3, 3, 5)


async def test_no_history_kept_by_default() -> None:
    bus = EventBus()
    bus.publish(completed())
    assert list(bus.replay()) == []


async def test_a_stream_receives_matching_events_with_their_ids() -> None:
    bus = EventBus()
    async with guard(), bus.stream("job.*") as events:
        bus.publish(WorkerStopped(at=0, name="w"))
        bus.publish(completed(1))
        bus.publish(JobFailed(at=2, job=JOB))
        assert (await events.receive())[0] == 2
        event_id, event = await events.receive()
        assert event_id == 3 and isinstance(event, JobFailed)


async def test_a_stream_that_is_not_read_drops_and_counts_the_newest() -> None:
    bus = EventBus()
    async with guard(), bus.stream(buffer=3, name="sse") as events:
        for n in range(10):
            bus.publish(completed(n))
        assert [(await events.receive())[0] for _ in range(3)] == [1, 2, 3]
        assert events.statistics().dropped == 7
        assert bus.dropped == 7
        bus.publish(completed(10))
        assert (await events.receive())[0] == 11


async def test_a_stream_consumer_waits_for_the_next_event() -> None:
    bus = EventBus()
    got: list[int] = []

    async with guard(), bus.stream() as events:

        async def consume() -> None:
            async for event_id, _ in events:
                got.append(event_id)
                if len(got) == 3:
                    return

        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            for n in range(3):
                await anyio.wait_all_tasks_blocked()
                bus.publish(completed(n))
    assert got == [1, 2, 3]


async def test_a_batch_writer_drains_a_stream_without_waiting() -> None:
    bus = EventBus(history=10)
    bus.publish(completed(0))
    async with bus.stream(after=0) as events:
        bus.publish(completed(1))
        assert [events.receive_nowait()[0] for _ in range(2)] == [1, 2]
        with pytest.raises(anyio.WouldBlock):
            events.receive_nowait()
    with pytest.raises(anyio.ClosedResourceError):
        events.receive_nowait()


async def test_reading_a_closed_stream_raises() -> None:
    bus = EventBus()
    async with bus.stream() as events:
        bus.publish(completed())
    with pytest.raises(anyio.ClosedResourceError):
        await events.receive()
    assert bus.active is False


async def test_resume_yields_the_history_then_live_events_without_gaps_or_repeats() -> None:
    bus = EventBus(history=100)
    for n in range(10):
        bus.publish(completed(n))
    got: list[int] = []

    async def publish_more() -> None:
        for n in range(10, 30):
            bus.publish(completed(n))
            await anyio.lowlevel.checkpoint()

    async with guard(), bus.stream(after=4) as events:
        assert events.gap == 0
        async with anyio.create_task_group() as tg:
            tg.start_soon(publish_more)  # publishes while the backlog is being read
            async for event_id, event in events:
                assert event.at == event_id - 1
                got.append(event_id)
                if event_id == 30:
                    break
    assert got == list(range(5, 31))


async def test_resume_with_a_filter_skips_other_events_and_repeats_none() -> None:
    bus = EventBus(history=100)
    for n in range(6):
        bus.publish(JobFailed(at=n, job=JOB) if n % 2 else completed(n))
    async with guard(), bus.stream(JobFailed, after=2) as events:
        bus.publish(JobFailed(at=6, job=JOB))
        got = [(await events.receive())[0] for _ in range(3)]
    assert got == [4, 6, 7]


async def test_resume_reports_events_the_history_no_longer_holds() -> None:
    bus = EventBus(history=3)
    for n in range(6):
        bus.publish(completed(n))
    async with guard(), bus.stream(after=1) as events:
        assert events.gap == 2  # ids 2 and 3 are gone; 4, 5, 6 are still held
        assert [(await events.receive())[0] for _ in range(3)] == [4, 5, 6]
    async with bus.stream(after=6) as events:
        assert events.gap == 0
    assert EventBus().stats().published == 0
    async with EventBus().stream(after=0) as events:
        assert events.gap == 0


async def test_resume_without_history_counts_everything_after_the_id_as_missed() -> None:
    bus = EventBus()
    for n in range(4):
        bus.publish(completed(n))
    async with guard(), bus.stream(after=1) as events:
        assert events.gap == 3
        bus.publish(completed(4))
        assert (await events.receive())[0] == 5


# -- figures and the queue ---------------------------------------------------------


async def test_stats_add_up_every_subscriber_including_departed_ones() -> None:
    bus = EventBus(history=2)
    unsubscribe = bus.subscribe(lambda e: None, name="gone")
    bus.subscribe(lambda e: None, JobFailed, name="failures")
    async with bus.stream(buffer=1, name="sse"):
        bus.publish(completed())
        bus.publish(completed())
        unsubscribe()
        bus.publish(JobFailed(at=0, job=JOB))
        figures = bus.stats()
    assert figures.published == 3
    assert figures.dropped == 2  # the stream held one event and dropped two
    assert figures.delivered == 2 + 1
    assert {s.name: (s.kind, s.delivered, s.dropped, s.pending) for s in figures.subscribers} == {
        "failures": ("handler", 1, 0, 0),
        "sse": ("stream", 0, 2, 1),
    }
    assert (figures.history, figures.history_limit) == (2, 2)


async def test_the_queue_publishes_a_jobs_transitions_in_order(clock: FakeClock) -> None:
    bus = EventBus()
    queue = hq.Queue(clock=clock, events=bus)
    seen: list[tuple[str, str]] = []

    async def record(event: JobEvent) -> None:
        seen.append((type(event).__name__, event.job.id))

    @queue.task
    async def add(a: int, b: int) -> int:
        return a + b

    async with guard(), bus:
        bus.subscribe_async(record, "job.*")
        job = await add.enqueue(1, 2)
        async with queue.worker():
            await queue.wait(job.id)
    assert seen == [
        ("JobEnqueued", job.id),
        ("JobStarted", job.id),
        ("JobCompleted", job.id),
    ]
