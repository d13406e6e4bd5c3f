"""What SQLiteStorage adds to the contract: durability, sharing, batching."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import apsw
import pytest

import hyperqueue as hq
from hyperqueue._ids import IdFactory
from hyperqueue_sqlite import SQLiteStorage, _driver, _sql

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0
new_id = IdFactory()


def make(**fields: Any) -> hq.Job:
    fields.setdefault("created_at", T0)
    fields.setdefault("run_at", T0)
    return hq.Job(id=new_id(T0), task=fields.pop("task", "t"), **fields)


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[SQLiteStorage]:
    storage = SQLiteStorage(tmp_path / "jobs.db")
    await storage.open()
    yield storage
    await storage.aclose()


async def test_everything_is_still_there_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    first = SQLiteStorage(path)
    await first.open()
    jobs = [make(queue="q", key="k1", tenant="acme", max_attempts=2) for _ in range(1)]
    jobs += [make(args=(i, {"x": [1, 2]}), kwargs={"s": "é"}, max_attempts=2) for i in range(4)]
    await first.enqueue(jobs, now=T0, key_ttl=None)
    running = await first.claim(["default"], limit=2, now=T0, lease=30, worker="w")
    done = await first.finish(
        [
            hq.Outcome(
                id=running[0].id,
                token=running[0].token,
                status=hq.JobStatus.COMPLETED,
                result=[1, "a"],
            )
        ],
        now=T0 + 1,
    )
    await first.cancel(jobs[4].id, now=T0 + 2)
    assert await first.set_progress(running[1].id, running[1].token, {"done": 1})
    before = {job.id: await first.get(job.id) for job in jobs}
    counts = await first.counts()
    await first.aclose()

    second = SQLiteStorage(path)
    await second.open()
    try:
        assert {job.id: await second.get(job.id) for job in jobs} == before
        assert before[running[0].id] == done[0]
        assert await second.counts() == counts
        assert counts["default"][hq.JobStatus.RUNNING] == 1
        # the idempotency key survived too
        [again] = await second.enqueue(
            [make(queue="q", key="k1", tenant="acme")], now=T0 + 5, key_ttl=None
        )
        assert again.id == jobs[0].id
        # the running job's lease is still honoured, and still expires
        assert await second.rescue(now=T0 + 10) == []
        [rescued] = await second.rescue(now=T0 + 31)
        assert rescued.id == running[1].id and rescued.status is hq.JobStatus.PENDING
    finally:
        await second.aclose()


async def test_a_second_storage_on_the_file_sees_the_same_jobs_and_fences(tmp_path: Path) -> None:
    """Two storages on one file behave as two processes would (two connections each)."""
    a, b = SQLiteStorage(tmp_path / "jobs.db"), SQLiteStorage(tmp_path / "jobs.db")
    await a.open()
    await b.open()
    try:
        await a.enqueue([make() for _ in range(50)], now=T0, key_ttl=None)
        batches: list[list[hq.Job]] = []

        async def claimer(storage: SQLiteStorage, name: str) -> None:
            for _ in range(10):
                batch = await storage.claim(None, limit=3, now=T0, lease=30, worker=name)
                batches.append(batch)

        async with anyio.create_task_group() as tg:
            for i in range(3):
                tg.start_soon(claimer, a, f"a{i}")
                tg.start_soon(claimer, b, f"b{i}")
        ids = [job.id for batch in batches for job in batch]
        assert len(ids) == len(set(ids)) == 50
        job = batches[0][0]
        mine, other = (a, b) if job.worker and job.worker.startswith("a") else (b, a)
        await other.cancel(job.id, now=T0)
        outcome = hq.Outcome(id=job.id, token=job.token, status=hq.JobStatus.COMPLETED)
        assert await mine.finish([outcome], now=T0) == [None]
        assert (await b.counts())["default"][hq.JobStatus.RUNNING] == 49
    finally:
        await a.aclose()
        await b.aclose()


async def test_finishing_many_at_once_fences_each_job_on_its_own(tmp_path: Path) -> None:
    """Jobs that end together are finished by one statement; one that another process
    took from its worker meanwhile (cancelled, or rescued and claimed again) is refused
    alone, and the others are finished as if each had gone by itself."""
    a, b = SQLiteStorage(tmp_path / "jobs.db"), SQLiteStorage(tmp_path / "jobs.db")
    await a.open()
    await b.open()
    try:
        await a.enqueue([make() for _ in range(5)], now=T0, key_ttl=None)
        jobs = await a.claim(None, limit=5, now=T0, lease=30, worker="w")
        assert len(jobs) == 5
        await b.cancel(jobs[2].id, now=T0 + 1)  # the other process
        outcomes = [
            hq.Outcome(id=j.id, token=j.token, status=hq.JobStatus.COMPLETED, result=n)
            for n, j in enumerate(jobs)
        ]
        done = await a.finish(outcomes, now=T0 + 2)
        assert [d is None for d in done] == [False, False, True, False, False]
        for n, job in enumerate(jobs):
            stored = await b.get(job.id)
            if n == 2:
                assert stored.status is hq.JobStatus.CANCELLED and stored.result is None
            else:
                assert stored.status is hq.JobStatus.COMPLETED and stored.result == n
                assert stored.finished_at == T0 + 2 and stored == done[n]
        counts = (await b.counts())["default"]
        assert counts[hq.JobStatus.COMPLETED] == 4 and counts[hq.JobStatus.RUNNING] == 0
        # and all at once when none was taken
        await a.enqueue([make() for _ in range(3)], now=T0, key_ttl=None)
        jobs = await a.claim(None, limit=3, now=T0, lease=30, worker="w")
        failed = [
            hq.Outcome(id=j.id, token=j.token, status=hq.JobStatus.FAILED, error="boom")
            for j in jobs
        ]
        assert all(d is not None for d in await a.finish(failed, now=T0 + 3))
        assert {(await b.get(j.id)).error for j in jobs} == {"boom"}
    finally:
        await a.aclose()
        await b.aclose()


async def test_a_claim_reads_a_row_that_json_cannot_hold(storage: SQLiteStorage) -> None:
    """The claim reads its rows back as one JSON array; a REAL that JSON cannot hold (an
    infinity, written by hand or by another tool) must not make the job unclaimable."""
    job = make()
    await storage.enqueue([job], now=T0, key_ttl=None)
    await storage.execute_write("UPDATE jobs SET timeout = 9e999 WHERE id = ?", (job.id,))
    [claimed] = await storage.claim(None, limit=5, now=T0, lease=30, worker="w")
    assert claimed.id == job.id and claimed.timeout == math.inf
    assert claimed.status is hq.JobStatus.RUNNING and claimed.token == job.token + 1


async def test_a_listener_wakes_for_work_written_by_another_connection(tmp_path: Path) -> None:
    a = SQLiteStorage(tmp_path / "jobs.db")
    b = SQLiteStorage(tmp_path / "jobs.db", poll_interval=0.002)
    await a.open()
    await b.open()
    try:
        async with b.listen() as listener:
            listener.clear()
            # writes that make no work ready do not wake it
            await a.enqueue([make()], now=T0, key_ttl=None)
            with anyio.fail_after(5):
                await listener.wait()
            listener.clear()
            [job] = await a.claim(None, limit=1, now=T0, lease=30, worker="w")
            with anyio.move_on_after(0.05) as idle:
                await listener.wait()
            assert idle.cancelled_caught, "a claim is not new work"
            # a job sent back to pending is
            await a.finish(
                [
                    hq.Outcome(
                        id=job.id, token=job.token, status=hq.JobStatus.PENDING, run_at=T0 + 1
                    )
                ],
                now=T0,
            )
            with anyio.fail_after(5):
                await listener.wait()
    finally:
        await a.aclose()
        await b.aclose()


async def test_concurrent_writes_share_transactions(
    storage: SQLiteStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches: list[int] = []
    apply = _sql.apply_batch

    def counting(conn: _driver.Connection, ops: list[_sql.Op], origin: str) -> int | None:
        batches.append(len(ops))
        return apply(conn, ops, origin)

    monkeypatch.setattr(_sql, "apply_batch", counting)
    jobs = [make() for _ in range(200)]

    async def enqueue(job: hq.Job) -> None:
        await storage.enqueue([job], now=T0, key_ttl=None)

    async with anyio.create_task_group() as tg:
        for job in jobs:
            tg.start_soon(enqueue, job)
    assert sum(batches) == 200
    assert len(batches) < 20, batches
    assert (await storage.counts())["default"][hq.JobStatus.PENDING] == 200


async def test_one_bad_write_fails_alone(storage: SQLiteStorage) -> None:
    good = [make() for _ in range(5)]
    dup = make()
    await storage.enqueue([dup], now=T0, key_ttl=None)
    results: dict[str, object] = {}

    async def enqueue(job: hq.Job) -> None:
        try:
            results[job.id] = await storage.enqueue([job], now=T0, key_ttl=None)
        except hq.StorageError as exc:
            results[job.id] = exc

    async with anyio.create_task_group() as tg:
        tg.start_soon(enqueue, good[0])
        tg.start_soon(enqueue, good[1])
        tg.start_soon(enqueue, dup)  # same id again: a constraint error
        for job in good[2:]:
            tg.start_soon(enqueue, job)
    assert isinstance(results[dup.id], hq.StorageError)
    assert "UNIQUE" in str(results[dup.id])
    for job in good:
        assert results[job.id] == [job]
        assert await storage.get(job.id) == job


async def test_a_claim_scans_only_pending_jobs(storage: SQLiteStorage) -> None:
    """Finished jobs pile up; the claim must use the pending-only index, not the table."""
    conn = apsw.Connection(str(storage.path))
    try:
        for pairs in (1, 3, 12):  # 12 pairs: past the union, one scan of the index
            params: dict[str, object] = {f"q{i}": "default" for i in range(pairs)}
            params.update({f"t{i}": f"task{i}" for i in range(pairs)})
            params.update(now=T0, until=T0, worker="w", limit=10)
            plan = [
                row[3]
                for row in conn.execute("EXPLAIN QUERY PLAN " + _sql._pick_json(pairs), params)
            ]
            searches = [step for step in plan if step.startswith(("SEARCH", "SCAN"))]
            assert all(
                "jobs_ready" in s or "PRIMARY KEY" in s or "subquery" in s or "VALUES" in s
                for s in searches
            ), plan
        # the picked jobs are then updated and read back by their seq
        for sql, args in (
            (_sql._CLAIM_SEQS, {"until": T0, "worker": "w", "seqs": "[1, 2]"}),
            (_sql._CLAIMED, ("[1, 2]",)),
        ):
            plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, args)]
            jobs = [step for step in plan if step.startswith(("SEARCH", "SCAN")) and "jobs" in step]
            assert jobs == ["SEARCH jobs USING INTEGER PRIMARY KEY (rowid=?)"], plan
    finally:
        conn.close()


async def test_next_run_at_and_delays_across_many_queues(storage: SQLiteStorage) -> None:
    queues = [f"q{i}" for i in range(12)]
    jobs = [make(queue=q, run_at=T0 + 20 - i) for i, q in enumerate(queues)]
    await storage.enqueue(jobs, now=T0, key_ttl=None)
    assert await storage.next_run_at(queues) == T0 + 9
    assert await storage.next_run_at(queues[:2]) == T0 + 19
    assert await storage.next_run_at(None) == T0 + 9
    assert await storage.next_run_at([]) is None
    assert await storage.claim(queues, limit=5, now=T0, lease=30, worker="w") == []
    claimed = await storage.claim(queues, limit=5, now=T0 + 17, lease=30, worker="w")
    assert [j.queue for j in claimed] == ["q11", "q10", "q9", "q8", "q7"]
    claimed = await storage.claim(queues[:4], limit=5, now=T0 + 17, lease=30, worker="w")
    assert [j.queue for j in claimed] == ["q3"]


async def test_a_queue_runs_jobs_end_to_end(tmp_path: Path) -> None:
    queue = hq.Queue(SQLiteStorage(tmp_path / "jobs.db"))
    attempts: list[int] = []

    @queue.task
    async def add(a: int, b: int) -> int:
        return a + b

    @queue.task(retry=hq.Retry(attempts=3, backoff=0.001, jitter=0.0, on=(ValueError,)))
    async def flaky() -> str:
        attempts.append(1)
        await hq.report_progress({"try": len(attempts)})
        if len(attempts) < 3:
            raise ValueError("not yet")
        return "ok"

    async with queue, queue.worker(concurrency=4):
        job = await add.enqueue(1, 2)
        other = await flaky.enqueue()
        with anyio.fail_after(10):
            assert (await queue.wait(job.id, timeout=5)).result == 3
            done = await queue.wait(other.id, timeout=5)
        assert done.status is hq.JobStatus.COMPLETED and done.result == "ok"
        assert done.attempts == 3 and done.progress == {"try": 3}


async def test_recount_repairs_counts_after_a_hand_edit(storage: SQLiteStorage) -> None:
    job = make(queue="side")
    conn = apsw.Connection(str(storage.path))
    with conn:  # a job added by hand, as an operator might
        from hyperqueue_sqlite._rows import INSERT, job_to_row

        conn.execute(INSERT, job_to_row(job))
    conn.close()
    assert await storage.claim(None, limit=5, now=T0, lease=30, worker="w") == []
    await storage.recount()
    assert (await storage.counts())["side"][hq.JobStatus.PENDING] == 1
    [claimed] = await storage.claim(None, limit=5, now=T0, lease=30, worker="w")
    assert claimed.id == job.id


async def test_a_queue_on_sqlite_publishes_every_transition(storage: SQLiteStorage) -> None:
    queue = hq.Queue(storage)
    seen: list[str] = []
    queue.events.subscribe(lambda e: seen.append(type(e).__name__))

    @queue.task
    async def double(n: int) -> int:
        return 2 * n

    job = await double.enqueue(21)
    again = await double.options(key="k").enqueue(1)
    await double.options(key="k").enqueue(1)  # the key's earlier job: no new event
    with anyio.fail_after(10):
        async with queue.worker():
            assert (await queue.wait(job.id)).result == 42
            await queue.wait(again.id)
    assert seen.count("JobEnqueued") == 2
    assert seen.count("JobStarted") == seen.count("JobCompleted") == 2


class _CountingStorage(SQLiteStorage):
    """A SQLiteStorage recording its event-log reads: (after, skip_origin, ids read)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.reads: list[tuple[int, str | None, list[int]]] = []
        self.polls = 0

    async def read_events(
        self, *, after: int, limit: int = 1000, skip_origin: str | None = None
    ) -> list[hq.StoredEvent]:
        got = await super().read_events(after=after, limit=limit, skip_origin=skip_origin)
        self.reads.append((after, skip_origin, [e.id for e in got]))
        return got

    async def last_event_id(self) -> int:
        newest = await super().last_event_id()
        self.polls += 1
        return newest


