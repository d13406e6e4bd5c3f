"""Delivery across processes: a server, ``hyperqueue worker`` processes and the test
itself on one SQLite file, some of the workers frozen or killed.

Everything here is a real process started from the CLI (``python -m hyperqueue_cli``)
with default settings, except the workers' lease: 1 s (``HYPERQUEUE_WORKERS__LEASE``)
where a lost worker must be noticed, so these tests run in real time and poll the
database under a ``fail_after`` safety net. The tasks are in ``many_app.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest

import hyperqueue as hq
from hyperqueue_sqlite import SQLiteStorage

sys.path.insert(0, str(Path(__file__).parents[1] / "server"))
from many_app import make_queue, rolling_queue
from server_process import CLI, Server, start_server, stop

pytestmark = pytest.mark.anyio

HERE = Path(__file__).parent
LIFECYCLE = ("job.enqueued", "job.started", "job.completed")


# -- processes -----------------------------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYPERQUEUE_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


@contextmanager
def worker_process(
    folder: Path, db: Path, app: str, name: str, **env: str
) -> Iterator[subprocess.Popen[bytes]]:
    """``hyperqueue worker many_app:APP --db DB``; its stderr goes to ``NAME.err``."""
    with (folder / f"{name}.err").open("wb") as err:
        proc = subprocess.Popen(
            [*CLI, "worker", f"many_app:{app}", "--db", str(db)],
            cwd=folder,
            env=_env(**env),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
        proc.wait(10)


def short_lease() -> dict[str, str]:
    return {"HYPERQUEUE_WORKERS__LEASE": "1"}


async def terminate(proc: subprocess.Popen[bytes], timeout: float = 15) -> int:
    proc.send_signal(signal.SIGTERM)
    return await anyio.to_thread.run_sync(proc.wait, timeout)


async def wait_registered(queue: hq.Queue, proc: subprocess.Popen[bytes]) -> hq.WorkerInfo:
    """The worker pool of ``proc`` once it announced itself on the storage."""
    while True:
        assert proc.poll() is None, f"worker {proc.pid} exited with {proc.returncode}"
        for info in await queue.workers():
            if info.pid == proc.pid:
                return info
        await anyio.sleep(0.05)


async def wait_status(queue: hq.Queue, job_id: str, *statuses: hq.JobStatus) -> hq.Job:
    while True:
        job = await queue.get(job_id)
        if job.status in statuses:
            return job
        await anyio.sleep(0.05)


def log_lines(path: Path) -> list[tuple[str, int, str]]:
    if not path.exists():
        return []
    return [(k, int(p), j) for k, p, j in (line.split() for line in path.read_text().splitlines())]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "x.db"  # where server_process.start_server keeps its state


@pytest.fixture
async def queue(db: Path) -> AsyncIterator[hq.Queue]:
    """The test's own producer on the shared file."""
    async with make_queue(SQLiteStorage(db)) as queue:
        yield queue


# -- server-sent events ----------------------------------------------------------------


@dataclass
class Message:
    id: int | None = None
    event: str | None = None
    data: str | None = None
    comment: str | None = None


async def sse(response: httpx.Response) -> AsyncIterator[Message]:
    message = Message()
    async for line in response.aiter_lines():
        if not line:
            if message != Message():
                yield message
            message = Message()
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "":
            message.comment = value
        elif field == "id":
            message.id = int(value)
        elif field == "event":
            message.event = value
        elif field == "data":
            message.data = value if message.data is None else f"{message.data}\n{value}"


Event = tuple[int, str, dict[str, Any]]


def decode(message: Message) -> Event:
    """``(id, type, job)`` of a job event."""
    assert message.id is not None and message.event is not None and message.data, message
    data = json.loads(message.data)
    assert data["type"] == message.event, message
    return message.id, message.event, data["job"]


async def next_event(messages: AsyncIterator[Message]) -> Event:
    """The next job event on the stream (comments and keep-alives skipped)."""
    async for message in messages:
        if message.event is not None:
            return decode(message)
    raise AssertionError("the event stream ended")


async def rest(messages: AsyncIterator[Message]) -> list[Event]:
    """The job events the stream still sends, until the server ends it."""
    return [decode(message) async for message in messages if message.event is not None]


async def connected(messages: AsyncIterator[Message]) -> None:
    first = await anext(messages)
    assert first.comment == "connected", f"expected ': connected' first, got {first}"


# -- 1. events cross processes and survive a server restart ------------------------------


