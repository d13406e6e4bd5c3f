"""The storage contract for paused queues (part of :class:`StorageContract`).

A paused queue is skipped by every claim, in every process, while the rest of the
storage goes on: enqueue, running jobs, counts. Resuming wakes idle workers.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio

from hyperqueue._models import Job, JobStatus, Outcome
from hyperqueue.abc import Storage

__all__ = ["PauseContract"]

T0 = 1_700_000_000.0
LEASE = 30.0
Make = Callable[..., Job]


async def _claim(storage: Storage, queues: list[str] | None = None) -> list[Job]:
    return await storage.claim(queues, limit=100, now=T0, lease=LEASE, worker="w1")


class PauseContract:
    """Paused queues: nothing claimed from them, everything else unaffected."""

    async def test_no_queue_is_paused_at_first(self, storage: Storage) -> None:
        assert await storage.paused_queues() == []

    async def test_a_claim_takes_nothing_from_a_paused_queue(
        self, storage: Storage, make: Make
    ) -> None:
        await storage.enqueue([make(queue="mail"), make(queue="mail")], now=T0, key_ttl=None)
        await storage.pause_queue("mail", paused=True, now=T0)
        assert await storage.paused_queues() == ["mail"]
        assert await _claim(storage) == []
        assert await _claim(storage, ["mail"]) == []
        assert await storage.next_run_at(None) is None  # an idle worker does not spin

    async def test_other_queues_are_unaffected(self, storage: Storage, make: Make) -> None:
        mail, report = make(queue="mail"), make(queue="reports")
        await storage.enqueue([mail, report], now=T0, key_ttl=None)
        await storage.pause_queue("mail", paused=True, now=T0)
        assert [job.id for job in await _claim(storage)] == [report.id]
        assert await storage.next_run_at(["mail"]) is None

    async def test_resume_makes_the_jobs_claimable_and_wakes_listeners(
        self, storage: Storage, make: Make
    ) -> None:
        job = make(queue="mail")
        await storage.pause_queue("mail", paused=True, now=T0)
        await storage.enqueue([job], now=T0, key_ttl=None)
        assert await _claim(storage) == []
        async with storage.listen() as listener:
            listener.clear()
            await storage.pause_queue("mail", paused=False, now=T0 + 1)
            with anyio.fail_after(5):
                await listener.wait()
        assert await storage.paused_queues() == []
        assert await storage.next_run_at(None) == T0
        assert [claimed.id for claimed in await _claim(storage)] == [job.id]

    async def test_pausing_and_resuming_are_idempotent(self, storage: Storage) -> None:
        await storage.pause_queue("mail", paused=True, now=T0)
        await storage.pause_queue("mail", paused=True, now=T0 + 1)
        await storage.pause_queue("batch", paused=True, now=T0 + 2)
        assert await storage.paused_queues() == ["batch", "mail"]
        await storage.pause_queue("mail", paused=False, now=T0 + 3)
        await storage.pause_queue("mail", paused=False, now=T0 + 4)
        await storage.pause_queue("never-paused", paused=False, now=T0 + 5)
        assert await storage.paused_queues() == ["batch"]

    async def test_a_queue_with_no_jobs_may_be_paused_before_its_first_job(
        self, storage: Storage, make: Make
    ) -> None:
        await storage.pause_queue("later", paused=True, now=T0)
        assert await storage.counts() == {}
        await storage.enqueue([make(queue="later")], now=T0, key_ttl=None)
        assert await _claim(storage) == []

    async def test_running_jobs_finish_and_counts_are_unaffected(
        self, storage: Storage, make: Make
    ) -> None:
        first, second = make(queue="mail"), make(queue="mail")
        await storage.enqueue([first], now=T0, key_ttl=None)
        [running] = await _claim(storage)
        await storage.pause_queue("mail", paused=True, now=T0 + 1)
        await storage.enqueue([second], now=T0 + 1, key_ttl=None)
        counts = (await storage.counts())["mail"]
        assert (counts[JobStatus.PENDING], counts[JobStatus.RUNNING]) == (1, 1)
        assert await storage.extend([(running.id, running.token)], now=T0 + 2, lease=LEASE) == [
            True
        ]
        outcome = Outcome(id=running.id, token=running.token, status=JobStatus.COMPLETED)
        [done] = await storage.finish([outcome], now=T0 + 3)
        assert done is not None and done.status is JobStatus.COMPLETED
        assert await storage.get(second.id) == second
        assert (await storage.counts())["mail"][JobStatus.PENDING] == 1