async def test_two_queues_on_one_file_relay_each_others_events_never_their_own(
    tmp_path: Path,
) -> None:
    """Each queue's bus gets every event of the file once: its own as it makes them, the
    other's through its relay, which reads only the other's entries and, once it has
    passed a long run of its own, stops reading until something new is written."""
    spied = _CountingStorage(tmp_path / "jobs.db")
    other_storage = _CountingStorage(tmp_path / "jobs.db")
    mine = hq.Queue(spied, relay_interval=0.005)
    theirs = hq.Queue(other_storage, relay_interval=0.005)
    seen: dict[str, list[str]] = {"mine": [], "theirs": []}
    for name, queue in (("mine", mine), ("theirs", theirs)):
        queue.events.subscribe(lambda e, name=name: seen[name].append(e.job.id))

        @queue.task(name="t")
        async def noop() -> None:
            pass

    def many(n: int) -> list[hq.Submission]:
        return [hq.Submission(task="t") for _ in range(n)]

    async def until(condition: Any) -> None:
        with anyio.fail_after(10):
            while not condition():  # noqa: ASYNC110  (the relays poll the file)
                await anyio.sleep(0.005)

    async with mine, theirs:
        await until(lambda: spied.polls > 0 and other_storage.polls > 0)  # at the live end
        own = [e.job.id for e in await mine.enqueue_many(many(1500))]
        other = (await theirs.enqueue_many(many(1)))[0].job.id
        own += [e.job.id for e in await mine.enqueue_many(many(1500))]
        await until(lambda: other in seen["mine"] and len(seen["theirs"]) == 3001)
        polls = spied.polls
        await until(lambda: spied.polls >= polls + 2)  # a round that read, if any
        reads, polls = len(spied.reads), spied.polls
        await until(lambda: spied.polls >= polls + 5)
        assert len(spied.reads) == reads  # its own entries are behind it: no more reads
    assert sorted(seen["mine"]) == sorted([*own, other])  # each once
    assert sorted(seen["theirs"]) == sorted([*own, other])
    assert {skip for _, skip, _ in spied.reads} == {spied.origin}
    read_ids = [i for _, _, ids in spied.reads for i in ids]
    assert len(read_ids) == 1  # its relay read back none of its own 3000 entries
    afters = [after for after, _, _ in spied.reads]
    assert afters == sorted(afters)
