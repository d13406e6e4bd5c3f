"""``hyperqueue serve --dsn`` and ``hyperqueue worker --dsn``: the whole server on
PostgreSQL (jobs, events, audit log, configuration versions), with no SQLite file."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "server"))
from server_process import CLI, wait_serving

asyncpg = pytest.importorskip("asyncpg", reason="needs the postgres extra")

HERE = Path(__file__).parent


@pytest.fixture
def served(pg_dsn: str, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYPERQUEUE_")}
    proc = subprocess.Popen(
        [*CLI, "serve", "--dsn", pg_dsn, "--port", "0", "--concurrency", "2"],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    try:
        yield wait_serving(proc), proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(20)
        if proc.stderr is not None:
            proc.stderr.close()


def rows(dsn: str, sql: str) -> list[tuple[object, ...]]:
    import asyncio

    async def fetch() -> list[tuple[object, ...]]:
        conn = await asyncpg.connect(dsn)
        try:
            return [tuple(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()

    return asyncio.run(fetch())


def test_serve_keeps_everything_in_postgres(
    served: tuple[str, subprocess.Popen[bytes]], pg_dsn: str, tmp_path: Path
) -> None:
    url, _ = served
    made = httpx.post(f"{url}/api/v1/jobs", json={"task": "add", "args": [2, 3]})
    assert made.status_code == 201, made.text
    job_id = made.json()["id"]
    deadline = time.monotonic() + 15
    while httpx.get(f"{url}/api/v1/jobs/{job_id}").json()["status"] != "completed":
        assert time.monotonic() < deadline, "the job never completed"
        time.sleep(0.05)
    assert httpx.get(f"{url}/api/v1/jobs/{job_id}").json()["result"] == 5
    put = httpx.put(
        f"{url}/api/v1/config",
        json={"rate_limits": {"default": "1000/minute"}, "keys": []},
        headers={"Content-Type": "application/json"},
    )
    assert put.status_code == 200, put.text
    assert rows(pg_dsn, "SELECT count(*) FROM hq_jobs") == [(1,)]
    events = rows(pg_dsn, "SELECT type FROM hq_job_events ORDER BY n")
    assert ("job.completed",) in events
    assert rows(pg_dsn, "SELECT count(*) FROM hq_config_versions")[0][0] >= 1
    audited = rows(pg_dsn, "SELECT event FROM hq_audit_log ORDER BY seq")
    assert ("job.submit",) in audited and ("config.change",) in audited
    assert not list(tmp_path.glob("*.db*")), "no SQLite file"


def test_a_worker_process_with_dsn_takes_jobs(pg_dsn: str, tmp_path: Path) -> None:
    import asyncio

    from pg_app import make_queue

    env = {k: v for k, v in os.environ.items() if not k.startswith("HYPERQUEUE_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH")) if p)
    worker = subprocess.Popen(
        [*CLI, "worker", "pg_app:queue", "--dsn", pg_dsn, "--concurrency", "4"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while rows(pg_dsn, "SELECT to_regclass('hq_workers') IS NOT NULL") != [(True,)] or not rows(
            pg_dsn, "SELECT 1 FROM hq_workers"
        ):
            assert worker.poll() is None, "the worker exited"
            assert time.monotonic() < deadline, "the worker never registered"
            time.sleep(0.05)

        async def run_one() -> object:
            async with make_queue(pg_dsn) as queue:
                job = await queue.tasks["slow"].enqueue(0.01)
                return (await queue.wait(job.id, timeout=15)).result

        assert asyncio.run(run_one()) == worker.pid
    finally:
        worker.terminate()
        assert worker.wait(20) == 0
