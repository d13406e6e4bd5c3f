"""End to end: ``hyperqueue serve`` as a real process with API keys, a Python client
queue over HttpStorage that enqueues and waits (operator key), and a worker in the
test process that takes the jobs over the worker protocol (worker key)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from server_process import Server, start_server, stop

import hyperqueue as hq
from hyperqueue_http import Forbidden, HttpStorage, Unauthorized
from hyperqueue_litestar import ApiKey

pytestmark = pytest.mark.anyio

OPERATOR = "op-secret-1"
WORKER = "worker-secret-1"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("serve")
    (folder / "hq.toml").write_text(
        "[[keys]]\n"
        f'name = "ops"\nkey_hash = "{ApiKey.hash_key(OPERATOR)}"\nroles = ["operator"]\n'
        "[[keys]]\n"
        f'name = "remote"\nkey_hash = "{ApiKey.hash_key(WORKER)}"\nroles = ["worker"]\n'
    )
    running = start_server(folder, "--config", str(folder / "hq.toml"))
    yield running
    stop(running)


def _queue(url: str, key: str | None) -> tuple[hq.Queue, list[str]]:
    """A queue over the server with a task the server's own workers do not know (so only
    a remote worker can run it); the list records where it ran."""
    queue = hq.Queue(HttpStorage(url, api_key=key))
    ran: list[str] = []

    @queue.task(name="remote_triple")
    async def triple(x: int) -> int:
        ran.append(f"x={x}")
        return 3 * x

    return queue, ran


async def test_a_client_queue_enqueues_and_a_remote_worker_runs_the_jobs(server: Server) -> None:
    producer, not_here = _queue(server.url, OPERATOR)
    consumer, ran = _queue(server.url, WORKER)
    with anyio.fail_after(30):
        async with producer, consumer:
            jobs = [await producer.enqueue("remote_triple", args=[n]) for n in range(10)]
            assert all(j.status is hq.JobStatus.PENDING for j in jobs)
            async with consumer.worker(concurrency=4, lease=5.0) as worker:
                done = [await producer.wait(j.id, timeout=20) for j in jobs]
            assert [d.result for d in done] == [3 * n for n in range(10)]
            assert {d.status for d in done} == {hq.JobStatus.COMPLETED}
            assert {d.worker for d in done} == {worker.name}
            assert sorted(ran) == sorted(f"x={n}" for n in range(10)) and not_here == []
            stats = await producer.stats()
            assert stats["default"].completed >= 10
            # a worker key runs jobs and nothing else
            with pytest.raises(Forbidden):
                await consumer.enqueue("remote_triple", args=[1])
            with pytest.raises(hq.JobNotFound):
                await producer.get("no-such-job")
            with pytest.raises(hq.UnknownTask):
                await producer.enqueue("nope")


async def test_cancel_and_retry_over_http(server: Server) -> None:
    producer, _ = _queue(server.url, OPERATOR)
    async with producer:
        job = await producer.enqueue("remote_triple", args=[1], delay=3600)
        cancelled = await producer.cancel(job.id)
        assert cancelled.status is hq.JobStatus.CANCELLED
        again = await producer.retry(job.id)
        assert again.status is hq.JobStatus.PENDING
        with pytest.raises(hq.InvalidTransition):
            await producer.retry(job.id)
        await producer.cancel(job.id)


async def test_without_a_key_the_client_is_refused(server: Server) -> None:
    queue, _ = _queue(server.url, None)
    with pytest.raises(Unauthorized):
        await queue.open()
    await queue.storage.aclose()


SCRIPT = """
import sys, anyio, hyperqueue as hq
from hyperqueue_http import HttpStorage

queue = hq.Queue(HttpStorage(sys.argv[1], api_key=sys.argv[2]))

@queue.task(name="remote_triple")
async def triple(x: int) -> int:
    return 3 * x

async def main() -> None:
    job = await queue.enqueue("remote_triple", args=[7])  # opens the storage on first use
    print(job.id)

