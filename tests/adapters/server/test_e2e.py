"""End to end: ``python -m hyperqueue_cli`` as a real process on an ephemeral port.

Submitting over HTTP and seeing the job complete, draining on SIGTERM (the running job
completes, the exit code is 0), live events over SSE with a resume that loses and
repeats nothing, the ``worker``, ``status`` and ``health`` commands.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from server_process import CLI, Server, start_server, stop, wait_for, wait_serving

import hyperqueue as hq
from hyperqueue_sqlite import SQLiteStorage


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = start_server(tmp_path)
    yield running
    stop(running)


def test_submit_over_http_and_the_job_completes(server: Server) -> None:
    response = httpx.post(f"{server.url}/api/v1/jobs", json={"task": "add", "args": [40, 2]})
    assert response.status_code == 201
    done = wait_for(server.url, response.json()["id"], {"completed", "failed"})
    assert done["status"] == "completed"
    assert done["result"] == 42
    assert httpx.get(f"{server.url}/health/ready").status_code == 200
    assert server.db.exists()


def test_sigterm_drains_the_running_job_and_exits_0(server: Server) -> None:
    slow = httpx.post(
        f"{server.url}/api/v1/jobs", json={"task": "sleep", "kwargs": {"seconds": 1.5}}
    ).json()
    wait_for(server.url, slow["id"], {"running"})
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=30) == 0

    async def read() -> hq.Job:
        async with hq.Queue(SQLiteStorage(server.db)) as queue:
            return await queue.get(slow["id"])

    job = anyio.run(read)
    assert job.status is hq.JobStatus.COMPLETED
    assert job.result == 1.5


async def connected(lines: AsyncIterator[str]) -> None:
    """Wait for the comment the server sends once it is subscribed: events published
    from then on reach this stream."""
    with anyio.fail_after(10):
        async for line in lines:
            if line == ": connected":
                return
    raise AssertionError("the stream ended before it was connected")


async def read_events(
    lines: AsyncIterator[str], count: int, timeout: float = 10
) -> list[tuple[int, str, dict[str, Any]]]:
    """The next ``count`` events of an SSE response as (id, type, data)."""
    events: list[tuple[int, str, dict[str, Any]]] = []
    fields: dict[str, str] = {}
    with anyio.fail_after(timeout):
        async for line in lines:
            if line == "":
                if "id" in fields:
                    events.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
                    if len(events) == count:
                        return events
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
    raise AssertionError(f"the stream ended after {len(events)} events")


@pytest.mark.anyio
async def test_events_stream_live_and_resume_without_gaps_or_duplicates(server: Server) -> None:
    url = server.url
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        async with client.stream("GET", "/api/v1/events", params={"type": "job.*"}) as live:
            assert live.status_code == 200
            assert live.headers["content-type"].startswith("text/event-stream")
            lines = live.aiter_lines()
            await connected(lines)
            job = (await client.post("/api/v1/jobs", json={"task": "add", "args": [1, 1]})).json()
            seen = await read_events(lines, 3)
        assert [kind for _, kind, _ in seen] == ["job.enqueued", "job.started", "job.completed"]
        assert all(data["job"]["id"] == job["id"] for _, _, data in seen)
        assert seen[2][2]["job"]["result"] == 2
        last = seen[-1][0]

        # while nobody listens, two more jobs run
        missed = []
        for n in (2, 3):
            posted = await client.post("/api/v1/jobs", json={"task": "add", "args": [n, n]})
            missed.append(posted.json()["id"])
        for job_id in missed:
            await anyio.to_thread.run_sync(wait_for, url, job_id, {"completed"})

        headers = {"Last-Event-ID": str(last)}
        async with client.stream("GET", "/api/v1/events", headers=headers) as resumed:
            replay = await read_events(resumed.aiter_lines(), 6)
        ids = [event_id for event_id, _, _ in replay]
        assert ids == list(range(last + 1, last + 7))  # contiguous: none lost, none repeated
        assert {data["job"]["id"] for _, _, data in replay} == set(missed)
        assert [kind for _, kind, data in replay if data["job"]["id"] == missed[0]] == [
            "job.enqueued",
            "job.started",
            "job.completed",
        ]

        bad = await client.get("/api/v1/events", headers={"Last-Event-ID": "abc"})
        assert bad.status_code == 400
        assert "Last-Event-ID" in bad.json()["detail"]


def test_sigterm_ends_open_event_streams_and_still_exits_0(server: Server) -> None:
    with httpx.stream("GET", f"{server.url}/api/v1/events", timeout=10) as stream:
        assert stream.status_code == 200
        lines = stream.iter_lines()
        assert ": connected" in [next(lines), next(lines)]  # after the retry: line
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=20) == 0
        assert list(lines) == [""]  # the response ended cleanly, not cut off


def test_status_and_health_commands(server: Server) -> None:
    httpx.post(f"{server.url}/api/v1/jobs", json={"task": "add", "args": [1, 2], "queue": "q2"})
    result = subprocess.run(
        [*CLI, "status", "--url", server.url, "--json", "--detailed"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert "q2" in {q["queue"] for q in document["queues"]}
    assert document["health"]["checks"]["storage"]["status"] == "healthy"
    table = subprocess.run(
        [*CLI, "health", "--url", server.url], capture_output=True, timeout=30, check=False
    )
    assert table.returncode == 0
    assert b"queue_depth" in table.stdout


def test_health_of_a_server_that_is_not_there_exits_3(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = subprocess.run(
        [*CLI, "health", "--url", f"http://127.0.0.1:{port}"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 3  # cannot reach the server (docs/reference/cli.md)
    assert b"cannot reach" in result.stderr


@pytest.mark.parametrize(
    ("app", "message"),
    [
        ("nomodule_here:queue", "no such module"),
        ("jobs:missing", "has no attribute 'missing'"),
        ("jobs:not_a_queue", "not a hyperqueue.Queue"),
        ("jobs", "module:attribute"),
    ],
)
def test_serve_names_what_is_wrong_with_app(tmp_path: Path, app: str, message: str) -> None:
    (tmp_path / "jobs.py").write_text("not_a_queue = 42\n")
    result = subprocess.run(
        [*CLI, "serve", app, "--port", "0"],
        cwd=tmp_path,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert message in result.stderr.decode()


APP = """
import hyperqueue as hq

