"""The storage contract for search, exact counts, bulk actions and error groups (part of
:class:`StorageContract`).

:meth:`hyperqueue.JobFilter.matches` is the reference: every backend's query must take
exactly the jobs it takes, and a bulk action must change each job as the one-job
operation (cancel, retry) would.
"""

from __future__ import annotations

from typing import Any

from hyperqueue._filter import JobFilter, fingerprint
from hyperqueue._models import Job, JobStatus, Outcome, Step, WorkflowRecord
from hyperqueue.abc import Storage

__all__ = ["SearchContract"]

T0 = 1_700_000_000.0
LEASE = 30.0
_PENDING = JobStatus.PENDING
_FAILED = JobStatus.FAILED


async def _fail(storage: Storage, jobs: list[Job], errors: list[str], *, at: float) -> list[Job]:
    """Claim ``jobs`` (the first pending ones of their tasks) and fail each with its
    error at ``at``."""
    tasks = sorted({j.task for j in jobs})
    claimed = {
        j.id: j
        for j in await storage.claim(
            None, limit=len(jobs), now=at, lease=LEASE, worker="w", tasks=tasks
        )
    }
    outcomes = [
        Outcome(id=j.id, token=claimed[j.id].token, status=_FAILED, error=e)
        for j, e in zip(jobs, errors, strict=True)
    ]
    done = await storage.finish(outcomes, now=at)
    assert all(d is not None for d in done)
    return [d for d in done if d is not None]


async def _all(storage: Storage, where: JobFilter, limit: int = 2) -> list[Job]:
    """Every page of a search, small pages to exercise the cursor."""
    out: list[Job] = []
    cursor: str | None = None
    while True:
        page = await storage.search(where, cursor=cursor, limit=limit)
        out.extend(page.items)
        if page.next_cursor is None:
            return out
        cursor = page.next_cursor


def _step(job_id: str, name: str, workflow: str, **fields: Any) -> Job:
    """A step as a Queue builds it: blocked until released."""
    step = Step(workflow=workflow, name=name, blocked=True, **fields)
    return Job(id=job_id, task=name, created_at=T0, run_at=T0, step=step)


