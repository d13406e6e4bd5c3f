"""Retention on PostgreSQL: finished jobs archived then pruned in batches, as on SQLite;
workflow steps kept while their workflow runs; the event log never gives an id twice;
two pruners at once never archive a job twice; ``serve --dsn`` runs it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

import hyperqueue as hq
from hyperqueue._ids import IdFactory
from hyperqueue.testing import FakeClock
from hyperqueue_postgres import PostgresStorage, read_archive, retention_service

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0
DAY = 86400.0
new_id = IdFactory()


def make(**fields: object) -> hq.Job:
    return hq.Job(id=new_id(T0), task="t", created_at=T0, run_at=T0, **fields)  # type: ignore[arg-type]


@pytest.fixture
async def storage(pg_module_dsn: str) -> AsyncIterator[PostgresStorage]:
    storage = PostgresStorage(pg_module_dsn)
    await storage.open()
    yield storage
    await storage.aclose()


async def finished(
    storage: PostgresStorage,
    n: int,
    at: float,
    status: hq.JobStatus = hq.JobStatus.COMPLETED,
    **fields: object,
) -> list[hq.Job]:
    await storage.enqueue([make(**fields) for _ in range(n)], now=T0, key_ttl=None)
    claimed = await storage.claim(None, limit=n, now=at, lease=30, worker="w")
    done = await storage.finish(
        [
            hq.Outcome(id=j.id, token=j.token, status=status, result={"n": i}, error="e")
            for i, j in enumerate(claimed)
        ],
        now=at,
    )
    return [job for job in done if job is not None]


async def test_prune_archives_then_deletes_only_old_finished_jobs(
    storage: PostgresStorage, tmp_path: Path
) -> None:
    old = await finished(storage, 25, T0, queue="a")
    old_failed = await finished(storage, 2, T0, hq.JobStatus.FAILED, queue="a")
    recent = await finished(storage, 5, T0 + 9 * DAY, queue="a")
    await storage.enqueue([make(queue="a"), make(queue="a", key="k")], now=T0, key_ttl=60)
    [running] = await storage.claim(None, limit=1, now=T0, lease=30, worker="w")
    archive = tmp_path / "archive"

    report = await storage.prune(
        older_than=7 * DAY, now=T0 + 10 * DAY, archive_dir=archive, batch=10
    )

    assert report.cutoff == T0 + 3 * DAY
    assert report.pruned == report.archived == 27
    assert len(report.files) == 4  # completed: 10, 10, 5; failed: 2, each its own file
    archived = [job for file in report.files for job in read_archive(file)]
    assert sorted(archived, key=lambda j: j.id) == sorted(old + old_failed, key=lambda j: j.id)
    assert sorted(p.name for p in archive.iterdir()) == sorted(Path(f).name for f in report.files)
    for job in old + old_failed:
        assert await storage.get(job.id) is None
    for job in recent:
        assert await storage.get(job.id) == job
    assert (await storage.get(running.id)) is not None
    counts = (await storage.counts())["a"]
    assert counts[hq.JobStatus.COMPLETED] == 5 and counts[hq.JobStatus.FAILED] == 0
    assert counts[hq.JobStatus.RUNNING] == 1 and counts[hq.JobStatus.PENDING] == 1
    assert report.keys_forgotten == 1  # the key's 60 s ran out long ago
    again = await storage.prune(older_than=7 * DAY, now=T0 + 10 * DAY, archive_dir=archive)
    assert again.pruned == 0 and again.files == () and again.keys_forgotten == 0


async def test_prune_without_archive_and_bad_arguments(storage: PostgresStorage) -> None:
    await finished(storage, 3, T0, hq.JobStatus.CANCELLED)
    with pytest.raises(ValueError, match="older_than"):
        await storage.prune(older_than=-1, now=T0)
    with pytest.raises(ValueError, match="batch"):
        await storage.prune(older_than=0, now=T0, batch=0)
    report = await storage.prune(older_than=0, now=T0 + 1)
    assert report.pruned == 3 and report.archived == 0 and report.files == ()
    assert (await storage.counts())["default"][hq.JobStatus.CANCELLED] == 0


async def test_a_job_retried_before_its_batch_is_not_pruned(storage: PostgresStorage) -> None:
    [job] = await finished(storage, 1, T0, hq.JobStatus.FAILED)
    await storage.retry(job.id, now=T0 + DAY)  # pending again: no longer finished
    report = await storage.prune(older_than=0, now=T0 + 2 * DAY)
    assert report.pruned == 0
    assert (await storage.get(job.id)).status is hq.JobStatus.PENDING  # type: ignore[union-attr]


async def test_two_pruners_at_once_archive_every_job_exactly_once(
    storage: PostgresStorage, pg_module_dsn: str, tmp_path: Path
) -> None:
    jobs = await finished(storage, 300, T0)
    other = PostgresStorage(pg_module_dsn)
    await other.open()
    try:
        reports = []

        async def prune(s: PostgresStorage, folder: str) -> None:
            reports.append(
                await s.prune(older_than=0, now=T0 + 1, archive_dir=tmp_path / folder, batch=7)
            )

        async with anyio.create_task_group() as tg:
            tg.start_soon(prune, storage, "one")
            tg.start_soon(prune, other, "two")
    finally:
        await other.aclose()
    assert sum(r.pruned for r in reports) == 300
    archived = [job.id for r in reports for f in r.files for job in read_archive(f)]
    assert sorted(archived) == sorted(j.id for j in jobs)  # no job twice, none lost


async def test_pruning_the_event_log_never_lets_an_id_come_back(
    storage: PostgresStorage,
) -> None:
    jobs = await finished(storage, 3, at=T0)
    last = await storage.last_event_id()
    assert last > 0
    report = await storage.prune(older_than=0, now=T0 + DAY)
    assert report.pruned == 3 and report.events_pruned == last - 1
    assert await storage.last_event_id() == last  # the newest entry is kept
    await storage.enqueue([make()], now=T0 + DAY, key_ttl=None)
    [entry] = await storage.read_events(after=last)
    assert entry.id == last + 1 and entry.type == "job.enqueued"
    for job in jobs:
        assert await storage.get(job.id) is None


async def test_events_newer_than_the_cutoff_stay(storage: PostgresStorage) -> None:
    await finished(storage, 2, at=T0)
    await finished(storage, 2, at=T0 + 5 * DAY)
    before = await storage.last_event_id()
    report = await storage.prune(older_than=DAY, now=T0 + 6 * DAY)
    assert report.pruned == 2
    # each job: enqueued at T0, then started and completed at its finish time
    stays = await storage.read_events(after=0)
    assert {e.type for e in stays} >= {"job.completed"}
    assert all(e.at >= T0 + 5 * DAY for e in stays)
    assert report.events_pruned > 0 and await storage.last_event_id() == before


async def test_prune_keeps_the_steps_of_a_running_workflow(storage: PostgresStorage) -> None:
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


async def test_retention_service_prunes_on_its_schedule(
    storage: PostgresStorage, tmp_path: Path
) -> None:
    old = await finished(storage, 3, at=T0)
    clock = FakeClock(start=T0 + 6 * DAY)
    service = retention_service(
        storage, keep_for=7 * DAY, archive_dir=tmp_path / "archive", interval=DAY, clock=clock
    )
    with anyio.fail_after(20):
        async with hq.Supervisor(clock=clock) as services:
            services.add(service)
            await clock.advance(0)  # the first run, at start: nothing is old enough yet
            while service.stats().runs < 1:  # noqa: ASYNC110  (waits on the database)
                await anyio.sleep(0.01)
            assert (await storage.counts())["default"][hq.JobStatus.COMPLETED] == 3
            await clock.advance(1.5 * DAY)  # the next run prunes week-old jobs
            while service.stats().runs < 2:  # noqa: ASYNC110
                await anyio.sleep(0.01)
    assert service.stats().failures == 0
    assert await storage.get(old[0].id) is None
    archived = [job for f in (tmp_path / "archive").iterdir() for job in read_archive(f)]
    assert sorted(j.id for j in archived) == sorted(j.id for j in old)


def test_serve_with_a_dsn_runs_retention_by_keep_for(pg_dsn: str, tmp_path: Path) -> None:
    from hyperqueue_cli._server import build_server
    from hyperqueue_litestar._config import parse_config

    config = parse_config(
        {"retention": {"max_age_days": 2, "archive_dir": str(tmp_path / "a")}}, env={}
    )
    plan = build_server(config, hq.Queue(hq.MemoryStorage()), dsn=pg_dsn)
    assert isinstance(plan.queue.storage, PostgresStorage)
    assert plan.retention is not None
    assert not any(w.startswith("retention.*") for w in plan.warnings)
    assert plan.retention.policy.keep_for == 2 * DAY
    assert "2 days" in plan.retention.describe()
    assert "MiB" not in plan.retention.describe()  # no disk rule on PostgreSQL
