"""The storage contract for periodic jobs' schedules (part of :class:`StorageContract`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest

from hyperqueue._errors import ScheduleNotFound
from hyperqueue._models import Job, JobStatus, Schedule
from hyperqueue.abc import Storage

__all__ = ["ScheduleContract"]

T0 = 1_700_000_000.0
Make = Callable[..., Job]


def _schedule(name: str = "sweep", **fields: Any) -> Schedule:
    fields.setdefault("every", 60.0)
    return Schedule(name=name, task=fields.pop("task", name), **fields)


def _slot_job(make: Make, name: str, slot: float, now: float) -> Job:
    return make(name, key=f"periodic:{name}:{slot!r}", now=now)


async def _pending(storage: Storage, task: str) -> list[Job]:
    return list((await storage.list(task=task, status=JobStatus.PENDING)).items)


class ScheduleContract:
    """Schedules: one job per slot, pause and resume, state kept across definitions."""

    async def test_save_creates_a_schedule_with_no_state(self, storage: Storage) -> None:
        saved = await storage.save_schedule(_schedule(queue="ops"), now=T0)
        assert saved.name == "sweep" and saved.task == "sweep" and saved.queue == "ops"
        assert saved.every == 60.0 and saved.cron is None
        assert (saved.paused, saved.handled_until, saved.last_job, saved.missed) == (
            False,
            None,
            None,
            0,
        )
        assert saved.updated_at == T0
        assert await storage.schedules() == [saved]

    async def test_save_again_keeps_the_state_and_takes_the_new_definition(
        self, storage: Storage, make: Make
    ) -> None:
        await storage.save_schedule(_schedule(), now=T0)
        job = _slot_job(make, "sweep", T0 + 60, T0 + 60)
        assert await storage.fire_schedule("sweep", slot=T0 + 60, job=job, missed=2, now=T0 + 60)
        await storage.pause_schedule("sweep", paused=True, now=T0 + 70)
        redefined = _schedule(
            every=None, cron="*/5 * * * *", timezone="Europe/Paris", catch_up=True
        )
        saved = await storage.save_schedule(redefined, now=T0 + 80)
        assert (saved.cron, saved.every, saved.timezone, saved.catch_up) == (
            "*/5 * * * *",
            None,
            "Europe/Paris",
            True,
        )
        assert saved.paused is True
        assert saved.handled_until == T0 + 60
        assert saved.last_job == job.id
        assert saved.missed == 2
        assert saved.next_at is None
        assert await storage.schedules() == [saved]

    async def test_schedules_are_listed_by_name(self, storage: Storage) -> None:
        for name in ("b", "c", "a"):
            await storage.save_schedule(_schedule(name), now=T0)
        assert [s.name for s in await storage.schedules()] == ["a", "b", "c"]

    async def test_fire_stores_the_job_and_marks_the_slot_handled(
        self, storage: Storage, make: Make
    ) -> None:
        await storage.save_schedule(_schedule(), now=T0)
        job = _slot_job(make, "sweep", T0 + 60, T0 + 60.5)
        assert await storage.fire_schedule("sweep", slot=T0 + 60, job=job, missed=0, now=T0 + 60.5)
        stored = await storage.get(job.id)
        assert stored is not None and stored.status is JobStatus.PENDING
        assert stored.key == job.key
        [schedule] = await storage.schedules()
        assert schedule.handled_until == T0 + 60
        assert schedule.last_job == job.id
        assert schedule.updated_at == T0 + 60.5
        [claimed] = await storage.claim(None, limit=10, now=T0 + 61, lease=30.0, worker="w")
        assert claimed.id == job.id

    async def test_one_job_per_slot_a_slot_fired_again_or_an_older_one_is_refused(
        self, storage: Storage, make: Make
    ) -> None:
        await storage.save_schedule(_schedule(), now=T0)
        first = _slot_job(make, "sweep", T0 + 120, T0 + 120)
        assert await storage.fire_schedule(
            "sweep", slot=T0 + 120, job=first, missed=0, now=T0 + 120
        )
        again = _slot_job(make, "sweep", T0 + 120, T0 + 121)
        older = _slot_job(make, "sweep", T0 + 60, T0 + 121)
        assert not await storage.fire_schedule(
            "sweep", slot=T0 + 120, job=again, missed=1, now=T0 + 121
        )
        assert not await storage.fire_schedule(
            "sweep", slot=T0 + 60, job=older, missed=1, now=T0 + 121
        )
        assert await storage.get(again.id) is None
        assert await storage.get(older.id) is None
        assert [j.id for j in await _pending(storage, "sweep")] == [first.id]
        [schedule] = await storage.schedules()
        assert (schedule.handled_until, schedule.last_job, schedule.missed) == (
            T0 + 120,
            first.id,
            0,
        )

    async def test_concurrent_fires_of_one_slot_store_exactly_one_job(
        self, storage: Storage, make: Make
    ) -> None:
        await storage.save_schedule(_schedule(), now=T0)
        slot = T0 + 60
        jobs = [_slot_job(make, "sweep", slot, slot + n * 0.001) for n in range(8)]
        results: list[bool] = []

        async def fire(job: Job) -> None:
            results.append(
                await storage.fire_schedule("sweep", slot=slot, job=job, missed=1, now=slot)
            )

        async with anyio.create_task_group() as tg:
            for job in jobs:
                tg.start_soon(fire, job)
        assert sorted(results) == [False] * 7 + [True]
        [stored] = await _pending(storage, "sweep")
        assert stored.id in {j.id for j in jobs}
        [schedule] = await storage.schedules()
        assert schedule.last_job == stored.id
        assert schedule.missed == 1, "the missed slots of the winning call only"

    async def test_fire_without_a_job_handles_the_slot_and_counts_missed(
        self, storage: Storage, make: Make
    ) -> None:
        await storage.save_schedule(_schedule(), now=T0)
        assert await storage.fire_schedule("sweep", slot=T0 + 180, job=None, missed=3, now=T0)
        job = _slot_job(make, "sweep", T0 + 300, T0 + 300)
        assert await storage.fire_schedule("sweep", slot=T0 + 300, job=job, missed=1, now=T0 + 300)
        [schedule] = await storage.schedules()
        assert schedule.missed == 4
        assert schedule.handled_until == T0 + 300
        assert schedule.last_job == job.id
        assert await storage.fire_schedule("sweep", slot=T0 + 360, job=None, missed=2, now=T0)
        [schedule] = await storage.schedules()
        assert (schedule.missed, schedule.last_job) == (6, job.id)

    async def test_paused_schedule_refuses_to_fire(self, storage: Storage, make: Make) -> None:
        await storage.save_schedule(_schedule(), now=T0)
        paused = await storage.pause_schedule("sweep", paused=True, now=T0 + 1)
        assert paused.paused is True and paused.updated_at == T0 + 1
        job = _slot_job(make, "sweep", T0 + 60, T0 + 60)
        assert not await storage.fire_schedule(
            "sweep", slot=T0 + 60, job=job, missed=0, now=T0 + 60
        )
        assert not await storage.fire_schedule(
            "sweep", slot=T0 + 60, job=None, missed=5, now=T0 + 60
        )
        assert await storage.get(job.id) is None
        [schedule] = await storage.schedules()
        assert (schedule.paused, schedule.handled_until, schedule.missed) == (True, None, 0)

    async def test_resume_marks_the_schedule_handled_up_to_now(
        self, storage: Storage, make: Make
    ) -> None:
        await storage.save_schedule(_schedule(), now=T0)
        assert await storage.fire_schedule("sweep", slot=T0 + 60, job=None, missed=0, now=T0)
        await storage.pause_schedule("sweep", paused=True, now=T0 + 70)
        resumed = await storage.pause_schedule("sweep", paused=False, now=T0 + 500)
        assert resumed.paused is False
        assert resumed.handled_until == T0 + 500
        assert (await storage.schedules()) == [resumed]
        skipped = _slot_job(make, "sweep", T0 + 480, T0 + 500)
        assert not await storage.fire_schedule(
            "sweep", slot=T0 + 480, job=skipped, missed=0, now=T0 + 500
        )
        assert await storage.fire_schedule("sweep", slot=T0 + 540, job=None, missed=0, now=T0)

    async def test_resume_of_a_schedule_never_fired_marks_it_handled_up_to_now(
        self, storage: Storage
    ) -> None:
        await storage.save_schedule(_schedule(), now=T0)
        await storage.pause_schedule("sweep", paused=True, now=T0)
        resumed = await storage.pause_schedule("sweep", paused=False, now=T0 + 90)
        assert resumed.handled_until == T0 + 90

    async def test_resume_or_pause_again_changes_no_slot(self, storage: Storage) -> None:
        """Resuming a schedule that is not paused skips nothing: a slot due but not yet
        fired when it arrives is still fired."""
        await storage.save_schedule(_schedule(), now=T0)
        assert await storage.fire_schedule("sweep", slot=T0 + 60, job=None, missed=0, now=T0)
        running = await storage.pause_schedule("sweep", paused=False, now=T0 + 125)
        assert running.paused is False and running.handled_until == T0 + 60
        assert await storage.fire_schedule("sweep", slot=T0 + 120, job=None, missed=0, now=T0)
        await storage.pause_schedule("sweep", paused=True, now=T0 + 130)
        twice = await storage.pause_schedule("sweep", paused=True, now=T0 + 140)
        assert twice.paused is True and twice.handled_until == T0 + 120

    async def test_unknown_schedule(self, storage: Storage, make: Make) -> None:
        with pytest.raises(ScheduleNotFound) as caught:
            await storage.pause_schedule("nope", paused=True, now=T0)
        assert caught.value.name == "nope"
        job = _slot_job(make, "nope", T0 + 60, T0 + 60)
        assert not await storage.fire_schedule("nope", slot=T0 + 60, job=job, missed=0, now=T0)
        assert await storage.get(job.id) is None
        assert await storage.schedules() == []
