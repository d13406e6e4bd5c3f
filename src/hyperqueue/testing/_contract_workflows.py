"""The storage contract for workflows and batches (part of :class:`StorageContract`)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from msgspec.structs import replace

from hyperqueue._errors import InvalidTransition, WorkflowNotFound
from hyperqueue._models import Job, JobStatus, Outcome, Step, WorkflowRecord
from hyperqueue.abc import Storage

__all__ = ["WorkflowContract"]

T0 = 1_700_000_000.0
LEASE = 30.0
_ids = itertools.count(1)


def _flow(
    make: Any,
    graph: Mapping[str, Sequence[str]],
    *,
    concurrency: int | None = None,
    run_anyway: Sequence[str] = (),
    **fields: Any,
) -> tuple[WorkflowRecord, list[Job]]:
    """A workflow as a Queue builds it: ``graph`` maps each step (task) name to its
    parents, parents first; every step starts blocked on its parents."""
    workflow_id = f"wf-{next(_ids)}"
    ids = {name: make(name).id for name in graph}
    children: dict[str, list[str]] = {name: [] for name in graph}
    for name, parents in graph.items():
        for parent in parents:
            children[parent].append(ids[name])
    jobs = [
        replace(
            make(name, **fields),
            id=ids[name],
            step=Step(
                workflow=workflow_id,
                name=name,
                parents=tuple(ids[p] for p in parents),
                children=tuple(children[name]),
                on_parent_failure="run" if name in run_anyway else "cancel",
                waiting=len(parents),
                blocked=True,
                concurrency=concurrency,
            ),
        )
        for name, parents in graph.items()
    ]
    record = WorkflowRecord(id=workflow_id, steps=dict(ids), concurrency=concurrency, created_at=T0)
    return record, jobs


async def _claim(storage: Storage, limit: int = 100, now: float = T0) -> list[Job]:
    return await storage.claim(None, limit=limit, now=now, lease=LEASE, worker="w1")


async def _end(
    storage: Storage, job: Job, status: JobStatus = JobStatus.COMPLETED, **fields: Any
) -> Job:
    [done] = await storage.finish(
        [Outcome(id=job.id, token=job.token, status=status, **fields)], now=T0 + 1
    )
    assert done is not None
    return done


async def _statuses(storage: Storage, record: WorkflowRecord) -> dict[str, JobStatus]:
    found = await storage.get_workflow(record.id)
    assert found is not None
    stored, jobs = found
    by_id = {job.id: job for job in jobs}
    return {name: by_id[job_id].status for name, job_id in stored.steps.items()}


async def _step(storage: Storage, record: WorkflowRecord, name: str) -> Job:
    job = await storage.get(record.steps[name])
    assert job is not None
    return job


class WorkflowContract:
    """Workflows: release of dependents with the parent's end, concurrency, cancel, retry."""

    async def test_only_steps_without_parents_can_be_claimed(
        self, storage: Storage, make: Any
    ) -> None:
        record, jobs = _flow(make, {"a": [], "b": [], "c": ["a", "b"]})
        await storage.enqueue_workflow(record, jobs, now=T0)
        found = await storage.get_workflow(record.id)
        assert found is not None
        stored, steps = found
        assert stored == record
        assert [job.id for job in steps] == [job.id for job in jobs]
        assert all(job.status is JobStatus.PENDING for job in steps)
        claimed = await _claim(storage)
        assert sorted(job.task for job in claimed) == ["a", "b"]
        c = await _step(storage, record, "c")
        assert c.step is not None and c.step.blocked and c.step.waiting == 2
        # blocked steps are pending in counts and listings, but no worker's backlog
        counts = await storage.counts()
        assert counts["default"][JobStatus.PENDING] == 1
        page = await storage.list(status=JobStatus.PENDING)
        assert [job.id for job in page.items] == [c.id]
        assert [b.task for b in await storage.backlog()] == []

    async def test_a_child_is_released_when_its_last_parent_completes(
        self, storage: Storage, make: Any
    ) -> None:
        record, jobs = _flow(make, {"a": [], "b": [], "c": ["a", "b"]})
        await storage.enqueue_workflow(record, jobs, now=T0)
        a, b = sorted(await _claim(storage), key=lambda job: job.task)
        await _end(storage, a, result=1)
        c = await _step(storage, record, "c")
        assert c.step is not None and c.step.blocked and c.step.waiting == 1
        assert await _claim(storage) == []
        await _end(storage, b, result=2)
        [c] = await _claim(storage, now=T0 + 1)
        assert c.task == "c" and c.step is not None and not c.step.blocked
        assert c.run_at == T0 + 1

    async def test_a_failed_parent_cancels_its_descendants(
        self, storage: Storage, make: Any
    ) -> None:
        record, jobs = _flow(make, {"a": [], "b": ["a"], "c": ["b"], "d": []})
        start = await storage.last_event_id()
        await storage.enqueue_workflow(record, jobs, now=T0)
        claimed = {job.task: job for job in await _claim(storage)}
        await _end(storage, claimed["a"], JobStatus.FAILED, error="boom")
        statuses = await _statuses(storage, record)
        assert statuses == {
            "a": JobStatus.FAILED,
            "b": JobStatus.CANCELLED,
            "c": JobStatus.CANCELLED,
            "d": JobStatus.RUNNING,
        }
        b = await _step(storage, record, "b")
        c = await _step(storage, record, "c")
        assert b.error == "parent step 'a' failed"
        assert c.error == "parent step 'b' cancelled"
        assert b.finished_at == T0 + 1
        log = await storage.read_events(after=start)
        events = [e for e in log if e.type == "job.cancelled"]
        assert {e.job.id for e in events} == {b.id, c.id}

    async def test_a_step_that_runs_anyway_is_released_after_a_failure(
        self, storage: Storage, make: Any
    ) -> None:
        record, jobs = _flow(make, {"a": [], "b": [], "join": ["a", "b"]}, run_anyway=["join"])
        await storage.enqueue_workflow(record, jobs, now=T0)
        claimed = {job.task: job for job in await _claim(storage)}
        await _end(storage, claimed["a"], JobStatus.FAILED, error="boom")
        assert await _claim(storage) == []
        await _end(storage, claimed["b"])
        [join] = await _claim(storage, now=T0 + 1)
        assert join.task == "join"

    async def test_concurrency_caps_the_released_steps_in_order(
        self, storage: Storage, make: Any
    ) -> None:
        graph: dict[str, list[str]] = {f"s{i}": [] for i in range(5)}
        record, jobs = _flow(make, graph, concurrency=2)
        await storage.enqueue_workflow(record, jobs, now=T0)
        first = await _claim(storage)
        assert [job.task for job in first] == ["s0", "s1"]
        assert await _claim(storage) == []
        # a retry scheduled for later keeps its slot
        await _end(storage, first[0], JobStatus.PENDING, run_at=T0 + 50)
        assert await _claim(storage, now=T0 + 2) == []
        await _end(storage, first[1])
        assert [job.task for job in await _claim(storage, now=T0 + 2)] == ["s2"]

    async def test_cancel_workflow_cancels_every_step_not_ended(
        self, storage: Storage, make: Any
    ) -> None:
        record, jobs = _flow(make, {"a": [], "b": [], "c": ["a"]})
        await storage.enqueue_workflow(record, jobs, now=T0)
        claimed = {job.task: job for job in await _claim(storage, limit=1)}
        changed = await storage.cancel_workflow(record.id, now=T0 + 1)
        assert sorted(job.task for job in changed) == ["a", "b", "c"]
        assert set((await _statuses(storage, record)).values()) == {JobStatus.CANCELLED}
        # the running step's worker is fenced off
        late = Outcome(id=claimed["a"].id, token=claimed["a"].token, status=JobStatus.COMPLETED)
        assert await storage.finish([late], now=T0 + 2) == [None]
        assert await storage.cancel_workflow(record.id, now=T0 + 3) == []
        with pytest.raises(WorkflowNotFound):
            await storage.cancel_workflow("wf-nope", now=T0)

    async def test_cancelling_one_step_cancels_what_depends_on_it(
        self, storage: Storage, make: Any
    ) -> None:
        record, jobs = _flow(make, {"a": [], "b": ["a"], "c": []})
        await storage.enqueue_workflow(record, jobs, now=T0)
        await storage.cancel(record.steps["a"], now=T0 + 1)
        statuses = await _statuses(storage, record)
        assert statuses["b"] is JobStatus.CANCELLED and statuses["c"] is JobStatus.PENDING

    async def test_retry_workflow_runs_what_did_not_complete_and_keeps_results(
        self, storage: Storage, make: Any
    ) -> None:
        record, jobs = _flow(make, {"a": [], "b": ["a"], "c": ["b"], "d": []})
        await storage.enqueue_workflow(record, jobs, now=T0)
        claimed = {job.task: job for job in await _claim(storage)}
        with pytest.raises(InvalidTransition):
            await storage.retry_workflow(record.id, now=T0)
        await _end(storage, claimed["d"], result="kept")
        await _end(storage, claimed["a"], result=1)
        [b] = await _claim(storage, now=T0 + 1)
        await _end(storage, b, JobStatus.FAILED, error="boom")
        again = await storage.retry_workflow(record.id, now=T0 + 5)
        assert sorted(job.task for job in again) == ["b", "c"]
        [b] = await _claim(storage, now=T0 + 5)
        assert b.task == "b" and b.attempts == 1 and b.error is None
        await _end(storage, b, result=2)
        [c] = await _claim(storage, now=T0 + 5)
        await _end(storage, c, result=3)
        statuses = await _statuses(storage, record)
        assert set(statuses.values()) == {JobStatus.COMPLETED}
        d = await _step(storage, record, "d")
        assert d.result == "kept" and d.attempts == 1
        with pytest.raises(InvalidTransition):
            await storage.retry_workflow(record.id, now=T0 + 6)
        with pytest.raises(WorkflowNotFound):
            await storage.retry_workflow("wf-nope", now=T0)

    async def test_a_rescue_that_fails_a_step_cancels_its_children(
        self, storage: Storage, make: Any
    ) -> None:
        record, jobs = _flow(make, {"a": [], "b": ["a"]}, max_rescues=1)
        await storage.enqueue_workflow(record, jobs, now=T0)
        await _claim(storage)
        [lost] = await storage.rescue(now=T0 + LEASE + 1)
        assert lost.status is JobStatus.FAILED
        assert (await _statuses(storage, record))["b"] is JobStatus.CANCELLED

    async def test_unknown_workflow_reads_as_none(self, storage: Storage) -> None:
        assert await storage.get_workflow("wf-nope") is None

    async def test_retry_workflow_runs_again_a_join_that_ran_after_a_failure(
        self, storage: Storage, make: Any
    ) -> None:
        record, jobs = _flow(make, {"a": [], "b": [], "join": ["a", "b"]}, run_anyway=["join"])
        await storage.enqueue_workflow(record, jobs, now=T0)
        claimed = {job.task: job for job in await _claim(storage)}
        await _end(storage, claimed["a"], result=1)
        await _end(storage, claimed["b"], JobStatus.FAILED, error="boom")
        [join] = await _claim(storage, now=T0 + 1)
        await _end(storage, join, result="with a None")
        again = await storage.retry_workflow(record.id, now=T0 + 2)
        assert sorted(job.task for job in again) == ["b", "join"]
        a = await _step(storage, record, "a")
        assert a.status is JobStatus.COMPLETED and a.result == 1
        join = await _step(storage, record, "join")
        assert join.status is JobStatus.PENDING and join.result is None
        assert join.step is not None and join.step.blocked and join.step.waiting == 1
