"""Periodic jobs on the fake clock: slots, time zones, several pools, missed slots,
catch-up, pause and resume, option checks and the listing."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import anyio
import pytest

import hyperqueue as hq
from hyperqueue.testing import FakeClock

pytestmark = pytest.mark.anyio

T = 1_700_000_000.0  # on the fake clock; every=60 slots fall at T + 40, T + 100, ...
LEASE = 3600.0  # pools wake rarely for their leases: long runs of fake time stay quick


@asynccontextmanager
async def guard(seconds: float = 10.0) -> AsyncIterator[None]:
    """A real-time safety net so a broken test fails instead of hanging."""
    with anyio.fail_after(seconds):
        yield


async def jobs_of(queue: hq.Queue, task: str) -> list[hq.Job]:
    """Every job of ``task``, oldest first."""
    return sorted((await queue.list_jobs(task=task, limit=1000)).items, key=lambda j: j.id)


def key(name: str, slot: float) -> str:
    return f"periodic:{name}:{slot!r}"


# -- every= ----------------------------------------------------------------------------


async def test_every_fires_one_job_per_slot_at_the_slot(queue: hq.Queue, clock: FakeClock) -> None:
    ran: list[float] = []

    @queue.periodic(every=60.0)
    async def tick() -> None:
        ran.append(clock.now())

    async with guard(), queue.worker(lease=LEASE):
        await clock.advance(600)
    slots = [T + 40 + 60 * n for n in range(10)]
    assert ran == slots
    jobs = await jobs_of(queue, "tick")
    assert [j.key for j in jobs] == [key("tick", s) for s in slots]
    assert [j.created_at for j in jobs] == slots
    assert all(j.status is hq.JobStatus.COMPLETED for j in jobs)


async def test_task_options_reach_the_jobs(queue: hq.Queue, clock: FakeClock) -> None:
    @queue.periodic(every=10.0, name="sweep", queue="ops", priority="high", timeout=5.0)
    async def anything() -> None:
        pass

    assert "sweep" in queue.tasks and "sweep" in queue.periodics
    async with guard(), queue.worker(lease=LEASE):
        await clock.advance(10)
    [job] = await jobs_of(queue, "sweep")
    assert (job.queue, job.priority, job.timeout) == ("ops", hq.Priority.HIGH, 5.0)
    assert job.key == key("sweep", T + 10)


async def test_a_pool_that_does_not_serve_the_queue_fires_nothing(
    queue: hq.Queue, clock: FakeClock
) -> None:
    @queue.periodic(every=60.0, queue="reports")
    async def report() -> None:
        pass

    async with guard(), queue.worker(lease=LEASE, queues=["default"]):
        await clock.advance(300)
    assert await jobs_of(queue, "report") == []
    async with guard(), queue.worker(lease=LEASE, queues=["reports"]):
        await clock.advance(60)
    assert len(await jobs_of(queue, "report")) == 1


async def test_two_pools_on_one_storage_make_one_job_per_slot(clock: FakeClock) -> None:
    storage = hq.MemoryStorage()
    queues = [hq.Queue(storage, clock=clock) for _ in range(2)]
    runs: list[int] = []
    for n, queue in enumerate(queues):

        @queue.periodic(every=60.0)
        async def tick(n: int = n) -> None:
            runs.append(n)

    async with guard(), queues[0].worker(lease=LEASE):
        async with queues[1].worker(lease=LEASE):
            await clock.advance(300)
        await clock.advance(300)  # one pool left: it goes on alone, with no gap
    jobs = await jobs_of(queues[0], "tick")
    assert [j.key for j in jobs] == [key("tick", T + 40 + 60 * n) for n in range(10)]
    assert len(runs) == 10
    [schedule] = await queues[0].schedules()
    assert schedule.missed == 0 and schedule.last_job == jobs[-1].id


# -- cron ------------------------------------------------------------------------------


def at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


async def test_cron_follows_the_time_zone_across_daylight_saving_time() -> None:
    pytest.importorskip("cronsim")
    paris = ZoneInfo("Europe/Paris")
    clock = FakeClock(start=at("2024-03-29T00:00:00+00:00"))
    queue = hq.Queue(clock=clock)

    @queue.periodic(cron="0 9 * * *", timezone="Europe/Paris")
    async def morning() -> None:
        pass

    @queue.periodic(cron="30 2 * * *", timezone="Europe/Paris")
    async def night() -> None:
        pass

    async with guard(), queue.worker(lease=LEASE):
        await clock.advance(4 * 86400)
    mornings = [j.created_at for j in await jobs_of(queue, "morning")]
    assert [datetime.fromtimestamp(t, paris).strftime("%d %H:%M") for t in mornings] == [
        "29 09:00",
        "30 09:00",
        "31 09:00",  # the clocks went forward that night: 07:00 UTC instead of 08:00
        "01 09:00",
    ]
    assert mornings[2] - mornings[1] == 23 * 3600
    nights = [j.created_at for j in await jobs_of(queue, "night")]
    assert [datetime.fromtimestamp(t, UTC).strftime("%d %H:%M") for t in nights] == [
        "29 01:30",
        "30 01:30",
        "31 01:00",  # 02:30 did not exist in Paris: run at 03:00 summer time
        "01 00:30",
    ]


async def test_cron_fires_once_in_the_hour_that_repeats_when_clocks_go_back() -> None:
    pytest.importorskip("cronsim")
    clock = FakeClock(start=at("2024-10-26T00:00:00+00:00"))
    queue = hq.Queue(clock=clock)

    @queue.periodic(cron="30 2 * * *", timezone="Europe/Paris")
    async def night() -> None:
        pass

    async with guard(), queue.worker(lease=LEASE):
        await clock.advance(3 * 86400)
    nights = [j.created_at for j in await jobs_of(queue, "night")]
    assert [datetime.fromtimestamp(t, UTC).strftime("%d %H:%M") for t in nights] == [
        "26 00:30",
        "27 00:30",  # 02:30 summer time; the second 02:30 (winter time) is not a new slot
        "28 01:30",
    ]


async def test_cron_in_utc_by_default(queue: hq.Queue, clock: FakeClock) -> None:
    pytest.importorskip("cronsim")

    @queue.periodic(cron="*/5 * * * *")
    async def often() -> None:
        pass

    async with guard(), queue.worker(lease=LEASE):
        await clock.advance(900)
    times = [j.created_at for j in await jobs_of(queue, "often")]
    assert times and all(t % 300 == 0 for t in times)
    assert len(times) == 3


# -- missed slots ----------------------------------------------------------------------


async def down_for_a_while(queue: hq.Queue, clock: FakeClock) -> None:
    """Run a pool for two slots, stop it for ten minutes, start it again."""
    async with queue.worker(lease=LEASE):
        await clock.advance(130)  # fires T + 40 and T + 100
    await clock.advance(600)  # nobody runs: T + 160 ... T + 700 go by
    async with queue.worker(lease=LEASE):
        await clock.advance(0)  # the pool starts at T + 730 and looks at once


async def test_missed_slots_are_reported_once_and_skipped_by_default(
    queue: hq.Queue, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    @queue.periodic(every=60.0)
    async def tick() -> None:
        pass

    seen: list[hq.ScheduleMissed] = []
    queue.events.subscribe(seen.append, hq.ScheduleMissed)
    with caplog.at_level(logging.WARNING, logger="hyperqueue.periodic"):
        async with guard():
            await down_for_a_while(queue, clock)
    # T + 700 is on time (30 s late, within the grace of 60 s); 9 slots before it missed
    assert [j.key for j in await jobs_of(queue, "tick")] == [
        key("tick", T + 40),
        key("tick", T + 100),
        key("tick", T + 700),
    ]
    [event] = seen
    assert (event.schedule, event.missed, event.first_slot, event.last_slot) == (
        "tick",
        9,
        T + 160,
        T + 640,
    )
    assert event.at == T + 730
    [schedule] = await queue.schedules()
    assert schedule.missed == 9 and schedule.handled_until == T + 700
    assert "periodic job 'tick' missed 9 slot(s)" in caplog.text


async def test_catch_up_runs_one_job_for_all_the_missed_slots(
    queue: hq.Queue, clock: FakeClock
) -> None:
    @queue.periodic(every=60.0, catch_up=True)
    async def tick() -> None:
        pass

    seen: list[hq.ScheduleMissed] = []
    queue.events.subscribe(seen.append, hq.ScheduleMissed)
    async with guard():
        await down_for_a_while(queue, clock)
    jobs = await jobs_of(queue, "tick")
    assert [j.key for j in jobs] == [
        key("tick", T + 40),
        key("tick", T + 100),
        key("tick", T + 640),  # the catch-up, for T + 160 ... T + 640
        key("tick", T + 700),
    ]
    assert all(j.status is hq.JobStatus.COMPLETED for j in jobs)
    assert [e.missed for e in seen] == [9]


async def test_a_slot_later_than_the_grace_is_missed_not_run(clock: FakeClock) -> None:
    """every=3600: a pool back 2 minutes after the hour is past the grace of 60 s."""
    for catch_up, expected in ((False, 0), (True, 1)):
        queue = hq.Queue(clock=clock)

        @queue.periodic(every=3600.0, catch_up=catch_up)
        async def hourly() -> None:
            pass

        seen: list[hq.ScheduleMissed] = []
        queue.events.subscribe(seen.append, hq.ScheduleMissed)
        async with guard():
            async with queue.worker(lease=LEASE):
                await clock.advance(0)
            hour = (clock.now() // 3600 + 1) * 3600
            await clock.advance_to(hour + 120)
            async with queue.worker(lease=LEASE):
                await clock.advance(0)
        jobs = await jobs_of(queue, "hourly")
        assert [j.key for j in jobs] == [key("hourly", hour)] * expected
        [event] = seen
        assert (event.missed, event.first_slot, event.last_slot) == (1, hour, hour)


async def test_two_pools_report_missed_slots_once(clock: FakeClock) -> None:
    storage = hq.MemoryStorage()
    queues = [hq.Queue(storage, clock=clock) for _ in range(2)]
    seen: list[hq.ScheduleMissed] = []
    for queue in queues:

        @queue.periodic(every=60.0, catch_up=True)
        async def tick() -> None:
            pass

        queue.events.subscribe(seen.append, hq.ScheduleMissed)
    async with guard():
        async with queues[0].worker(lease=LEASE):
            await clock.advance(60)
        await clock.advance(600)
        async with queues[0].worker(lease=LEASE), queues[1].worker(lease=LEASE):
            await clock.advance(0)
    assert [e.missed for e in seen] == [9]
    assert len(await jobs_of(queues[0], "tick")) == 3  # T + 40, one catch-up, T + 640


# -- pause and resume -------------------------------------------------------------------


async def test_pause_stops_firing_and_resume_reports_nothing_missed(
    queue: hq.Queue, clock: FakeClock
) -> None:
    @queue.periodic(every=60.0)
    async def tick() -> None:
        pass

    seen: list[hq.ScheduleMissed] = []
    queue.events.subscribe(seen.append, hq.ScheduleMissed)
    async with guard(), queue.worker(lease=LEASE):
        await clock.advance(130)
        paused = await queue.pause_schedule("tick")
        assert paused.paused is True and paused.next_at is None
        await clock.advance(600)
        assert len(await jobs_of(queue, "tick")) == 2
        resumed = await queue.resume_schedule("tick")
        assert resumed.paused is False
        assert resumed.handled_until == T + 730
        assert resumed.next_at == T + 760
        await clock.advance(120)
    assert [j.key for j in await jobs_of(queue, "tick")] == [
        key("tick", T + 40),
        key("tick", T + 100),
        key("tick", T + 760),
        key("tick", T + 820),
    ]
    assert seen == []
    [schedule] = await queue.schedules()
    assert schedule.missed == 0


async def test_a_schedule_can_be_paused_before_any_pool_ran(
    queue: hq.Queue, clock: FakeClock
) -> None:
    @queue.periodic(every=60.0)
    async def tick() -> None:
        pass

    assert (await queue.pause_schedule("tick")).paused is True
    async with guard(), queue.worker(lease=LEASE):
        await clock.advance(300)
        assert await jobs_of(queue, "tick") == []
        await queue.resume_schedule("tick")
        await clock.advance(60)
    assert [j.key for j in await jobs_of(queue, "tick")] == [key("tick", T + 340)]


async def test_unknown_schedule_cannot_be_paused(queue: hq.Queue) -> None:
    with pytest.raises(hq.ScheduleNotFound, match="'nope'"):
        await queue.pause_schedule("nope")
    with pytest.raises(hq.ScheduleNotFound):
        await queue.resume_schedule("nope")


# -- the listing --------------------------------------------------------------------------


async def test_schedules_lists_definitions_with_their_next_slot(
    queue: hq.Queue, clock: FakeClock
) -> None:
    @queue.periodic(every=60.0, queue="ops")
    async def tick() -> None:
        pass

    [before] = await queue.schedules()  # defined here, not saved by any pool yet
    assert (before.name, before.task, before.queue, before.every) == ("tick", "tick", "ops", 60.0)
    assert before.handled_until is None and before.next_at == T + 40
    async with guard(), queue.worker(lease=LEASE):
        await clock.advance(45)
        [after] = await queue.schedules()
    [job] = await jobs_of(queue, "tick")
    assert after.handled_until == T + 40
    assert after.last_job == job.id
    assert after.next_at == T + 100


async def test_schedules_of_other_processes_are_listed_too(clock: FakeClock) -> None:
    storage = hq.MemoryStorage()
    await storage.save_schedule(hq.Schedule(name="elsewhere", task="x", every=30.0), now=T)
    queue = hq.Queue(storage, clock=clock)
    [schedule] = await queue.schedules()
    assert schedule.name == "elsewhere" and schedule.next_at == T + 10  # 30 s multiples


async def test_cron_schedule_lists_its_next_local_time(clock: FakeClock) -> None:
    pytest.importorskip("cronsim")
    queue = hq.Queue(clock=clock)

    @queue.periodic(cron="0 9 * * 1", timezone="Europe/Paris")
    async def weekly() -> None:
        pass

    [schedule] = await queue.schedules()
    assert schedule.next_at is not None and schedule.next_at > clock.now()
    local = datetime.fromtimestamp(schedule.next_at, ZoneInfo("Europe/Paris"))
    assert (local.weekday(), local.hour, local.minute) == (0, 9, 0)


# -- options ---------------------------------------------------------------------------


async def nothing() -> None:
    pass


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({}, "every"),
        ({"every": 60.0, "cron": "* * * * *"}, "cron"),
        ({"every": 0}, "every"),
        ({"every": -5.0}, "every"),
        ({"every": float("nan")}, "every"),
        ({"every": float("inf")}, "every"),
        ({"every": True}, "every"),
        ({"every": "60"}, "every"),
        ({"every": 60.0, "timezone": "Europe/Paris"}, "timezone"),
        ({"every": 60.0, "catch_up": "yes"}, "catch_up"),
        ({"every": 60.0, "name": "x" * 201}, "name"),
        ({"every": 60.0, "priority": "urgent"}, "priority"),
        ({"cron": "* * * * *", "timezone": "Mars/Olympus_Mons"}, "timezone"),
        ({"cron": "* * * * *", "timezone": "../etc/passwd"}, "timezone"),
    ],
)
async def test_bad_options_are_refused_when_decorating(
    queue: hq.Queue, options: dict[str, object], option: str
) -> None:
    with pytest.raises(hq.OptionError) as caught:
        queue.periodic(**options)(nothing)  # type: ignore[arg-type]
    assert caught.value.option == option
    assert queue.tasks == {} and dict(queue.periodics) == {}


@pytest.mark.parametrize(
    ("cron", "says"),
    [
        ("* * * *", "has 4 fields"),
        ("0 * * * * *", "has 6 fields"),
        ("61 * * * *", "not a valid cron expression"),
        ("0 0 31 2 *", "not a valid cron expression"),
        ("every day", "has 2 fields"),
        ("a b c d e", "not a valid cron expression"),
    ],
)
async def test_bad_cron_expressions_are_refused(queue: hq.Queue, cron: str, says: str) -> None:
    pytest.importorskip("cronsim")
    with pytest.raises(hq.OptionError, match=says) as caught:
        queue.periodic(cron=cron)(nothing)
    assert caught.value.option == "cron"
    assert queue.tasks == {}


async def test_cron_without_cronsim_names_the_extra(
    queue: hq.Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "cronsim", None)  # makes the import fail
    with pytest.raises(hq.OptionError, match=r"pip install 'hyperqueue-jobs\[cron\]'"):
        queue.periodic(cron="* * * * *")(nothing)
    queue.periodic(every=1.0)(nothing)  # every= needs nothing


async def test_a_function_that_needs_arguments_is_refused(queue: hq.Queue) -> None:
    async def needs(day: str) -> None:
        pass

    with pytest.raises(hq.ArgumentError, match="no arguments"):
        queue.periodic(every=60.0)(needs)
    assert queue.tasks == {} and dict(queue.periodics) == {}

    async def has_defaults(day: str = "today") -> None:
        pass

    queue.periodic(every=60.0)(has_defaults)
    assert list(queue.periodics) == ["has_defaults"]


async def test_a_name_taken_by_a_task_is_refused(queue: hq.Queue) -> None:
    @queue.task
    async def nothing() -> None:
        pass

    with pytest.raises(ValueError, match="already registered"):
        queue.periodic(every=60.0)(nothing.fn)