queue = hq.Queue()


@queue.task
async def double(x: int) -> int:
    return 2 * x
"""


def test_worker_command_runs_jobs_from_the_database_and_drains(tmp_path: Path) -> None:
    (tmp_path / "myjobs.py").write_text(APP)
    db = tmp_path / "w.db"
    sys.path.insert(0, str(tmp_path))
    try:
        from myjobs import queue  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(tmp_path))
    queue.storage = SQLiteStorage(db)

    async def enqueue() -> str:
        async with queue:
            job: hq.Job = await queue.enqueue("double", args=[21])
            return job.id

    job_id = anyio.run(enqueue)
    proc = subprocess.Popen(
        [*CLI, "worker", "myjobs:queue", "--db", str(db), "--concurrency", "2"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        stderr=subprocess.PIPE,
    )
    try:

        async def wait() -> hq.Job:
            async with hq.Queue(SQLiteStorage(db)) as reader:
                return await reader.wait(job_id, timeout=20)

        job = anyio.run(wait)
        assert job.result == 42
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()


def test_serve_takes_its_settings_from_a_config_file(tmp_path: Path) -> None:
    (tmp_path / "hq.toml").write_text("[server]\nmax_body_bytes = 2000\n")
    running = start_server(tmp_path, "--config", str(tmp_path / "hq.toml"))
    try:
        big = httpx.post(f"{running.url}/api/v1/jobs", json={"task": "echo", "args": ["x" * 3000]})
        assert big.status_code == 413
        assert "2000 bytes" in big.json()["detail"]
    finally:
        stop(running)


def test_serve_refuses_an_invalid_config_file_naming_the_key(tmp_path: Path) -> None:
    (tmp_path / "hq.toml").write_text('[workers]\nconcurrency = "many"\n')
    result = subprocess.run(
        [*CLI, "serve", "--port", "0", "--config", "hq.toml"],
        cwd=tmp_path,
        capture_output=True,
        timeout=30,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("HYPERQUEUE_")},
    )
    assert result.returncode == 2
    assert "workers.concurrency" in result.stderr.decode()


def test_an_open_server_refuses_to_listen_beyond_loopback(tmp_path: Path) -> None:
    result = subprocess.run(
        [*CLI, "serve", "--host", "0.0.0.0", "--port", "0", "--db", "x.db"],
        cwd=tmp_path,
        capture_output=True,
        timeout=30,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("HYPERQUEUE_")},
    )
    assert result.returncode == 1
    assert "no API keys configured: an open server listens on loopback only" in (
        result.stderr.decode()
    )


def test_with_keys_the_server_listens_beyond_loopback_and_asks_for_a_key(
    tmp_path: Path,
) -> None:
    from hyperqueue_litestar import ApiKey

    digest = ApiKey.hash_key("s3cret-operator-key")
    (tmp_path / "hq.toml").write_text(
        f'[[keys]]\nname = "ops"\nkey_hash = "{digest}"\nroles = ["operator"]\n'
    )
    running = start_server(tmp_path, "--host", "0.0.0.0", "--config", str(tmp_path / "hq.toml"))
    try:
        url = running.url.replace("0.0.0.0", "127.0.0.1")
        job = {"task": "add", "args": [1, 2]}
        assert httpx.post(f"{url}/api/v1/jobs", json=job).status_code == 401
        headers = {"Authorization": "Bearer s3cret-operator-key"}
        assert httpx.post(f"{url}/api/v1/jobs", json=job, headers=headers).status_code == 201
    finally:
        stop(running)


# -- the event loop ---------------------------------------------------------------------


def start_up_lines(server: Server) -> list[str]:
    """What ``serve`` printed after its first line, up to the line naming its loop (all
    printed before it answers requests)."""
    stderr = server.proc.stderr
    assert stderr is not None
    lines: list[str] = []

    def read() -> None:
        while not lines or "event loop:" not in lines[-1]:
            line = stderr.readline().decode()
            if not line:
                return
            lines.append(line.strip())

    reader = threading.Thread(target=read, daemon=True)  # a missing line must not hang
    reader.start()
    reader.join(timeout=10)
    assert lines and "event loop:" in lines[-1], f"serve did not name its loop: {lines}"
    return lines


def test_serve_runs_on_uvloop_when_it_is_installed(server: Server) -> None:
    """uvicorn's own loop set-up, as ``uvicorn.run`` has it: uvloop when installed."""
    expected = "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"
    assert start_up_lines(server)[-1] == f"event loop: {expected}"
    response = httpx.post(f"{server.url}/api/v1/jobs", json={"task": "add", "args": [2, 3]})
    assert wait_for(server.url, response.json()["id"], {"completed"})["result"] == 5
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=30) == 0


def test_without_uvloop_serve_runs_on_asyncio_and_drains(tmp_path: Path) -> None:
    shadow = tmp_path / "no-uvloop" / "uvloop"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('uvloop is not installed')\n")
    path = os.pathsep.join([str(shadow.parent), os.environ.get("PYTHONPATH", "")])
    proc = subprocess.Popen(
        [*CLI, "serve", "--db", str(tmp_path / "x.db"), "--port", "0", "--concurrency", "2"],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": path},
    )
    running = Server(proc, wait_serving(proc), tmp_path / "x.db")
    try:
        assert start_up_lines(running)[-1] == "event loop: asyncio"
        slow = httpx.post(
            f"{running.url}/api/v1/jobs", json={"task": "sleep", "kwargs": {"seconds": 0.5}}
        ).json()
        wait_for(running.url, slow["id"], {"running"})
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert proc.stderr is not None
        assert "workers drained" in proc.stderr.read().decode()
    finally:
        stop(running)

    async def read() -> hq.Job:
        async with hq.Queue(SQLiteStorage(running.db)) as queue:
            return await queue.get(slow["id"])

    assert anyio.run(read).status is hq.JobStatus.COMPLETED, "the running job finished"
