"""A hypothesis state machine of the job lifecycle against a simple model.

The model is a dict of job records; the rules drive the storage the way workers and
operators do (enqueue, claim, complete, fail, retry later, release, cancel, retry,
lease expiry and rescue) while time moves. After every step the storage must agree
with the model on every job's status and attempts and on the counts; claims must
follow priority, then run_at, then first in first out.
"""

from __future__ import annotations

from dataclasses import dataclass

import anyio
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    multiple,
    rule,
)

import hyperqueue as hq
from hyperqueue._ids import IdFactory

T0 = 1_700_000_000.0
LEASE = 10.0


@dataclass
class Record:
    status: hq.JobStatus
    rank: int
    run_at: float
    seq: int
    attempts: int
    max_attempts: int
    token: int = 0
    lease_until: float = 0.0
    rescues: int = 0


def run(coro_fn, *args):  # type: ignore[no-untyped-def]
    async def main():  # type: ignore[no-untyped-def]
        return await coro_fn(*args)

    return anyio.run(main)


class Lifecycle(RuleBasedStateMachine):
    running = Bundle("running")

    def __init__(self) -> None:
        super().__init__()
        self.storage = hq.MemoryStorage()
        self.ids = IdFactory()
        self.now = T0
        self.seq = 0
        self.model: dict[str, Record] = {}

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    @rule(
        priority=st.sampled_from(list(hq.Priority)),
        delay=st.sampled_from([0.0, 0.0, 1.0, 5.0]),
        max_attempts=st.integers(1, 3),
    )
    def enqueue(self, priority: hq.Priority, delay: float, max_attempts: int) -> None:
        job = hq.Job(
            id=self.ids(self.now),
            task="t",
            priority=priority,
            max_attempts=max_attempts,
            created_at=self.now,
            run_at=self.now + delay,
        )
        run(lambda: self.storage.enqueue([job], now=self.now, key_ttl=None))
        self.model[job.id] = Record(
            hq.JobStatus.PENDING, priority.rank, job.run_at, self._next_seq(), 0, max_attempts
        )

    @rule(target=running, limit=st.integers(1, 4))
    def claim(self, limit: int):  # type: ignore[no-untyped-def]
        due = sorted(
            (r.rank, r.run_at, r.seq, job_id)
            for job_id, r in self.model.items()
            if r.status is hq.JobStatus.PENDING and r.run_at <= self.now
        )
        expected = [job_id for *_, job_id in due[:limit]]
        claimed = run(
            lambda: self.storage.claim(None, limit=limit, now=self.now, lease=LEASE, worker="w")
        )
        assert [j.id for j in claimed] == expected
        for job in claimed:
            record = self.model[job.id]
            record.status = hq.JobStatus.RUNNING
            record.attempts += 1
            assert job.attempts == record.attempts
            assert job.token > record.token
            record.token = job.token
            record.lease_until = self.now + LEASE
        return multiple(*[(j.id, j.token) for j in claimed])

    def _finish(self, claim: tuple[str, int], outcome: hq.Outcome) -> hq.Job | None:
        [stored] = run(lambda: self.storage.finish([outcome], now=self.now))
        record = self.model[claim[0]]
        live = record.status is hq.JobStatus.RUNNING and record.token == claim[1]
        assert (stored is not None) == live, "fencing must accept exactly the live claim"
        return stored

    @rule(claim=consumes(running))
    def complete(self, claim: tuple[str, int]) -> None:
        out = hq.Outcome(id=claim[0], token=claim[1], status=hq.JobStatus.COMPLETED)
        if self._finish(claim, out) is not None:
            self.model[claim[0]].status = hq.JobStatus.COMPLETED

    @rule(claim=consumes(running))
    def fail(self, claim: tuple[str, int]) -> None:
        out = hq.Outcome(id=claim[0], token=claim[1], status=hq.JobStatus.FAILED, error="x")
        if self._finish(claim, out) is not None:
            self.model[claim[0]].status = hq.JobStatus.FAILED

    @rule(claim=consumes(running), backoff=st.sampled_from([0.0, 1.0, 3.0]))
    def retry_later(self, claim: tuple[str, int], backoff: float) -> None:
        out = hq.Outcome(
            id=claim[0], token=claim[1], status=hq.JobStatus.PENDING, run_at=self.now + backoff
        )
        if self._finish(claim, out) is not None:
            record = self.model[claim[0]]
            record.status = hq.JobStatus.PENDING
            record.run_at = self.now + backoff
            record.seq = self._next_seq()

    @rule(claim=consumes(running))
    def release(self, claim: tuple[str, int]) -> None:
        out = hq.Outcome(id=claim[0], token=claim[1], status=hq.JobStatus.PENDING, released=True)
        if self._finish(claim, out) is not None:
            record = self.model[claim[0]]
            record.status = hq.JobStatus.PENDING
            record.attempts -= 1
            record.run_at = self.now
            record.seq = self._next_seq()

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        if not self.model:
            return
        job_id = data.draw(st.sampled_from(sorted(self.model)))
        record = self.model[job_id]
        if record.status in (hq.JobStatus.COMPLETED, hq.JobStatus.FAILED):
            with pytest.raises(hq.InvalidTransition):
                run(lambda: self.storage.cancel(job_id, now=self.now))
            return
        job = run(lambda: self.storage.cancel(job_id, now=self.now))
        assert job.status is hq.JobStatus.CANCELLED
        record.status = hq.JobStatus.CANCELLED

    @rule(data=st.data())
    def retry(self, data: st.DataObject) -> None:
        if not self.model:
            return
        job_id = data.draw(st.sampled_from(sorted(self.model)))
        record = self.model[job_id]
        if record.status not in (hq.JobStatus.FAILED, hq.JobStatus.CANCELLED):
            with pytest.raises(hq.InvalidTransition):
                run(lambda: self.storage.retry(job_id, now=self.now))
            return
        run(lambda: self.storage.retry(job_id, now=self.now))
        record.status = hq.JobStatus.PENDING
        record.attempts = 0
        record.rescues = 0
        record.run_at = self.now
        record.seq = self._next_seq()

    @rule(seconds=st.sampled_from([0.5, 1.0, 4.0, 11.0]))
    def advance(self, seconds: float) -> None:
        self.now += seconds

    @rule()
    def rescue(self) -> None:
        rescued = run(lambda: self.storage.rescue(now=self.now))
        expired = {
            job_id
            for job_id, r in self.model.items()
            if r.status is hq.JobStatus.RUNNING and r.lease_until <= self.now
        }
        assert {j.id for j in rescued} == expired
        for job in rescued:
            record = self.model[job.id]
            record.rescues += 1  # a lost worker spends no attempt; the 3rd loss fails
            if record.rescues >= 3:
                record.status = hq.JobStatus.FAILED
            else:
                record.status = hq.JobStatus.PENDING
                record.attempts -= 1
                record.run_at = self.now
                record.seq = self._next_seq()
            assert job.status is record.status
            assert job.rescues == record.rescues

    @invariant()
    def storage_agrees_with_the_model(self) -> None:
        for job_id, record in self.model.items():
            job = run(lambda job_id=job_id: self.storage.get(job_id))
            assert job is not None
            assert job.status is record.status, job_id
            assert job.attempts == record.attempts
        counts = run(self.storage.counts).get("default", {})
        for status in hq.JobStatus:
            expected = sum(1 for r in self.model.values() if r.status is status)
            assert counts.get(status, 0) == expected, status


TestLifecycle = Lifecycle.TestCase
TestLifecycle.settings = settings(max_examples=250, stateful_step_count=50, deadline=None)