async def test_sse_streams_other_processes_events_and_resumes_after_restart(
    tmp_path: Path, db: Path, queue: hq.Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", _env()["PYTHONPATH"])  # start_server passes os.environ on
    # the server's own pool serves only a queue nobody uses: every job runs in the worker
    monkeypatch.setenv("HYPERQUEUE_WORKERS__QUEUES", '["nobody"]')
    with anyio.fail_after(28):
        server: Server = await anyio.to_thread.run_sync(start_server, tmp_path, "many_app:queue")
        try:
            with worker_process(tmp_path, db, "queue", "worker") as worker:
                pool = await wait_registered(queue, worker)
                async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
                    async with client.stream("GET", "/api/v1/events") as response:
                        assert response.status_code == 200
                        messages = sse(response)
                        await connected(messages)
                        jobs = []
                        for i in range(5):
                            posted = await client.post(
                                "/api/v1/jobs", json={"task": "work", "args": [i]}
                            )
                            assert posted.status_code == 201, posted.text
                            jobs.append(posted.json()["id"])
                        events = [await next_event(messages) for _ in range(5 * len(LIFECYCLE))]
                        # the server's job metrics count what the other process ran
                        # (its queue relays their events from the log to its bus)
                        with anyio.fail_after(5):
                            while _duration_count(await client.get("/metrics"), "work") < 5:  # noqa: ASYNC110
                                await anyio.sleep(0.05)
                        # stopping the server ends the open stream, after what it still had
                        server.proc.send_signal(signal.SIGTERM)
                        events += await rest(messages)
                    assert await anyio.to_thread.run_sync(server.proc.wait, 15) == 0
                    stop(server)

                    # the server is down: the test enqueues, the worker runs
                    missed = [await queue.tasks["work"].enqueue(100 + i) for i in range(3)]
                    for job in missed:
                        done = await wait_status(queue, job.id, hq.JobStatus.COMPLETED)
                        assert done.worker == pool.name

                    server = await anyio.to_thread.run_sync(
                        start_server, tmp_path, "many_app:queue"
                    )
                    client.base_url = httpx.URL(server.url)
                    last = events[-1][0]
                    headers = {"Last-Event-ID": str(last)}
                    async with client.stream("GET", "/api/v1/events", headers=headers) as response:
                        assert response.status_code == 200
                        messages = sse(response)
                        await connected(messages)  # not a `gap`: nothing was pruned
                        end = await queue.storage.last_event_id()
                        resumed = [await next_event(messages)]
                        while resumed[-1][0] < end:
                            resumed.append(await next_event(messages))
                        server.proc.send_signal(signal.SIGTERM)
                        resumed += await rest(messages)
                    assert await anyio.to_thread.run_sync(server.proc.wait, 15) == 0
                    assert await terminate(worker) == 0
        finally:
            stop(server)

    # every transition of every job, made by the worker process, in id order
    ids = [event_id for event_id, _, _ in events]
    assert ids == sorted(set(ids)), ids
    for _, kind, job in events:
        assert job["id"] in jobs, f"an event of a job nobody enqueued: {job}"
        if kind == "job.completed":
            assert job["worker"] == pool.name, job  # not the server's own pool
            assert job["result"] == jobs.index(job["id"])
    for job_id in jobs:
        kinds = [kind for _, kind, job in events if job["id"] == job_id]
        assert kinds == list(LIFECYCLE), (job_id, kinds)

    # after the restart: exactly the events written after `last`, none lost or repeated
    log = await queue.storage.read_events(after=last, limit=1000)
    assert resumed[0][0] in (last + 1, log[0].id)
    assert [(i, kind, job["id"]) for i, kind, job in resumed] == [
        (e.id, e.type, e.job.id) for e in log
    ]
    for job in missed:
        kinds = [kind for _, kind, resumed_job in resumed if resumed_job["id"] == job.id]
        assert kinds == list(LIFECYCLE), (job.id, kinds)


def _duration_count(response: httpx.Response, task: str) -> float:
    """``hyperqueue_job_duration_seconds_count`` of ``task`` in a Prometheus scrape."""
    for line in response.text.splitlines():
        if line.startswith("hyperqueue_job_duration_seconds_count") and f'task="{task}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# -- 2. a frozen worker's job is rescued, not retried ------------------------------------


async def test_sigstopped_worker_job_is_rescued_by_another_worker(
    tmp_path: Path, db: Path, queue: hq.Queue
) -> None:
    log = tmp_path / "runs.log"
    with anyio.fail_after(28):
        with worker_process(
            tmp_path, db, "queue", "a", MANY_APP_LOG=str(log), **short_lease()
        ) as a:
            await wait_registered(queue, a)
            job = await queue.tasks["slow"].enqueue(2.0)
            while ("start", a.pid, job.id) not in log_lines(log):  # noqa: ASYNC110
                await anyio.sleep(0.02)
            os.kill(a.pid, signal.SIGSTOP)
            with worker_process(
                tmp_path, db, "queue", "b", MANY_APP_LOG=str(log), **short_lease()
            ) as b:
                pool_b = await wait_registered(queue, b)
                done = await wait_status(queue, job.id, hq.JobStatus.COMPLETED, hq.JobStatus.FAILED)
                assert done.status is hq.JobStatus.COMPLETED, done
                assert done.result == b.pid
                assert done.worker == pool_b.name
                assert done.attempts == 1, done  # the lost worker spent no attempt
                assert done.rescues == 1, done
                # the frozen worker wakes up long after its lease: its late finish is refused
                os.kill(a.pid, signal.SIGCONT)
                await anyio.sleep(1.5)  # its lease checks and the task's end come around
                assert await terminate(a) == 0
                assert await terminate(b) == 0
    after = await queue.get(job.id)
    assert after == done, (after, done)
    events = [e for e in await queue.storage.read_events(after=0, limit=1000) if e.job.id == job.id]
    kinds = [e.type for e in events]
    assert kinds.count("job.rescued") == 1, kinds
    assert kinds.count("job.completed") == 1, kinds
    assert kinds[-1] == "job.completed", kinds
    runs = [(kind, pid) for kind, pid, job_id in log_lines(log) if job_id == job.id]
    assert ("start", a.pid) in runs and ("start", b.pid) in runs, runs


# -- 3. a job that kills its worker fails on its 3rd loss ----------------------------------


async def test_job_that_kills_its_worker_fails_after_three_losses(
    tmp_path: Path, db: Path, queue: hq.Queue
) -> None:
    log = tmp_path / "runs.log"
    with anyio.fail_after(28):
        killer = await queue.tasks["suicide"].enqueue()
        others = [await queue.tasks["work"].enqueue(i) for i in range(20)]
        for loss in range(1, 4):
            with worker_process(
                tmp_path, db, "queue", f"w{loss}", MANY_APP_LOG=str(log), **short_lease()
            ) as proc:
                code = await anyio.to_thread.run_sync(proc.wait, 15)
                assert code == -signal.SIGKILL, f"worker {loss} exited with {code}"
            starts = [pid for kind, pid, job_id in log_lines(log) if job_id == killer.id]
            assert starts[-1] == proc.pid and len(starts) == loss, starts
            job = await queue.get(killer.id)  # held by the dead worker until its lease ends
            assert job.status is hq.JobStatus.RUNNING and job.rescues == loss - 1, job
        with worker_process(tmp_path, db, "queue", "last", **short_lease()) as last:
            failed = await wait_status(
                queue, killer.id, hq.JobStatus.FAILED, hq.JobStatus.COMPLETED
            )
            for other in others:
                done = await wait_status(
                    queue, other.id, hq.JobStatus.COMPLETED, hq.JobStatus.FAILED
                )
                assert done.status is hq.JobStatus.COMPLETED, done
                assert done.result == other.args[0]
                assert done.rescues < 3
            assert await terminate(last) == 0
    assert failed.status is hq.JobStatus.FAILED, failed
    assert failed.error is not None and "lost its worker 3 times" in failed.error, failed
    assert failed.rescues == 3, failed
    assert failed.attempts <= 1, failed
    stats = (await queue.stats())["default"]
    assert (stats.failed, stats.completed, stats.pending, stats.running) == (1, 20, 0, 0)


# -- 4. a rolling deploy: a job of a task no worker knows waits for one ------------------


async def test_job_of_a_task_no_worker_knows_waits_for_the_new_worker(
    tmp_path: Path, db: Path
) -> None:
    with anyio.fail_after(28):
        async with rolling_queue(SQLiteStorage(db)) as producer:
            with worker_process(tmp_path, db, "old_queue", "a") as a:
                pool_a = await wait_registered(producer, a)
                assert pool_a.tasks == ("old",)
                served = await producer.enqueue("old", args=[1])
                job = await producer.enqueue("new", args=[2])
                done = await wait_status(producer, served.id, hq.JobStatus.COMPLETED)
                assert done.worker == pool_a.name
                await anyio.sleep(2)
                waiting = await producer.get(job.id)
                assert waiting.status is hq.JobStatus.PENDING, waiting
                assert waiting.attempts == 0 and waiting.error is None, waiting
                unserved = await producer.unserved()
                assert [(u.queue, u.task, u.pending) for u in unserved] == [("default", "new", 1)]
                assert (await producer.stats())["default"].unserved == 1
                workers = await producer.workers()
                assert [(w.name, w.pid, w.tasks) for w in workers] == [
                    (pool_a.name, a.pid, ("old",))
                ]
                with worker_process(tmp_path, db, "new_queue", "b") as b:
                    pool_b = await wait_registered(producer, b)
                    assert set(pool_b.tasks) == {"old", "new"}
                    done = await wait_status(
                        producer, job.id, hq.JobStatus.COMPLETED, hq.JobStatus.FAILED
                    )
                    assert done.status is hq.JobStatus.COMPLETED, done
                    assert done.result == "new 2"
                    assert done.worker == pool_b.name
                    assert await producer.unserved() == []
                    assert await terminate(b) == 0
                assert await terminate(a) == 0
            stats = (await producer.stats())["default"]
            assert (stats.failed, stats.completed, stats.pending, stats.unserved) == (0, 2, 0, 0)
