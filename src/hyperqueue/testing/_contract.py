"""The storage contract: behaviour every Storage backend must share, as pytest tests.

Subclass :class:`StorageContract` in a test module and provide a ``storage`` fixture
yielding an opened, empty backend. Time is passed explicitly (``now=``), so the suite
needs no clock and runs as fast as the backend allows.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import anyio
import pytest

from hyperqueue._errors import InvalidTransition, JobNotFound, QuotaExceeded
from hyperqueue._ids import IdFactory
from hyperqueue._models import Job, JobStatus, Outcome, Priority, WorkerInfo
from hyperqueue.abc import Storage

from ._contract_fairness import FairShareContract
from ._contract_pause import PauseContract
from ._contract_schedules import ScheduleContract
from ._contract_search import SearchContract
from ._contract_workflows import WorkflowContract

__all__ = ["StorageContract"]

T0 = 1_700_000_000.0
LEASE = 30.0


class _Maker:
    """Builds jobs with increasing ids, as a Queue would."""

    def __init__(self) -> None:
        self._ids = IdFactory()
        self._tick = itertools.count()

    def __call__(self, task: str = "t", **fields: Any) -> Job:
        now = fields.pop("now", T0)
        fields.setdefault("created_at", now)
        fields.setdefault("run_at", now)
        return Job(id=self._ids(now + next(self._tick) * 1e-6), task=task, **fields)


def _done(job: Job, status: JobStatus = JobStatus.COMPLETED, **fields: Any) -> Outcome:
    return Outcome(id=job.id, token=job.token, status=status, **fields)


async def _claim(
    storage: Storage,
    limit: int = 100,
    *,
    now: float = T0,
    queues: Sequence[str] | None = None,
    worker: str = "w1",
) -> list[Job]:
    return await storage.claim(queues, limit=limit, now=now, lease=LEASE, worker=worker)


class StorageContract(
    ScheduleContract, WorkflowContract, SearchContract, PauseContract, FairShareContract
):
    """Tests that pin the Storage protocol; see the module docstring."""

    @pytest.fixture
    def make(self) -> _Maker:
        return _Maker()

    # -- enqueue and read ----------------------------------------------------------

    async def test_enqueue_then_get_round_trips_every_field(
        self, storage: Storage, make: _Maker
    ) -> None:
        job = make(
            "send",
            queue="mail",
            priority=Priority.HIGH,
            args=(1, "two", [3.5, None], {"k": "v"}),
            kwargs={"flag": True, "text": "héllo ✓"},
            max_attempts=4,
            tenant="acme",
            timeout=12.5,
        )
        [stored] = await storage.enqueue([job], now=T0, key_ttl=None)
        assert stored == job
        assert await storage.get(job.id) == job
        assert await storage.get("no-such-id") is None

    async def test_headers_round_trip_through_every_read(
        self, storage: Storage, make: _Maker
    ) -> None:
        """A job's message headers (the W3C trace context of the span that enqueued it)
        are kept as given, through enqueue, get, claim, finish, listing and the event
        log, so a worker in another process or host joins the producer's trace."""
        headers = {
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "tracestate": "vendor=t61rcWkgMzE",
            "baggage": "tenant=acme,user=%C3%A9",
        }
        job = make(headers=headers)
        plain = make()
        after = await storage.last_event_id()
        [stored, _] = await storage.enqueue([job, plain], now=T0, key_ttl=None)
        assert stored.headers == headers
        assert (await storage.get(job.id)) == job
        assert (await storage.get(plain.id)) == plain  # no headers: an empty dict
        claimed = {j.id: j for j in await _claim(storage)}
        assert claimed[job.id].headers == headers
        assert claimed[plain.id].headers == {}
        [done, _] = await storage.finish(
            [_done(claimed[job.id]), _done(claimed[plain.id])], now=T0 + 1
        )
        assert done is not None and done.headers == headers
        listed = {j.id: j for j in (await storage.list()).items}
        assert listed[job.id].headers == headers
        events = await storage.read_events(after=after)
        assert {e.job.id: e.job.headers for e in events}[job.id] == headers

    async def test_enqueue_many_returns_one_job_per_input_in_order(
        self, storage: Storage, make: _Maker
    ) -> None:
        jobs = [make() for _ in range(50)]
        stored = await storage.enqueue(jobs, now=T0, key_ttl=None)
        assert [j.id for j in stored] == [j.id for j in jobs]
        counts = await storage.counts()
        assert counts["default"][JobStatus.PENDING] == 50

    # -- claim order ---------------------------------------------------------------

    async def test_claim_orders_by_priority_then_fifo(self, storage: Storage, make: _Maker) -> None:
        order = ["low", "normal", "critical", "high", "normal", "critical", "low", "high"]
        jobs = [make(priority=Priority(p)) for p in order]
        await storage.enqueue(jobs, now=T0, key_ttl=None)
        claimed = await _claim(storage)
        assert [j.priority.value for j in claimed] == sorted(order, key=lambda p: Priority(p).rank)
        for level in Priority:
            ids = [j.id for j in claimed if j.priority is level]
            assert ids == sorted(ids), "FIFO within one priority"

    async def test_claim_orders_by_run_at_within_a_priority(
        self, storage: Storage, make: _Maker
    ) -> None:
        late = make(run_at=T0 - 1)
        early = make(run_at=T0 - 5)
        await storage.enqueue([late, early], now=T0, key_ttl=None)
        assert [j.id for j in await _claim(storage)] == [early.id, late.id]

    async def test_delayed_job_is_not_claimed_before_its_time(
        self, storage: Storage, make: _Maker
    ) -> None:
        later = make(run_at=T0 + 10)
        await storage.enqueue([later], now=T0, key_ttl=None)
        assert await _claim(storage) == []
        assert await storage.next_run_at(None) == pytest.approx(T0 + 10)
        assert await _claim(storage, now=T0 + 9.999) == []
        [job] = await _claim(storage, now=T0 + 10)
        assert job.id == later.id

    async def test_due_delayed_job_keeps_its_priority(self, storage: Storage, make: _Maker) -> None:
        low_now = make(priority=Priority.LOW)
        critical_later = make(priority=Priority.CRITICAL, run_at=T0 + 1)
        await storage.enqueue([low_now, critical_later], now=T0, key_ttl=None)
        claimed = await _claim(storage, now=T0 + 2)
        assert [j.id for j in claimed] == [critical_later.id, low_now.id]

    async def test_claim_marks_running_with_lease_token_and_attempt(
        self, storage: Storage, make: _Maker
    ) -> None:
        await storage.enqueue([make()], now=T0, key_ttl=None)
        [job] = await _claim(storage, now=T0 + 1, worker="w7")
        assert job.status is JobStatus.RUNNING
        assert job.attempts == 1
        assert job.token >= 1
        assert job.started_at is None  # a claim is not a start: the function is not called yet
        assert job.lease_until == pytest.approx(T0 + 1 + LEASE)
        assert job.worker == "w7"
        assert await storage.get(job.id) == job

    async def test_claim_respects_limit_and_never_hands_out_a_job_twice(
        self, storage: Storage, make: _Maker
    ) -> None:
        await storage.enqueue([make() for _ in range(25)], now=T0, key_ttl=None)
        seen: list[str] = []
        for _ in range(4):
            batch = await _claim(storage, limit=7)
            assert len(batch) <= 7
            seen += [j.id for j in batch]
        assert len(seen) == 25 == len(set(seen))

    async def test_concurrent_claims_are_disjoint(self, storage: Storage, make: _Maker) -> None:
        await storage.enqueue([make() for _ in range(60)], now=T0, key_ttl=None)
        results: list[list[Job]] = []

        async def claimer(name: str) -> None:
            results.append(await _claim(storage, limit=20, worker=name))

        async with anyio.create_task_group() as tg:
            for n in range(5):
                tg.start_soon(claimer, f"w{n}")
        ids = [j.id for batch in results for j in batch]
        assert len(ids) == len(set(ids)) == 60

    async def test_claim_filters_by_queue(self, storage: Storage, make: _Maker) -> None:
        a, b = make(queue="a"), make(queue="b")
        await storage.enqueue([a, b], now=T0, key_ttl=None)
        assert [j.id for j in await _claim(storage, queues=["b"])] == [b.id]
        assert await _claim(storage, queues=["missing"]) == []
        assert [j.id for j in await _claim(storage, queues=None)] == [a.id]

    # -- finish and fencing ------------------------------------------------------------

    async def test_finish_records_result_error_and_counts(
        self, storage: Storage, make: _Maker
    ) -> None:
        await storage.enqueue([make(), make()], now=T0, key_ttl=None)
        ok, bad = await _claim(storage)
        done = await storage.finish(
            [
                _done(ok, result={"sum": 3}),
                _done(bad, JobStatus.FAILED, error="ValueError: x", traceback="Traceback..."),
            ],
            now=T0 + 2,
        )
        assert done[0] is not None and done[1] is not None
        assert done[0].status is JobStatus.COMPLETED and done[0].result == {"sum": 3}
        assert done[0].finished_at == pytest.approx(T0 + 2)
        assert done[1].status is JobStatus.FAILED and done[1].error == "ValueError: x"
        assert done[1].traceback == "Traceback..."
        assert await storage.get(ok.id) == done[0]
        counts = (await storage.counts())["default"]
        assert counts[JobStatus.COMPLETED] == 1
        assert counts[JobStatus.FAILED] == 1
        assert counts[JobStatus.RUNNING] == 0

    async def test_finish_with_stale_token_is_refused(self, storage: Storage, make: _Maker) -> None:
        await storage.enqueue([make()], now=T0, key_ttl=None)
        [job] = await _claim(storage)
        stale = Outcome(id=job.id, token=job.token - 1, status=JobStatus.COMPLETED)
        assert await storage.finish([stale], now=T0) == [None]
        missing = Outcome(id="nope", token=1, status=JobStatus.COMPLETED)
        assert await storage.finish([missing], now=T0) == [None]
        assert (await storage.get(job.id)) == job

    async def test_finish_twice_is_refused_the_second_time(
        self, storage: Storage, make: _Maker
    ) -> None:
        await storage.enqueue([make()], now=T0, key_ttl=None)
        [job] = await _claim(storage)
        [first] = await storage.finish([_done(job, result=1)], now=T0)
        assert first is not None
        assert await storage.finish([_done(job, result=2)], now=T0) == [None]
        stored = await storage.get(job.id)
        assert stored is not None and stored.result == 1

    async def test_retry_outcome_waits_until_run_at_and_keeps_attempts(
        self, storage: Storage, make: _Maker
    ) -> None:
        await storage.enqueue([make(max_attempts=3)], now=T0, key_ttl=None)
        [job] = await _claim(storage)
        [again] = await storage.finish(
            [_done(job, JobStatus.PENDING, run_at=T0 + 5, error="boom")], now=T0
        )
        assert again is not None and again.status is JobStatus.PENDING
        assert again.attempts == 1 and again.error == "boom"
        assert await _claim(storage, now=T0 + 4) == []
        [second] = await _claim(storage, now=T0 + 5)
        assert second.attempts == 2
        assert second.token > job.token

    async def test_released_job_does_not_count_the_attempt(
        self, storage: Storage, make: _Maker
    ) -> None:
        await storage.enqueue([make()], now=T0, key_ttl=None)
        [job] = await _claim(storage)
        outcome = Outcome(id=job.id, token=job.token, status=JobStatus.PENDING, released=True)
        [back] = await storage.finish([outcome], now=T0)
        assert back is not None and back.status is JobStatus.PENDING and back.attempts == 0
        [again] = await _claim(storage)
        assert again.attempts == 1

    # -- leases --------------------------------------------------------------------

    async def test_extend_renews_only_the_current_claim(
        self, storage: Storage, make: _Maker
    ) -> None:
        await storage.enqueue([make(), make()], now=T0, key_ttl=None)
        a, b = await _claim(storage)
        kept = await storage.extend(
            [(a.id, a.token), (b.id, b.token + 1), ("nope", 1)], now=T0 + 20, lease=LEASE
        )
        assert kept == [True, False, False]
        stored = await storage.get(a.id)
        assert stored is not None and stored.lease_until == pytest.approx(T0 + 20 + LEASE)

    async def test_rescue_returns_expired_jobs_and_fences_the_old_worker(
        self, storage: Storage, make: _Maker
    ) -> None:
        await storage.enqueue([make(max_attempts=2), make(max_attempts=2)], now=T0, key_ttl=None)
        a, b = await _claim(storage)
        await storage.extend([(b.id, b.token)], now=T0 + 20, lease=LEASE)
        assert await storage.rescue(now=T0 + LEASE - 1) == []
        rescued = await storage.rescue(now=T0 + LEASE + 1)
        assert [j.id for j in rescued] == [a.id]
        assert rescued[0].status is JobStatus.PENDING
        assert rescued[0].error is not None and "lease" in rescued[0].error
        assert rescued[0].attempts == 0 and rescued[0].rescues == 1  # no attempt spent
        # the first worker comes back and tries to finish: refused
        assert await storage.finish([_done(a)], now=T0 + LEASE + 2) == [None]
        [again] = await _claim(storage, now=T0 + LEASE + 2, worker="w2")
        assert again.id == a.id and again.attempts == 1 and again.worker == "w2"
        assert await storage.extend([(a.id, a.token)], now=T0 + 40, lease=LEASE) == [False]

    async def test_a_lost_worker_spends_no_attempt_even_with_one_attempt(
        self, storage: Storage, make: _Maker
    ) -> None:
        await storage.enqueue([make(max_attempts=1)], now=T0, key_ttl=None)
        await _claim(storage)
        [lost] = await storage.rescue(now=T0 + LEASE + 1)
        assert lost.status is JobStatus.PENDING and lost.attempts == 0 and lost.rescues == 1
        [again] = await _claim(storage, now=T0 + LEASE + 1)
        assert again.attempts == 1
        [done] = await storage.finish([_done(again)], now=T0 + LEASE + 2)
        assert done is not None and done.status is JobStatus.COMPLETED and done.rescues == 1

    async def test_the_max_rescues_th_lost_worker_fails_the_job_with_its_cause(
        self, storage: Storage, make: _Maker
    ) -> None:
        await storage.enqueue([make(max_attempts=5, max_rescues=2)], now=T0, key_ttl=None)
        now = T0
        await _claim(storage, now=now)
        now += LEASE + 1
        [first] = await storage.rescue(now=now)
        assert first.status is JobStatus.PENDING
        await _claim(storage, now=now)
        now += LEASE + 1
        [lost] = await storage.rescue(now=now)
        assert lost.status is JobStatus.FAILED and lost.finished_at == pytest.approx(now)
        assert lost.rescues == 2 and lost.attempts == 1
        assert lost.error is not None and "lost its worker 2 times" in lost.error
        assert (await storage.counts())["default"][JobStatus.FAILED] == 1
        [retried] = [await storage.retry(lost.id, now=now)]
        assert retried.rescues == 0 and retried.attempts == 0

    # -- idempotency -----------------------------------------------------------------

    async def test_same_key_gives_the_same_job(self, storage: Storage, make: _Maker) -> None:
        first = make(key="order-1")
        [a] = await storage.enqueue([first], now=T0, key_ttl=60)
        [b] = await storage.enqueue([make(key="order-1")], now=T0 + 1, key_ttl=60)
        assert a.id == b.id == first.id
        dupes = await storage.enqueue([make(key="k2"), make(key="k2")], now=T0 + 1, key_ttl=60)
        assert dupes[0].id == dupes[1].id
        assert (await storage.counts())["default"][JobStatus.PENDING] == 2

    async def test_key_is_scoped_by_tenant(self, storage: Storage, make: _Maker) -> None:
        [a] = await storage.enqueue([make(key="k", tenant="a")], now=T0, key_ttl=60)
        [b] = await storage.enqueue([make(key="k", tenant="b")], now=T0, key_ttl=60)
        assert a.id != b.id

    async def test_key_is_forgotten_after_its_ttl(self, storage: Storage, make: _Maker) -> None:
        [a] = await storage.enqueue([make(key="k")], now=T0, key_ttl=60)
        [b] = await storage.enqueue([make(key="k", now=T0 + 59)], now=T0 + 59, key_ttl=60)
        assert b.id == a.id
        [c] = await storage.enqueue([make(key="k", now=T0 + 61)], now=T0 + 61, key_ttl=60)
        assert c.id != a.id

    async def test_key_without_ttl_is_kept(self, storage: Storage, make: _Maker) -> None:
        [a] = await storage.enqueue([make(key="k")], now=T0, key_ttl=None)
        [b] = await storage.enqueue([make(key="k")], now=T0 + 1e6, key_ttl=None)
        assert a.id == b.id

    # -- cancel and retry ----------------------------------------------------------

    async def test_cancel_pending_job_is_never_claimed(
        self, storage: Storage, make: _Maker
    ) -> None:
        a, b = make(), make()
        await storage.enqueue([a, b], now=T0, key_ttl=None)
        cancelled = await storage.cancel(a.id, now=T0 + 1)
        assert cancelled.status is JobStatus.CANCELLED
        assert cancelled.finished_at == pytest.approx(T0 + 1)
        assert [j.id for j in await _claim(storage)] == [b.id]
        counts = (await storage.counts())["default"]
        assert counts[JobStatus.CANCELLED] == 1 and counts[JobStatus.FAILED] == 0

    async def test_cancel_running_job_fences_its_worker(
        self, storage: Storage, make: _Maker
    ) -> None:
        await storage.enqueue([make()], now=T0, key_ttl=None)
        [job] = await _claim(storage)
        await storage.cancel(job.id, now=T0)
        assert await storage.finish([_done(job)], now=T0) == [None]
        assert await storage.extend([(job.id, job.token)], now=T0, lease=LEASE) == [False]
        stored = await storage.get(job.id)
        assert stored is not None and stored.status is JobStatus.CANCELLED

    async def test_cancel_is_idempotent_but_refused_for_finished_jobs(
        self, storage: Storage, make: _Maker
    ) -> None:
        a, b = make(), make()
        await storage.enqueue([a, b], now=T0, key_ttl=None)
        await storage.cancel(a.id, now=T0)
        again = await storage.cancel(a.id, now=T0 + 5)
        assert again.status is JobStatus.CANCELLED
        [job] = await _claim(storage)
        await storage.finish([_done(job)], now=T0)
        with pytest.raises(InvalidTransition):
            await storage.cancel(b.id, now=T0)
        with pytest.raises(JobNotFound):
            await storage.cancel("nope", now=T0)

    async def test_retry_sends_failed_job_back_with_fresh_attempts(
        self, storage: Storage, make: _Maker
    ) -> None:
        await storage.enqueue([make(max_attempts=2)], now=T0, key_ttl=None)
        [job] = await _claim(storage)
        await storage.finish([_done(job, JobStatus.FAILED, error="x")], now=T0)
        again = await storage.retry(job.id, now=T0 + 1)
        assert again.status is JobStatus.PENDING and again.attempts == 0
        assert again.error is None and again.finished_at is None
        [claimed] = await _claim(storage, now=T0 + 1)
        assert claimed.id == job.id and claimed.attempts == 1

    async def test_retry_after_cancel_while_pending_runs_exactly_once(
        self, storage: Storage, make: _Maker
    ) -> None:
        job = make()
        await storage.enqueue([job], now=T0, key_ttl=None)
        await storage.cancel(job.id, now=T0)
        await storage.retry(job.id, now=T0)
        await storage.cancel(job.id, now=T0)
        await storage.retry(job.id, now=T0)
        claimed = await _claim(storage)
        assert [j.id for j in claimed] == [job.id]
        assert await _claim(storage) == []

    async def test_retry_of_a_cancelled_delayed_job_is_due_at_once_and_in_order(
        self, storage: Storage, make: _Maker
    ) -> None:
        delayed = make(run_at=T0 + 60)
        other = make()
        await storage.enqueue([delayed], now=T0, key_ttl=None)
        await storage.cancel(delayed.id, now=T0)
        await storage.enqueue([other], now=T0, key_ttl=None)
        await storage.retry(delayed.id, now=T0)  # pending again, due now, behind `other`
        claimed = await _claim(storage)
        assert [j.id for j in claimed] == [other.id, delayed.id]
        assert await _claim(storage, now=T0 + 61) == []

    async def test_retry_is_refused_unless_failed_or_cancelled(
        self, storage: Storage, make: _Maker
    ) -> None:
        job = make()
        await storage.enqueue([job], now=T0, key_ttl=None)
        with pytest.raises(InvalidTransition):
            await storage.retry(job.id, now=T0)
        with pytest.raises(JobNotFound):
            await storage.retry("nope", now=T0)

    # -- progress ------------------------------------------------------------------

    async def test_progress_is_recorded_for_the_current_claim_only(
        self, storage: Storage, make: _Maker
    ) -> None:
        await storage.enqueue([make()], now=T0, key_ttl=None)
        [job] = await _claim(storage)
        assert await storage.set_progress(job.id, job.token, {"done": 3, "of": 10})
        assert not await storage.set_progress(job.id, job.token + 1, 0.9)
        stored = await storage.get(job.id)
        assert stored is not None and stored.progress == {"done": 3, "of": 10}

    # -- listing -------------------------------------------------------------------

    async def test_list_pages_newest_first_without_gaps(
        self, storage: Storage, make: _Maker
    ) -> None:
        jobs = [make() for _ in range(25)]
        await storage.enqueue(jobs, now=T0, key_ttl=None)
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            page = await storage.list(cursor=cursor, limit=10)
            pages += 1
            seen += [j.id for j in page.items]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert pages == 3
        assert seen == [j.id for j in reversed(jobs)]

    async def test_list_filters(self, storage: Storage, make: _Maker) -> None:
        jobs = [
            make("a", queue="q1", tenant="t1"),
            make("b", queue="q2", tenant="t1"),
            make("a", queue="q2", tenant="t2"),
        ]
        await storage.enqueue(jobs, now=T0, key_ttl=None)
        await storage.cancel(jobs[0].id, now=T0)

        async def ids(**filters: Any) -> list[str]:
            return [j.id for j in (await storage.list(**filters)).items]

        assert await ids(task="a") == [jobs[2].id, jobs[0].id]
        assert await ids(queue="q2") == [jobs[2].id, jobs[1].id]
        assert await ids(tenant="t1") == [jobs[1].id, jobs[0].id]
        assert await ids(status=JobStatus.CANCELLED) == [jobs[0].id]
        assert await ids(status=JobStatus.PENDING, task="a") == [jobs[2].id]
        assert await ids(task="zzz") == []

    async def test_counts_follow_every_transition(self, storage: Storage, make: _Maker) -> None:
        await storage.enqueue(
            [make(queue="a"), make(queue="a"), make(queue="b", max_attempts=1)],
            now=T0,
            key_ttl=None,
        )
        a1, a2 = await _claim(storage, queues=["a"])
        await storage.finish([_done(a1)], now=T0)
        await storage.cancel(a2.id, now=T0)
        await _claim(storage, queues=["b"])
        await storage.rescue(now=T0 + LEASE + 1)
        counts = await storage.counts()
        assert counts["a"][JobStatus.COMPLETED] == 1
        assert counts["a"][JobStatus.CANCELLED] == 1
        assert counts["a"][JobStatus.PENDING] == counts["a"][JobStatus.RUNNING] == 0
        assert counts["b"][JobStatus.PENDING] == 1  # rescued, not failed
        assert counts["b"][JobStatus.RUNNING] == 0

    # -- wake-up ---------------------------------------------------------------------

    async def test_listener_is_signalled_by_new_work_and_stays_signalled(
        self, storage: Storage, make: _Maker
    ) -> None:
        async with storage.listen() as listener:
            listener.clear()
            await storage.enqueue([make()], now=T0, key_ttl=None)
            with anyio.fail_after(5):
                await listener.wait()  # signalled before we waited: not lost
                await listener.wait()  # sticky until cleared

    async def test_listener_wakes_a_waiting_worker(self, storage: Storage, make: _Maker) -> None:
        async with storage.listen() as listener:
            listener.clear()
            woke = anyio.Event()

            async def waiter() -> None:
                await listener.wait()
                woke.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter)
                await anyio.wait_all_tasks_blocked()
                assert not woke.is_set()
                await storage.enqueue([make()], now=T0, key_ttl=None)
                with anyio.fail_after(5):
                    await woke.wait()

    # -- starts ----------------------------------------------------------------------

    async def test_mark_started_records_when_the_function_was_called(
        self, storage: Storage, make: _Maker
    ) -> None:
        await storage.enqueue([make(), make()], now=T0, key_ttl=None)
        a, b = await _claim(storage, now=T0)
        assert await storage.mark_started([(a.id, a.token, T0 + 2), (b.id, b.token + 5, T0)]) == [
            True,
            False,
        ]
        got = await storage.get(a.id)
        assert got is not None and got.started_at == pytest.approx(T0 + 2)
        [done] = await storage.finish(
            [Outcome(id=b.id, token=b.token, status=JobStatus.COMPLETED, started_at=T0 + 3)],
            now=T0 + 4,
        )
        assert done is not None and done.started_at == pytest.approx(T0 + 3)
        assert done.finished_at == pytest.approx(T0 + 4)

    # -- tasks a worker knows ----------------------------------------------------------

    async def test_claim_takes_only_tasks_the_worker_knows(
        self, storage: Storage, make: _Maker
    ) -> None:
        new, old = make("new_task"), make("old_task")
        await storage.enqueue([new, old], now=T0, key_ttl=None)
        got = await storage.claim(
            None, limit=10, now=T0, lease=LEASE, worker="old", tasks=["old_task"]
        )
        assert [j.id for j in got] == [old.id]
        assert await storage.next_run_at(None, ["old_task"]) is None
        assert await storage.next_run_at(None, ["new_task"]) == pytest.approx(T0)
        backlog = await storage.backlog()
        assert [(b.queue, b.task, b.pending) for b in backlog] == [("default", "new_task", 1)]
        [later] = await storage.claim(
            ["default"], limit=10, now=T0 + 1, lease=LEASE, worker="new", tasks=["new_task"]
        )
        assert later.id == new.id

    async def test_claim_by_task_keeps_priority_order(self, storage: Storage, make: _Maker) -> None:
        jobs = [
            make("a", priority=Priority.LOW),
            make("b", priority=Priority.CRITICAL),
            make("c", priority=Priority.HIGH),
            make("a", priority=Priority.HIGH),
        ]
        await storage.enqueue(jobs, now=T0, key_ttl=None)
        got = await storage.claim(None, limit=10, now=T0, lease=LEASE, worker="w", tasks=["a", "b"])
        assert [j.id for j in got] == [jobs[1].id, jobs[3].id, jobs[0].id]

    async def test_workers_are_known_until_they_expire(self, storage: Storage) -> None:
        info = WorkerInfo(
            name="w1",
            host="h",
            pid=1,
            tasks=("a", "b"),
            queues=("q",),
            concurrency=4,
            seen_at=T0,
            expires_at=T0 + LEASE,
        )
        await storage.register_worker(info)
        assert await storage.workers(now=T0 + 1) == [info]
        assert await storage.workers(now=T0 + LEASE + 1) == []
        await storage.unregister_worker("w1")
        assert await storage.workers(now=T0) == []

    # -- tenants -----------------------------------------------------------------------

    async def test_claim_keeps_each_tenant_under_its_running_cap(
        self, storage: Storage, make: _Maker
    ) -> None:
        acme = [make(tenant="acme") for _ in range(4)]
        other = make(tenant="other")
        await storage.enqueue([*acme, other], now=T0, key_ttl=None)
        caps = {"acme": 2}
        first = await storage.claim(
            None, limit=10, now=T0, lease=LEASE, worker="w", max_running=caps
        )
        assert sorted(j.id for j in first) == sorted([acme[0].id, acme[1].id, other.id])
        assert (
            await storage.claim(None, limit=10, now=T0, lease=LEASE, worker="w2", max_running=caps)
            == []
        )
        await storage.finish([_done(first[0])], now=T0)
        [next_one] = await storage.claim(
            None, limit=10, now=T0, lease=LEASE, worker="w2", max_running=caps
        )
        assert next_one.id == acme[2].id  # first in line all along

    async def test_enqueue_past_a_tenants_quota_stores_nothing(
        self, storage: Storage, make: _Maker
    ) -> None:
        quota = {"acme": 2}
        await storage.enqueue([make(tenant="acme")], now=T0, key_ttl=None, max_queued=quota)
        with pytest.raises(QuotaExceeded) as caught:
            await storage.enqueue(
                [make(tenant="acme"), make(tenant="acme")], now=T0, key_ttl=None, max_queued=quota
            )
        assert caught.value.tenant == "acme" and caught.value.limit == 2
        page = await storage.list(tenant="acme")
        assert len(page.items) == 1
        await storage.enqueue(
            [make(tenant="acme"), make(tenant="b")], now=T0, key_ttl=None, max_queued=quota
        )
        [running] = await _claim(storage, limit=1)
        assert running.tenant == "acme"  # running jobs no longer count as queued
        await storage.enqueue([make(tenant="acme")], now=T0, key_ttl=None, max_queued=quota)

    # -- the event log -------------------------------------------------------------------

    async def test_every_transition_is_in_the_event_log_in_order(
        self, storage: Storage, make: _Maker
    ) -> None:
        start = await storage.last_event_id()
        a, b, c = make(max_attempts=2), make(), make()
        await storage.enqueue([a, b, c], now=T0, key_ttl=None)
        ca, cb, _ = await _claim(storage, now=T0)
        await storage.mark_started([(ca.id, ca.token, T0 + 1)])
        await storage.set_progress(ca.id, ca.token, 0.5, now=T0 + 1.5)
        await storage.finish(
            [
                Outcome(
                    id=ca.id, token=ca.token, status=JobStatus.PENDING, error="E", run_at=T0 + 9
                ),
                Outcome(
                    id=cb.id,
                    token=cb.token,
                    status=JobStatus.COMPLETED,
                    result=7,
                    started_at=T0 + 1,
                ),
            ],
            now=T0 + 2,
        )
        await storage.rescue(now=T0 + LEASE + 1)
        await storage.cancel(c.id, now=T0 + LEASE + 2)
        entries = await storage.read_events(after=start)
        assert [(e.type, e.job.id) for e in entries] == [
            ("job.enqueued", a.id),
            ("job.enqueued", b.id),
            ("job.enqueued", c.id),
            ("job.started", a.id),
            ("job.progress", a.id),
            ("job.retrying", a.id),
            ("job.started", b.id),
            ("job.completed", b.id),
            ("job.rescued", c.id),
            ("job.cancelled", c.id),
        ]
        ids = [e.id for e in entries]
        assert ids == sorted(ids) and len(set(ids)) == len(ids) and ids[0] > start
        assert await storage.last_event_id() == ids[-1]
        assert all(e.origin == storage.origin for e in entries)
        completed = entries[7]
        assert completed.job.result == 7 and completed.at == pytest.approx(T0 + 2)
        assert entries[6].at == pytest.approx(T0 + 1)
        # resume from any id: nothing lost, nothing repeated
        assert await storage.read_events(after=ids[4], limit=2) == entries[5:7]
        assert await storage.read_events(after=ids[-1]) == []

    async def test_a_read_skipping_an_origin_leaves_out_its_entries_only(
        self, storage: Storage, make: _Maker
    ) -> None:
        start = await storage.last_event_id()
        await storage.enqueue([make() for _ in range(5)], now=T0, key_ttl=None)
        entries = await storage.read_events(after=start)
        assert len(entries) == 5
        assert await storage.read_events(after=start, skip_origin=storage.origin) == []
        assert await storage.read_events(after=start, skip_origin="another") == entries
        others = await storage.read_events(after=entries[1].id, limit=2, skip_origin="another")
        assert others == entries[2:4]

    async def test_a_refused_finish_writes_no_event(self, storage: Storage, make: _Maker) -> None:
        await storage.enqueue([make()], now=T0, key_ttl=None)
        [job] = await _claim(storage)
        await storage.cancel(job.id, now=T0)
        last = await storage.last_event_id()
        assert await storage.finish([_done(job)], now=T0) == [None]
        assert await storage.read_events(after=last) == []