class SearchContract:
    """Search, counts and bulk actions every backend answers alike."""

    async def test_search_and_count_agree_with_the_reference_filter(
        self, storage: Storage, make: Any
    ) -> None:
        jobs = [
            make("send_mail", queue="email", tenant="acme", now=T0),
            make("send_sms", queue="sms", tenant="acme", now=T0 + 100),
            make("resize", queue="images", tenant="globex", now=T0 + 200),
            make("send%_x", queue="email", now=T0 + 300),  # LIKE's wildcards, literally
            make("sendXmail", queue="email", now=T0 + 400),
        ]
        await storage.enqueue(jobs, now=T0, key_ttl=None)
        await _fail(storage, [jobs[2]], ["TimeoutError: SMTP Timeout after 3s"], at=T0 + 500)
        now = T0 + 1000
        queries = [
            "",
            "status:pending",
            "status:failed,completed",
            "queue:email",
            "tenant:acme",
            "task:send_*",
            "task:send%_*",
            "task:*mail",
            "task:resize",
            'error:"smtp timeout"',
            "since:700s",
            "until:700s",
            "since:950s until:500s",
            "smtp",
            "MAIL",
            "queue:email tenant:acme task:send_*",
            f"fingerprint:{fingerprint('resize', 'TimeoutError: SMTP Timeout after 9s')}",
        ]
        stored = {j.id: j for j in (await storage.list(limit=100)).items}
        for query in queries:
            where = JobFilter.parse(query, now=now)
            expected = sorted((j.id for j in stored.values() if where.matches(j)), reverse=True)
            assert [j.id for j in await _all(storage, where)] == expected, query
            assert await storage.count(where) == len(expected), query
        assert await storage.count(JobFilter.parse("task:send_*", now=now)) == 2
        assert await storage.count(JobFilter.parse("task:send%_*", now=now)) == 1
        assert await storage.count(JobFilter.parse("smtp", now=now)) == 1

    async def test_cancel_matching_cancels_live_matches_in_batches_newest_first(
        self, storage: Storage, make: Any
    ) -> None:
        jobs = [make("a", queue="q1") for _ in range(7)] + [make("a", queue="q2")]
        await storage.enqueue(jobs, now=T0, key_ttl=None)
        [running] = await storage.claim(["q1"], limit=1, now=T0, lease=LEASE, worker="w")
        after = await storage.last_event_id()
        where = JobFilter(queue="q1")
        seen: list[Job] = []
        before: str | None = None
        while True:
            batch = await storage.cancel_matching(where, now=T0 + 1, limit=3, before=before)
            assert [j.id for j in batch] == sorted((j.id for j in batch), reverse=True)
            seen.extend(batch)
            if len(batch) < 3:
                break
            before = batch[-1].id
        assert sorted(j.id for j in seen) == sorted(j.id for j in jobs[:7])
        assert all(j.status is JobStatus.CANCELLED and j.finished_at == T0 + 1 for j in seen)
        assert (await storage.get(jobs[7].id)).status is _PENDING  # type: ignore[union-attr]
        # the running job's claim is gone: its worker's finish is refused
        assert await storage.finish(
            [Outcome(id=running.id, token=running.token, status=JobStatus.COMPLETED)], now=T0 + 2
        ) == [None]
        events = await storage.read_events(after=after)
        assert sorted(e.job.id for e in events if e.type == "job.cancelled") == sorted(
            j.id for j in jobs[:7]
        )
        counts = await storage.counts()
        assert counts["q1"][JobStatus.CANCELLED] == 7 and counts["q1"][_PENDING] == 0
        # nothing left to cancel: a second run changes nothing
        assert await storage.cancel_matching(where, now=T0 + 3, limit=10) == []

    async def test_retry_and_discard_matching(self, storage: Storage, make: Any) -> None:
        jobs = [make("flaky") for _ in range(4)] + [make("other")]
        await storage.enqueue(jobs, now=T0, key_ttl=None)
        errors = [f"ConnectionError: refused by 10.0.0.{i}:5432" for i in range(4)] + ["E: x"]
        await _fail(storage, jobs, errors, at=T0 + 5)
        after = await storage.last_event_id()
        where = JobFilter(task="flaky")
        again = await storage.retry_matching(where, now=T0 + 10, limit=3)
        again += await storage.retry_matching(where, now=T0 + 10, limit=3, before=again[-1].id)
        assert sorted(j.id for j in again) == sorted(j.id for j in jobs[:4])
        for job in again:
            assert job.status is _PENDING and job.attempts == 0 and job.error is None
        events = await storage.read_events(after=after)
        assert sorted(e.job.id for e in events if e.type == "job.enqueued") == sorted(
            j.id for j in jobs[:4]
        )
        claimed = await storage.claim(None, limit=10, now=T0 + 11, lease=LEASE, worker="w")
        assert sorted(j.id for j in claimed) == sorted(j.id for j in jobs[:4])
        await storage.finish(
            [Outcome(id=j.id, token=j.token, status=JobStatus.COMPLETED) for j in claimed],
            now=T0 + 12,
        )
        # discard: final jobs only, gone for good, counts follow
        assert await storage.discard_matching(JobFilter(status=(_PENDING,)), limit=10) == []
        gone = await storage.discard_matching(JobFilter(), limit=10)
        assert sorted(j.id for j in gone) == sorted(j.id for j in jobs)
        assert [await storage.get(j.id) for j in jobs] == [None] * len(jobs)
        assert await storage.count(JobFilter()) == 0
        assert sum(sum(c.values()) for c in (await storage.counts()).values()) == 0

    async def test_bulk_actions_on_steps_settle_their_workflow(
        self, storage: Storage, make: Any
    ) -> None:
        ids = [make("extract").id, make("load").id]
        record = WorkflowRecord(id="wf-search", steps={"extract": ids[0], "load": ids[1]})
        steps = [
            _step(ids[0], "extract", "wf-search", children=(ids[1],)),
            _step(ids[1], "load", "wf-search", parents=(ids[0],), waiting=1),
        ]
        await storage.enqueue_workflow(record, steps, now=T0)
        # a step of a running workflow is not discarded, even when final itself
        cancelled = await storage.cancel_matching(JobFilter(task="extract"), now=T0, limit=10)
        assert [j.id for j in cancelled] == [ids[0]]
        load = await storage.get(ids[1])
        assert load is not None and load.status is JobStatus.CANCELLED  # its parent's end
        found = await storage.get_workflow("wf-search")
        assert found is not None and all(j.status.is_final for j in found[1])
        gone = await storage.discard_matching(JobFilter(), limit=10)
        assert sorted(j.id for j in gone) == sorted(ids)
        assert await storage.get_workflow("wf-search") is None

    async def test_discard_keeps_the_final_steps_of_a_live_workflow(
        self, storage: Storage, make: Any
    ) -> None:
        ids = [make("first").id, make("second").id]
        record = WorkflowRecord(id="wf-live", steps={"first": ids[0], "second": ids[1]})
        steps = [_step(ids[0], "first", "wf-live"), _step(ids[1], "second", "wf-live")]
        await storage.enqueue_workflow(record, steps, now=T0)
        await storage.cancel_matching(JobFilter(task="first"), now=T0, limit=10)
        assert await storage.discard_matching(JobFilter(), limit=10) == []
        assert await storage.get(ids[0]) is not None

    async def test_error_groups_by_fingerprint(self, storage: Storage, make: Any) -> None:
        jobs = [make("fetch") for _ in range(5)] + [make("parse") for _ in range(2)]
        await storage.enqueue(jobs, now=T0, key_ttl=None)
        await _fail(
            storage,
            jobs[:3],
            [
                f"TimeoutError: Timeout after {s}s for id {i}"
                for s, i in ((3.2, 1), (4.1, 22), (9, 3))
            ],
            at=T0 + 10,
        )
        await _fail(storage, jobs[3:4], ["TimeoutError: Timeout after 1s for id 9"], at=T0 + 30)
        await _fail(storage, jobs[4:5], ["KeyError: 'user'"], at=T0 + 20)
        await _fail(storage, jobs[5:], ["TimeoutError: Timeout after 2s"] * 2, at=T0 + 15)
        groups = await storage.error_groups(JobFilter())
        assert [(g.task, g.count) for g in groups] == [("fetch", 4), ("fetch", 1), ("parse", 2)]
        top = groups[0]
        assert top.fingerprint == fingerprint("fetch", "TimeoutError: Timeout after 5s for id 7")
        assert (top.error_type, top.message) == ("TimeoutError", "Timeout after #s for id #")
        assert (top.first_at, top.last_at, top.sample_job_id) == (T0 + 10, T0 + 30, jobs[3].id)
        where = JobFilter(fingerprint=top.fingerprint)
        assert await storage.count(where) == 4
        assert sorted(j.id for j in await _all(storage, where)) == sorted(j.id for j in jobs[:4])
        assert [g.task for g in await storage.error_groups(JobFilter(task="parse"))] == ["parse"]
        assert len(await storage.error_groups(JobFilter(), limit=1)) == 1
        # a retried job leaves its group; failing again with another error, it moves
        await storage.retry_matching(JobFilter(fingerprint=groups[1].fingerprint), now=T0, limit=9)
        assert [g.count for g in await storage.error_groups(JobFilter())] == [4, 2]
        await _fail(storage, jobs[4:5], ["TimeoutError: Timeout after 7s for id 8"], at=T0 + 40)
        again = await storage.error_groups(JobFilter())
        assert [(g.count, g.sample_job_id) for g in again] == [(5, jobs[4].id), (2, jobs[6].id)]
