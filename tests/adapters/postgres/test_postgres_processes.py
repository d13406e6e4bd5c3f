"""Several real processes on one PostgreSQL database, one of them killed with SIGKILL,
another frozen past its lease (the worker processes are ``pg_worker.py``).

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
from hyperqueue_postgres import PostgresStorage

pytestmark = pytest.mark.anyio

APP = Path(__file__).with_name("pg_worker.py")


@contextmanager
def process(*args: str) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, str(APP), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        for pipe in (proc.stdin, proc.stdout):
            assert pipe is not None
            pipe.close()


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
    return len(started) >= 12 and any(i not in ended for i in started)


@pytest.fixture
async def queue(pg_dsn: str) -> AsyncIterator[hq.Queue]:
    queue = hq.Queue(PostgresStorage(pg_dsn, poll_interval=0.2))

    @queue.task
    async def work(i: int, ms: int) -> int:
        return i

    async with queue:
        yield queue


async def wait_for_completed(queue: hq.Queue, total: int) -> None:
    while True:
        stats = await queue.stats()
        if sum(s.completed for s in stats.values()) >= total:
            return
        await anyio.sleep(0.05)


async def test_killed_worker_jobs_run_again_and_nothing_else_runs_twice(
    queue: hq.Queue, pg_dsn: str, tmp_path: Path
) -> None:
    work = queue.tasks["work"]
    jobs = [await work.options(max_attempts=3).enqueue(i, 30) for i in range(240)]
    logs = {name: tmp_path / f"{name}.log" for name in ("victim", "w1", "w2")}
    with anyio.fail_after(40):
        with (
            process("worker", pg_dsn, str(logs["victim"]), "victim") as victim,
            process("worker", pg_dsn, str(logs["w1"]), "w1") as w1,
            process("worker", pg_dsn, str(logs["w2"]), "w2") as w2,
        ):
            for proc in (victim, w1, w2):
                assert await read_line(proc) == "ready\n"
            # another process writes the log: no Event to wait on, so look every 10 ms,
            # until the victim has run a dozen jobs and has one running (between two
            # claims it may have none: killing it then would test nothing)
            while not _mid_run(runs(logs["victim"])):  # noqa: ASYNC110
                await anyio.sleep(0.005)
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait(10)
            await wait_for_completed(queue, len(jobs))
            # idle workers in other processes are woken by NOTIFY for new work
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
    unfinished = set(starts["victim"]) - ends["victim"]
    assert unfinished, "the victim was killed mid-run"
    for job_id in unfinished:
        assert starts["w1"][job_id] + starts["w2"][job_id] == 1
    counts = (await queue.storage.counts())["default"]
    assert counts[hq.JobStatus.COMPLETED] == len(jobs) + len(late)
    assert counts[hq.JobStatus.RUNNING] == counts[hq.JobStatus.PENDING] == 0


async def test_a_frozen_workers_late_finish_is_refused(queue: hq.Queue, pg_dsn: str) -> None:
    job = await queue.tasks["work"].enqueue(7, 0)
    with anyio.fail_after(30), process("freeze", pg_dsn, "frozen") as frozen:
        job_id, token = (await read_line(frozen)).split()
        assert job_id == job.id
        # the frozen process holds the job; a worker here rescues it once its lease
        # expires and runs it again
        async with queue.worker(concurrency=2, lease=1.0, name="alive"):
            done = await queue.wait(job.id, timeout=20)
        assert done.status is hq.JobStatus.COMPLETED and done.worker == "alive"
        assert done.rescues == 1 and done.token > int(token)
        assert frozen.stdin is not None
        frozen.stdin.write("go\n")
        frozen.stdin.flush()
        assert await read_line(frozen) == "refused\n"
    stored = await queue.get(job.id)
    assert stored == done
