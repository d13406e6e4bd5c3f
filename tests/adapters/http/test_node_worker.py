"""The reference worker in a second language (examples/workers/worker.mjs, Node.js)
against ``hyperqueue serve`` as a real process with keys: it runs jobs; a job whose
worker is killed (``kill -9``) mid-job is rescued and run by another; a frozen worker's
late finish is refused and leaves the other worker's result in place."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from server_process import Server

import hyperqueue as hq
from conftest import OPERATOR, WORKER
from hyperqueue_http import HttpStorage

NODE = shutil.which("node")
SCRIPT = Path(__file__).resolve().parents[3] / "examples" / "workers" / "worker.mjs"

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(NODE is None, reason="node (Node.js 20+) is not on PATH"),
]


class NodeWorker:
    """``node worker.mjs`` as a process; its JSON lines are collected as they come."""

    def __init__(self, url: str, name: str, lease: float, key: str = WORKER) -> None:
        assert NODE is not None
        env = {
            **os.environ,
            "HYPERQUEUE_URL": url,
            "HYPERQUEUE_API_KEY": key,
            "WORKER_NAME": name,
            "WORKER_LEASE": str(lease),
            "WORKER_CONCURRENCY": "2",
        }
        self.name = name
        self.proc = subprocess.Popen(
            [NODE, str(SCRIPT)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.lines: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.append(json.loads(raw))

    async def line(
        self, event: str, where: Callable[[dict[str, Any]], bool] = lambda _: True
    ) -> dict[str, Any]:
        """The first line of ``event`` that ``where`` accepts, waiting up to 20 s."""
        with anyio.fail_after(20):
            while True:
                for line in list(self.lines):
                    if line["event"] == event and where(line):
                        return line
                if self.proc.poll() is not None and not self._reader.is_alive():
                    err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                    raise AssertionError(f"{self.name} exited: {self.lines} {err}")
                await anyio.sleep(0.02)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
        self._reader.join(5)


@pytest.fixture
def workers(keyed_server: Server) -> Iterator[Callable[..., NodeWorker]]:
    started: list[NodeWorker] = []

    def start(name: str, lease: float = 10.0) -> NodeWorker:
        worker = NodeWorker(keyed_server.url, name, lease)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.close()


@pytest.fixture
async def producer(keyed_server: Server) -> AsyncIterator[hq.Queue]:
    """A client queue with the Node worker's tasks declared (to enqueue them by name);
    nothing in this process runs them."""
    queue = hq.Queue(HttpStorage(keyed_server.url, api_key=OPERATOR))

    @queue.task(name="node_add")
    async def add(a: int, b: int) -> int:
        raise AssertionError("runs in Node")

    @queue.task(name="node_upper")
    async def upper(text: str) -> str:
        raise AssertionError("runs in Node")

    @queue.task(name="node_fail", retry=hq.Retry(1))
    async def fail(message: str) -> None:
        raise AssertionError("runs in Node")

    @queue.task(name="node_sleep")
    async def sleep(seconds: float, value: str) -> str:
        raise AssertionError("runs in Node")

    async with queue:
        yield queue


async def test_the_node_worker_runs_jobs_and_stops_on_sigterm(
    producer: hq.Queue, workers: Callable[..., NodeWorker]
) -> None:
    node = workers("node-a")
    await node.line("ready")
    add = await producer.enqueue("node_add", args=[2, 3])
    upper = await producer.enqueue("node_upper", args=["héllo"])
    fail = await producer.enqueue("node_fail", args=["no luck"])
    done = {j.id: await producer.wait(j.id, timeout=20) for j in (add, upper, fail)}
    assert done[add.id].status is hq.JobStatus.COMPLETED and done[add.id].result == 5
    assert done[upper.id].result == "HÉLLO" and done[upper.id].worker == "node-a"
    failed = done[fail.id]
    assert failed.status is hq.JobStatus.FAILED and failed.error == "Error: no luck"
    assert failed.started_at is not None and failed.finished_at is not None
    assert "node-a" in {w.name for w in await producer.workers()}
    node.proc.send_signal(signal.SIGTERM)
    await node.line("stopped")
    assert await anyio.to_thread.run_sync(node.proc.wait, 10) == 0
    assert "node-a" not in {w.name for w in await producer.workers()}


async def test_a_job_of_a_killed_worker_is_rescued_and_its_late_finish_refused(
    producer: hq.Queue, workers: Callable[..., NodeWorker], keyed_server: Server
) -> None:
    first = workers("node-killed", lease=1.5)
    await first.line("ready")
    job = await producer.enqueue("node_sleep", args=[2.0, "done"])
    lost = await first.line("started", lambda line: line["id"] == job.id)
    first.proc.kill()  # kill -9 mid-job: no finish, no more heartbeats
    await anyio.to_thread.run_sync(first.proc.wait, 10)
    second = workers("node-rescuer", lease=1.5)
    again = await second.line("started", lambda line: line["id"] == job.id)
    assert again["token"] > lost["token"]
    done = await producer.wait(job.id, timeout=20)
    assert done.status is hq.JobStatus.COMPLETED and done.result == "done"
    assert done.worker == "node-rescuer" and done.rescues == 1 and done.attempts == 1
    # what the killed worker would have sent had it lived: refused, nothing changes
    outcome = {"id": job.id, "token": lost["token"], "status": "completed", "result": "late"}
    async with httpx.AsyncClient() as client:
        late = await client.post(
            f"{keyed_server.url}/api/v1/worker/finish",
            json={"outcomes": [outcome]},
            headers={"Authorization": f"Bearer {WORKER}"},
        )
    assert late.status_code == 409 and late.json()["extra"]["refused"] == [job.id]
    assert (await producer.get(job.id)).result == "done"


async def test_a_frozen_workers_late_finish_is_refused(
    producer: hq.Queue, workers: Callable[..., NodeWorker]
) -> None:
    frozen = workers("node-frozen", lease=1.0)
    await frozen.line("ready")
    job = await producer.enqueue("node_sleep", args=[1.5, "from-frozen?"])
    lost = await frozen.line("started", lambda line: line["id"] == job.id)
    frozen.proc.send_signal(signal.SIGSTOP)  # a frozen process: no heartbeat, no finish
    try:
        other = workers("node-other", lease=1.0)
        await other.line("finished", lambda line: line["id"] == job.id)
    finally:
        frozen.proc.send_signal(signal.SIGCONT)
    await frozen.line(
        "finish_refused", lambda line: line["id"] == job.id and line["token"] == lost["token"]
    )
    done = await producer.get(job.id)
    assert done.status is hq.JobStatus.COMPLETED and done.worker == "node-other"
    # the frozen process's claim in flight (its socket stays open) may take the job once
    # more after the first rescue, and lose it the same way: at least once, never lost
    assert done.rescues in (1, 2)
