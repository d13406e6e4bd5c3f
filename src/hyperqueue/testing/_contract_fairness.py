"""The storage contract for fair share between tenants (part of :class:`StorageContract`).

Among the due pending jobs a claim may take (after its queue and task filters, paused
queues and tenant caps), the claim order is ``(priority rank, k, run_at, seq)``, where
``k`` is the tenant's running jobs (over the whole storage: every queue, worker and
process) plus the job's place (0, 1, 2, ...) in its tenant's own line: the due pending
jobs of the same tenant and priority in ``(run_at, seq)`` order. Both are read when the
claim starts. Jobs without a tenant are one tenant of their own, with their own running
count. So a tenant that enqueued 10,000 jobs does not starve one that enqueued 5 after
it, even when workers claim one job at a time: a claim of one takes the oldest due job
of the tenant with the fewest running jobs, a higher priority still goes first, and
with one tenant (or none) the order is FIFO.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence

import anyio

from hyperqueue._models import Job, JobStatus, Outcome, Priority
from hyperqueue.abc import Storage

__all__ = ["FairShareContract"]

T0 = 1_700_000_000.0
LEASE = 30.0
Make = Callable[..., Job]


async def _claim_jobs(
    storage: Storage,
    limit: int = 100,
    *,
    now: float = T0,
    queues: Sequence[str] | None = None,
    max_running: Mapping[str, int] | None = None,
) -> list[Job]:
    return await storage.claim(
        queues, limit=limit, now=now, lease=LEASE, worker="w1", max_running=max_running
    )


async def _claim(
    storage: Storage,
    limit: int = 100,
    *,
    now: float = T0,
    queues: Sequence[str] | None = None,
    max_running: Mapping[str, int] | None = None,
) -> list[str]:
    jobs = await _claim_jobs(storage, limit, now=now, queues=queues, max_running=max_running)
    return [job.id for job in jobs]


async def _finish(storage: Storage, jobs: Sequence[Job]) -> None:
    done = [Outcome(id=job.id, token=job.token, status=JobStatus.COMPLETED) for job in jobs]
    assert all(await storage.finish(done, now=T0))


def fair_order(
    jobs: Sequence[Job], seq: Mapping[str, int], running: Mapping[str | None, int] | None = None
) -> list[Job]:
    """``jobs`` (due and pending) in claim order: the rule of this module, in plain
    Python. ``seq`` gives each job's place in enqueue order, ``running`` each tenant's
    running jobs (None: the jobs without a tenant; a tenant left out has none)."""
    running = running or {}
    lines: dict[tuple[int, str | None], list[Job]] = {}
    for job in sorted(jobs, key=lambda j: (j.run_at, seq[j.id])):
        lines.setdefault((job.priority.rank, job.tenant), []).append(job)
    k = {
        job.id: running.get(tenant, 0) + place
        for (_, tenant), line in lines.items()
        for place, job in enumerate(line)
    }
    return sorted(jobs, key=lambda j: (j.priority.rank, k[j.id], j.run_at, seq[j.id]))


def _ids(jobs: Sequence[Job]) -> list[str]:
    return [job.id for job in jobs]


class FairShareContract:
    """Turns between tenants by their running jobs, under priority and tenant caps."""

    async def test_a_claim_takes_turns_between_tenants(self, storage: Storage, make: Make) -> None:
        """A enqueued 20 jobs, then B 3 and two jobs without a tenant: B's and the
        untenanted jobs do not wait for all of A's. The jobs a claim took run on, so
        the next claim starts with the tenant that has fewer running."""
        a = [make(tenant="A") for _ in range(20)]
        b = [make(tenant="B") for _ in range(3)]
        none = [make() for _ in range(2)]
        for batch in (a, b, none):
            await storage.enqueue(batch, now=T0, key_ttl=None)
        assert await _claim(storage, 4) == _ids([a[0], b[0], none[0], a[1]])
        # running: A 2, B 1, none 1; so B's and the untenanted job come first
        assert await _claim(storage, 4) == _ids([b[1], none[1], a[2], b[2]])
        assert await _claim(storage, 4) == _ids(a[3:7])
        assert await _claim(storage) == _ids(a[7:])
        assert await _claim(storage) == []

    async def test_claims_of_one_job_take_turns_by_running_jobs(
        self, storage: Storage, make: Make
    ) -> None:
        """A busy pool claims one job whenever a slot frees up: each claim takes the
        oldest due job of the tenant with the fewest running jobs, so B's few jobs do
        not wait behind A's backlog, and a finish gives its tenant the next turn."""
        a = [make(tenant="A") for _ in range(20)]
        b = [make(tenant="B") for _ in range(3)]
        await storage.enqueue(a, now=T0, key_ttl=None)
        await storage.enqueue(b, now=T0, key_ttl=None)
        running: dict[str, Job] = {}

        async def one() -> str:
            [job] = await _claim_jobs(storage, 1)
            running[job.id] = job
            return job.id

        # ties in running jobs go to the oldest job: A's, enqueued first
        assert [await one() for _ in range(7)] == _ids([a[0], b[0], a[1], b[1], a[2], b[2], a[3]])
        # running: A 4, B 3. B enqueues more: it has fewer running, so it goes first
        more = [make(tenant="B") for _ in range(3)]
        await storage.enqueue(more, now=T0, key_ttl=None)
        assert [await one() for _ in range(4)] == _ids([more[0], a[4], more[1], a[5]])
        # running: A 6, B 5. Four of A's jobs finish: A has 2 running, so A goes first
        # until it is level with B again; on a tie the oldest job (A's) goes first
        await _finish(storage, [running.pop(job.id) for job in a[:4]])
        assert [await one() for _ in range(5)] == _ids([a[6], a[7], a[8], a[9], more[2]])
        assert [await one() for _ in range(2)] == _ids(a[10:12])

    async def test_jobs_without_a_tenant_count_their_running_jobs(
        self, storage: Storage, make: Make
    ) -> None:
        """The jobs without a tenant are one tenant, whose running jobs count as well,
        in every queue: a claim in another queue sees them."""
        none = [make(queue="busy") for _ in range(3)]
        await storage.enqueue(none, now=T0, key_ttl=None)
        busy = await _claim_jobs(storage, 3)
        a = [make(queue="q", tenant="A") for _ in range(6)]
        later = [make(queue="q") for _ in range(2)]
        await storage.enqueue([*a, *later], now=T0, key_ttl=None)
        # untenanted: 3 running, so later[0] comes at k = 3 (after a[3], an older job)
        assert await _claim(storage, 5, queues=["q"]) == _ids([*a[:4], later[0]])
        await _finish(storage, busy)  # untenanted: 1 running (later[0]), A: 4
        assert await _claim(storage, 1, queues=["q"]) == [later[1].id]
        assert await _claim(storage, queues=["q"]) == _ids(a[4:])

    async def test_priority_goes_before_fair_share(self, storage: Storage, make: Make) -> None:
        a_normal = [make(tenant="A") for _ in range(3)]
        a_high = [make(tenant="A", priority=Priority.HIGH) for _ in range(2)]
        b_high = [make(tenant="B", priority=Priority.HIGH) for _ in range(2)]
        b_normal = make(tenant="B")
        await storage.enqueue([*a_normal, *a_high], now=T0, key_ttl=None)
        await storage.enqueue([*b_high, b_normal], now=T0, key_ttl=None)
        expected = [a_high[0], b_high[0], a_high[1], b_high[1]]
        expected += [a_normal[0], b_normal, a_normal[1], a_normal[2]]
        assert await _claim(storage) == _ids(expected)

    async def test_without_tenants_or_with_one_the_order_is_fifo(
        self, storage: Storage, make: Make
    ) -> None:
        for tenant, queue in ((None, "plain"), ("only", "single")):
            jobs = [
                make(queue=queue, tenant=tenant, priority=Priority(p), run_at=T0 - n % 3)
                for n, p in enumerate(["normal", "low", "normal", "high", "normal", "low"] * 3)
            ]
            await storage.enqueue(jobs, now=T0, key_ttl=None)
            fifo = sorted(jobs, key=lambda j: (j.priority.rank, j.run_at, jobs.index(j)))
            claimed = await _claim(storage, 5, queues=[queue])
            claimed += await _claim(storage, queues=[queue])
            assert claimed == _ids(fifo)

    async def test_tenant_caps_hold_under_fair_share(self, storage: Storage, make: Make) -> None:
        """A capped tenant takes its turns until it reaches its cap, then is skipped;
        its next job stays first in its line."""
        a = [make(tenant="A") for _ in range(6)]
        b = [make(tenant="B") for _ in range(3)]
        c = [make(tenant="C") for _ in range(2)]
        for batch in (a, b, c):
            await storage.enqueue(batch, now=T0, key_ttl=None)
        caps = {"A": 2}
        first = await _claim_jobs(storage, 10, max_running=caps)
        assert _ids(first) == _ids([a[0], b[0], c[0], a[1], b[1], c[1], b[2]])
        assert await _claim(storage, max_running=caps) == []
        await _finish(storage, first[:1])
        d = make(tenant="D")
        await storage.enqueue([d], now=T0, key_ttl=None)
        # A has 1 running, D none: D's turn first, then A's one free slot
        assert await _claim(storage, max_running=caps) == _ids([d, a[2]])

    async def test_jobs_not_yet_due_take_no_turn(self, storage: Storage, make: Make) -> None:
        later = make(tenant="A", run_at=T0 + 10)
        a = [make(tenant="A") for _ in range(2)]
        b = [make(tenant="B") for _ in range(2)]
        await storage.enqueue([later, *a, *b], now=T0, key_ttl=None)
        assert await _claim(storage) == _ids([a[0], b[0], a[1], b[1]])
        assert await _claim(storage, now=T0 + 10) == [later.id]

    async def test_cancelled_jobs_take_no_turn_and_a_retried_one_queues_again(
        self, storage: Storage, make: Make
    ) -> None:
        a = [make(tenant="A") for _ in range(3)]
        b = [make(tenant="B") for _ in range(2)]
        await storage.enqueue([*a, *b], now=T0, key_ttl=None)
        await storage.cancel(a[0].id, now=T0)
        await storage.cancel(b[0].id, now=T0)
        await storage.retry(a[0].id, now=T0)  # pending again, last in its tenant's line
        assert await _claim(storage) == _ids([a[1], b[1], a[2], a[0]])
        assert await _claim(storage) == []

    async def test_concurrent_fair_claims_are_disjoint(self, storage: Storage, make: Make) -> None:
        jobs = [make(tenant=f"t{n % 3}") for n in range(60)]
        await storage.enqueue(jobs, now=T0, key_ttl=None)
        claimed: list[str] = []

        async def claimer() -> None:
            claimed.extend(await _claim(storage, 20))

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(claimer)
        claimed += await _claim(storage)  # what a claim skipped while another held it
        assert sorted(claimed) == sorted(job.id for job in jobs)

    async def test_claims_follow_the_rule_on_random_workloads(
        self, storage: Storage, make: Make
    ) -> None:
        """Random tenants, priorities, tasks, run_at (some not yet due), caps, claim
        sizes and finishes: every claim returns exactly the first jobs of the rule's
        order over the jobs pending then, with the running jobs then, in that order,
        skipping the jobs of tenants at their cap."""
        running: dict[str, Job] = {}  # over every seed: running jobs count in every queue
        for seed in range(8):
            rng = random.Random(seed)
            queue, capped = f"random-{seed}", f"a{seed}"
            caps = {capped: rng.randint(1, 4)} if seed % 2 else None
            seq: dict[str, int] = {}
            waiting: list[Job] = []
            for _ in range(rng.randint(2, 4)):
                batch = [
                    make(
                        rng.choice(["t", "u"]),
                        queue=queue,
                        tenant=rng.choice([None, capped, "b", "c"]),
                        priority=rng.choice([Priority.HIGH, Priority.NORMAL, Priority.LOW]),
                        run_at=T0 + rng.choice([-3, -2, -1, 0, 0, 0, 5]),
                    )
                    for _ in range(rng.randint(1, 12))
                ]
                await storage.enqueue(batch, now=T0, key_ttl=None)
                seq.update((job.id, len(seq)) for job in batch)
                waiting += batch
            for now in (T0, T0 + 5):
                while True:
                    limit = rng.randint(1, 6)
                    counts: dict[str | None, int] = {}
                    for job in running.values():
                        counts[job.tenant] = counts.get(job.tenant, 0) + 1
                    taken = counts.get(capped, 0)
                    expected: list[str] = []
                    due = [j for j in waiting if j.run_at <= now]
                    for job in fair_order(due, seq, counts):
                        if len(expected) == limit:
                            break
                        if caps and job.tenant == capped:
                            if taken >= caps[capped]:
                                continue
                            taken += 1
                        expected.append(job.id)
                    claimed = await _claim_jobs(
                        storage, limit, now=now, queues=[queue], max_running=caps
                    )
                    assert _ids(claimed) == expected
                    if not claimed:
                        break
                    running.update((job.id, job) for job in claimed)
                    waiting = [job for job in waiting if job.id not in running]
                    if rng.random() < 0.4:  # some jobs end, which changes whose turn it is
                        ending = rng.sample(sorted(running), rng.randint(1, len(running)))
                        await _finish(storage, [running.pop(job_id) for job_id in ending])
            assert all(job.tenant == capped for job in waiting)
            assert caps or waiting == []
