"""Several real processes on one SQLite file, some of them killed with SIGKILL.

These tests run in real time (leases of 1 s expire for real), so they poll the
database while the processes work, under a fail_after safety net.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

import hyperqueue as hq
from hyperqueue_sqlite import SQLiteStorage, wal_reset_bug

pytestmark = pytest.mark.anyio

APP = Path(__file__).with_name("mp_app.py")


@contextmanager
def process(*args: str) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, str(APP), *args], stdout=subprocess.PIPE, text=True, bufsize=1
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()


async def read_line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    return await anyio.to_thread.run_sync(proc.stdout.readline)


def runs(log: Path) -> list[tuple[str, str]]:
    if not log.exists():
        return []
    return [tuple(line.split()) for line in log.read_text().splitlines()]  # type: ignore[misc]


def _mid_run(log: list[tuple[str, str]]) -> bool:
    started = [i for kind, i in log if kind == "start"]
    ended = {i for kind, i in log if kind == "end"}
    return any(i not in ended for i in started)


@pytest.fixture
async def queue(tmp_path: Path) -> AsyncIterator[hq.Queue]:
    queue = hq.Queue(SQLiteStorage(tmp_path / "jobs.db"))

    @queue.task
    async def work(i: int, ms: int) -> int:
        return i

    async with queue:
        yield queue


async def wait_for_completed(queue: hq.Queue, total: int) -> None:
    while True:
        stats = await queue.stats()
        done = sum(s.completed for s in stats.values())
        if done >= total:
            return
        await anyio.sleep(0.05)


async def test_killed_worker_jobs_run_again_and_nothing_else_runs_twice(
    queue: hq.Queue, tmp_path: Path
) -> None:
    work = queue.tasks["work"]
    jobs = [await work.options(max_attempts=3).enqueue(i, 30) for i in range(240)]
    db = str(tmp_path / "jobs.db")
    logs = {name: tmp_path / f"{name}.log" for name in ("victim", "w1", "w2")}
    with anyio.fail_after(40):
        with (
            process("worker", db, str(logs["victim"]), "victim") as victim,
            process("worker", db, str(logs["w1"]), "w1") as w1,
            process("worker", db, str(logs["w2"]), "w2") as w2,
        ):
            for proc in (victim, w1, w2):
                assert await read_line(proc) == "ready\n"
            # another process writes the log: no Event to wait on, so look every 10 ms
            while sum(1 for kind, _ in runs(logs["victim"]) if kind == "start") < 12:  # noqa: ASYNC110
                await anyio.sleep(0.01)
            health = await queue.storage.health()  # type: ignore[attr-defined]
            assert health.processes >= 3
            # apsw brings SQLite >= 3.51.3: several processes on the file are fine
            assert not wal_reset_bug(health.sqlite_version), health
            assert health.status == "healthy", health
            # between two claims the victim may have no job running: killing it then
            # would test nothing, so wait for one in flight
            while not _mid_run(runs(logs["victim"])):  # noqa: ASYNC110
                await anyio.sleep(0.005)
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait(10)
            await wait_for_completed(queue, len(jobs))
            # idle workers in other processes wake for new work without polling a table
            late = [await work.enqueue(1000 + i, 0) for i in range(5)]
            for job in late:
                done = await queue.wait(job.id, timeout=10)
                assert done.worker in ("w1", "w2")
            for proc in (w1, w2):
                proc.send_signal(signal.SIGTERM)
                assert await anyio.to_thread.run_sync(proc.wait, 10) == 0

    starts = {
        name: Counter(i for kind, i in runs(log) if kind == "start") for name, log in logs.items()
    }
    ends = {name: {i for kind, i in runs(log) if kind == "end"} for name, log in logs.items()}
    total = starts["victim"] + starts["w1"] + starts["w2"]
    in_flight = set(starts["victim"])  # started on the victim: may run again
    for job in jobs:
        stored = await queue.get(job.id)
        assert stored.status is hq.JobStatus.COMPLETED, stored
        assert stored.result == job.args[0]
        assert total[job.id] >= 1
        if total[job.id] > 1:
            assert job.id in in_flight, f"{job.id} ran twice without a crash"
            # the lost worker spent no attempt: it is rescued, not retried
            assert stored.worker != "victim" and stored.rescues >= 1 and stored.attempts == 1
        if stored.worker == "victim":  # acknowledged by the victim: never run again
            assert total[job.id] == 1
    # what the victim had started but not finished ran again elsewhere
    unfinished = set(starts["victim"]) - ends["victim"]
    assert unfinished, "the victim was killed mid-run"
    for job_id in unfinished:
        assert starts["w1"][job_id] + starts["w2"][job_id] == 1


async def test_killed_producer_loses_no_acknowledged_job(queue: hq.Queue, tmp_path: Path) -> None:
    db = str(tmp_path / "jobs.db")
    acknowledged: list[str] = []
    with anyio.fail_after(30), process("produce", db, "100000") as producer:
        while len(acknowledged) < 300:
            line = await read_line(producer)
            assert line, "the producer stopped early"
            acknowledged.append(line.strip())
        os.kill(producer.pid, signal.SIGKILL)
        producer.wait(10)
        assert producer.stdout is not None
        acknowledged += [line.strip() for line in producer.stdout.read().splitlines() if line]
    assert len(set(acknowledged)) == len(acknowledged)
    for job_id in acknowledged:
        assert await queue.storage.get(job_id) is not None, f"{job_id} was acknowledged, then lost"
    with anyio.fail_after(30):
        async with queue.worker(concurrency=20):
            for job_id in acknowledged:
                done = await queue.wait(job_id, timeout=20)
                assert done.status is hq.JobStatus.COMPLETED
