"""Pruning finished jobs by age, archiving them first, and watching the disk."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import hyperqueue as hq
from hyperqueue._ids import IdFactory
from hyperqueue.testing import FakeClock
from hyperqueue_sqlite import RetentionPolicy, SQLiteStorage, read_archive

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0
DAY = 86400.0
new_id = IdFactory()


def make(**fields: object) -> hq.Job:
    return hq.Job(id=new_id(T0), task="t", created_at=T0, run_at=T0, **fields)  # type: ignore[arg-type]


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[SQLiteStorage]:
    storage = SQLiteStorage(tmp_path / "jobs.db")
    await storage.open()
    yield storage
    await storage.aclose()


async def finished(storage: SQLiteStorage, n: int, at: float, **fields: object) -> list[hq.Job]:
    await storage.enqueue([make(**fields) for _ in range(n)], now=T0, key_ttl=None)
    claimed = await storage.claim(None, limit=n, now=at, lease=30, worker="w")
    done = await storage.finish(
        [
            hq.Outcome(id=j.id, token=j.token, status=hq.JobStatus.COMPLETED, result={"n": i})
            for i, j in enumerate(claimed)
        ],
        now=at,
    )
    return [job for job in done if job is not None]


async def test_prune_archives_then_deletes_only_old_finished_jobs(
    storage: SQLiteStorage, tmp_path: Path
) -> None:
    old = await finished(storage, 25, T0, queue="a")
    recent = await finished(storage, 5, T0 + 9 * DAY, queue="a")
    await storage.enqueue([make(queue="a"), make(queue="a", key="k")], now=T0, key_ttl=60)
    [running] = await storage.claim(None, limit=1, now=T0, lease=30, worker="w")
    archive = tmp_path / "archive"

    report = await storage.prune(
        older_than=7 * DAY, now=T0 + 10 * DAY, archive_dir=archive, batch=10
    )

    assert report.pruned == report.archived == 25
    assert len(report.files) == 3  # batches of 10, 10 and 5, each its own file
    archived = [job for file in report.files for job in read_archive(file)]
    assert archived == old  # every field, as it was stored
    assert sorted(p.name for p in archive.iterdir()) == sorted(Path(f).name for f in report.files)
    for job in old:
        assert await storage.get(job.id) is None
    for job in recent:
        assert await storage.get(job.id) == job
    assert (await storage.get(running.id)) is not None
    counts = (await storage.counts())["a"]
    assert counts[hq.JobStatus.COMPLETED] == 5
    assert counts[hq.JobStatus.RUNNING] == 1 and counts[hq.JobStatus.PENDING] == 1
    assert report.keys_forgotten == 1  # the key's 60 s ran out long ago
    again = await storage.prune(older_than=7 * DAY, now=T0 + 10 * DAY, archive_dir=archive)
    assert again.pruned == 0 and again.files == ()


async def test_prune_without_archive(storage: SQLiteStorage) -> None:
    await finished(storage, 3, T0)
    report = await storage.prune(older_than=0, now=T0 + 1)
    assert report.pruned == 3 and report.archived == 0 and report.files == ()
    assert (await storage.counts())["default"][hq.JobStatus.COMPLETED] == 0


async def test_low_disk_prunes_harder_and_gives_space_back(storage: SQLiteStorage) -> None:
    await finished(storage, 400, T0, kwargs={"payload": "x" * 2000})
    await finished(storage, 10, T0 + 2 * DAY + 7000)
    now = T0 + 2 * DAY + 7200
    relaxed = RetentionPolicy(keep_for=7 * DAY, min_free_bytes=0)
    report = await storage.enforce_retention(relaxed, now=now)
    assert not report.low_disk and report.prune.pruned == 0
    assert report.before.database_bytes > 400 * 2000

    # no disk has this much free space: the policy falls back to low_disk_keep_for
    tight = RetentionPolicy(keep_for=7 * DAY, min_free_bytes=1 << 62, low_disk_keep_for=3600)
    report = await storage.enforce_retention(tight, now=now)
    assert report.low_disk
    assert report.prune.pruned == 400
    before, after = report.before, report.after
    assert after.database_bytes + after.wal_bytes < (before.database_bytes + before.wal_bytes) / 4
    assert report.after.free_bytes > 0 and report.after.total_bytes >= report.after.free_bytes
    assert (await storage.counts())["default"][hq.JobStatus.COMPLETED] == 10


async def test_maintenance_runs_on_a_live_database(storage: SQLiteStorage) -> None:
    await finished(storage, 50, T0)
    await storage.optimize()
    await storage.checkpoint()
    assert (await storage.disk_usage()).wal_bytes == 0
    await storage.prune(older_than=0, now=T0 + 1)
    assert (await storage.disk_usage()).free_pages_bytes > 0
    await storage.vacuum()
    assert (await storage.disk_usage()).free_pages_bytes == 0
    await storage.enqueue([make()], now=T0, key_ttl=None)
    assert len(await storage.claim(None, limit=5, now=T0, lease=30, worker="w")) == 1


async def runs_reach(service: hq.Service, runs: int) -> None:
    import anyio

    while service.stats().runs < runs:  # noqa: ASYNC110  (a thread's work, not an event)
        await anyio.sleep(0.01)


async def test_maintenance_service_prunes_on_its_schedule(
    storage: SQLiteStorage, tmp_path: Path
) -> None:
    import anyio

    from hyperqueue.testing import FakeClock
    from hyperqueue_sqlite import maintenance_service

    old = await finished(storage, 3, at=T0)
    clock = FakeClock(start=T0 + 6 * DAY)
    policy = RetentionPolicy(keep_for=7 * DAY, archive_dir=str(tmp_path / "archive"))
    service = maintenance_service(storage, policy=policy, interval=DAY, clock=clock)
    with anyio.fail_after(20):
        async with hq.Supervisor(clock=clock) as services:
            services.add(service)
            await clock.advance(0)  # the first run, at start: nothing is old enough yet
            # a run waits on the database's thread, which the fake clock cannot see
            # (on trio a task waiting on a thread counts as blocked): wait for the run
            await runs_reach(service, 1)
            assert (await storage.counts())["default"][hq.JobStatus.COMPLETED] == 3
            await clock.advance(1.5 * DAY)  # the next run starts: it prunes week-old jobs
            await runs_reach(service, 2)
    assert service.stats().runs == 2
    assert await storage.get(old[0].id) is None
    archived = [job for f in (tmp_path / "archive").iterdir() for job in read_archive(f)]
    assert sorted(j.id for j in archived) == sorted(j.id for j in old)
    assert service.stats().failures == 0


async def test_pruning_the_event_log_never_lets_an_id_come_back(storage: SQLiteStorage) -> None:
    jobs = await finished(storage, 3, at=T0)
    last = await storage.last_event_id()
    assert last > 0
    report = await storage.prune(older_than=0, now=T0 + DAY)
    assert report.pruned == 3 and report.events_pruned > 0
    assert await storage.last_event_id() == last  # the newest entry is kept
    await storage.enqueue([make()], now=T0 + DAY, key_ttl=None)
    [entry] = await storage.read_events(after=last)
    assert entry.id == last + 1 and entry.type == "job.enqueued"
    for job in jobs:
        assert await storage.get(job.id) is None


async def test_prune_keeps_the_steps_of_a_running_workflow(storage: SQLiteStorage) -> None:
    queue = hq.Queue(storage, clock=FakeClock(T0))

    @queue.task
    async def first() -> int:
        return 1

    @queue.task
    async def second(n: int) -> int:
        return n + 1

    flow = hq.Workflow()
    flow.add(second, flow.add(first))
    run = await queue.enqueue_workflow(flow)
    [step] = await storage.claim(None, limit=5, now=T0, lease=30, worker="w")
    await storage.finish(
        [hq.Outcome(id=step.id, token=step.token, status=hq.JobStatus.COMPLETED, result=1)],
        now=T0,
    )
    # the first step finished long ago, but its result is the second step's input
    report = await storage.prune(older_than=DAY, now=T0 + 30 * DAY)
    assert report.pruned == 0
    assert (await queue.get_workflow(run.id)).statuses["first"] is hq.JobStatus.COMPLETED
    [step] = await storage.claim(None, limit=5, now=T0 + 30 * DAY, lease=30, worker="w")
    assert step.task == "second"
    await storage.finish(
        [hq.Outcome(id=step.id, token=step.token, status=hq.JobStatus.COMPLETED, result=2)],
        now=T0 + 30 * DAY,
    )
    report = await storage.prune(older_than=DAY, now=T0 + 60 * DAY)
    assert report.pruned == 2
    with pytest.raises(hq.WorkflowNotFound):
        await queue.get_workflow(run.id)