anyio.run(main)
"""


def test_a_script_without_async_with_enqueues_and_exits(server: Server, tmp_path: Path) -> None:
    """As with any storage: a queue used without ``async with`` opens on first use, and
    the script exits at once when its main returns, the job stored. (Its pooled
    connection is left to the interpreter to close: with ``-W error`` Python reports the
    unclosed socket; ``async with queue`` or ``await queue.aclose()`` closes it.)"""
    import httpx

    (tmp_path / "produce.py").write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, "produce.py", server.url, OPERATOR],
        cwd=tmp_path,
        capture_output=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stderr == b""
    job_id = done.stdout.decode().strip()
    got = httpx.get(
        f"{server.url}/api/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {OPERATOR}"}
    )
    assert got.status_code == 200 and got.json()["args"] == [7]


async def test_a_workflow_over_http_runs_on_a_remote_worker(server: Server) -> None:
    """A workflow enqueued by a client queue; a worker with a worker key runs its steps,
    reading the parents' results it takes as inputs (a worker reads jobs by id)."""

    def tasks(queue: hq.Queue) -> tuple[Any, Any]:
        @queue.task(name="remote_double")
        async def double(x: int) -> int:
            return 2 * x

        @queue.task(name="remote_sum")
        async def total(a: int, b: int) -> int:
            return a + b

        return double, total

    producer = hq.Queue(HttpStorage(server.url, api_key=OPERATOR))
    consumer = hq.Queue(HttpStorage(server.url, api_key=WORKER))
    double, total = tasks(producer)
    tasks(consumer)
    flow = hq.Workflow()
    a = flow.add(double, 3, name="a")
    b = flow.add(double, 4, name="b")
    flow.add(total, a, b, name="sum")
    with anyio.fail_after(30):
        async with producer, consumer:
            run = await producer.enqueue_workflow(flow)
            async with consumer.worker(concurrency=2, lease=5.0):
                done = await producer.wait_workflow(run.id, timeout=20)
    assert done.status is hq.WorkflowStatus.COMPLETED
    assert done.result == {"sum": 14}


APP = """
import hyperqueue as hq

queue = hq.Queue()


@queue.task(name="remote_triple")
async def triple(x: int) -> int:
    return 3 * x
"""


def _worker_command(folder: Path, *extra: str, key: str | None) -> subprocess.Popen[bytes]:
    (folder / "remote_app.py").write_text(APP)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYPERQUEUE_")}
    env["PYTHONPATH"] = str(folder)
    if key is not None:
        env["HYPERQUEUE_API_KEY"] = key
    return subprocess.Popen(
        [sys.executable, "-m", "hyperqueue_cli", "worker", "remote_app:queue", *extra],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def test_hyperqueue_worker_with_url_runs_the_servers_jobs_over_http(
    server: Server, tmp_path: Path
) -> None:
    """``hyperqueue worker APP --url`` as an operator on another host runs it: a separate
    process with a worker key, no database of its own, stopped by SIGTERM with status 0."""
    proc = _worker_command(tmp_path, "--url", server.url, key=WORKER)
    producer, _ = _queue(server.url, OPERATOR)
    try:
        with anyio.fail_after(30):
            async with producer:
                jobs = [await producer.enqueue("remote_triple", args=[n]) for n in range(5)]
                done = [await producer.wait(j.id, timeout=25) for j in jobs]
        assert [d.result for d in done] == [3 * n for n in range(5)]
        assert all(d.worker and str(proc.pid) in d.worker for d in done), "run by that process"
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        assert proc.stderr is not None
        errors = proc.stderr.read().decode()
        proc.stderr.close()
    assert code == 0, errors


@pytest.mark.parametrize(
    ("key", "url", "status", "says"),
    [
        ("not-a-key", None, 4, "refused the key"),
        (WORKER, "http://127.0.0.1:9", 3, "cannot reach the server"),
    ],
)
def test_hyperqueue_worker_with_url_says_what_is_wrong_in_one_line(
    server: Server, tmp_path: Path, key: str, url: str | None, status: int, says: str
) -> None:
    proc = _worker_command(tmp_path, "--url", url or server.url, key=key)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == status, err
    assert says in err.decode() and "Traceback" not in err.decode()
