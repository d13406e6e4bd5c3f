"""Every configuration key ``hyperqueue serve`` validates takes effect: storage, the
worker pool's settings and retention, from the file or from ``HYPERQUEUE_*`` variables
(with or without ``--config``), while the client commands' own variables
(``HYPERQUEUE_URL``, ``HYPERQUEUE_API_KEY``) are not read as configuration."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from click.testing import CliRunner
from server_process import CLI, wait_for, wait_serving

import hyperqueue as hq
from hyperqueue_cli import main
from hyperqueue_cli._server import Retention, ServerPlan, build_server, retention_policy
from hyperqueue_litestar import demo_queue
from hyperqueue_litestar._config import Config, RetentionSettings, parse_config
from hyperqueue_sqlite import RetentionPolicy, SQLiteStorage, read_archive

Serve = Callable[[Any], AbstractAsyncContextManager[httpx.AsyncClient]]


def config(**sections: dict[str, Any]) -> Config:
    return parse_config(sections, env={})


def plan_for(settings: Config, queue: hq.Queue | None = None, **options: Any) -> ServerPlan:
    return build_server(settings, queue if queue is not None else demo_queue(), **options)


async def submit(client: httpx.AsyncClient, **body: Any) -> str:
    response = await client.post("/api/v1/jobs", json=body)
    assert response.status_code == 201, response.text
    job_id: str = response.json()["id"]
    return job_id


async def status_of(client: httpx.AsyncClient, job_id: str) -> str | None:
    """The job's status, ``None`` once it is gone (pruned)."""
    response = await client.get(f"/api/v1/jobs/{job_id}")
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    status: str = response.json()["status"]
    return status


async def wait_until(predicate: Callable[[], Any], timeout: float = 5.0) -> None:
    """Poll: the state is read over HTTP, there is no event to wait on."""
    with anyio.fail_after(timeout):
        while not await predicate():  # noqa: ASYNC110
            await anyio.sleep(0.01)


@pytest.fixture
def no_hyperqueue_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("HYPERQUEUE_"):
            monkeypatch.delenv(name)


# --------------------------------------------------------------------------- workers.*


@pytest.mark.anyio
async def test_workers_queues_a_job_on_another_queue_stays_pending(serve_app: Serve) -> None:
    plan = plan_for(config(storage={"kind": "memory"}, workers={"queues": ["a"]}))
    async with serve_app(plan.app) as client:
        other = await submit(client, task="add", args=[1, 2], queue="b")
        mine = await submit(client, task="add", args=[2, 3], queue="a")

        async def done() -> bool:
            return await status_of(client, mine) == "completed"

        await wait_until(done)
        await anyio.sleep(0.2)  # the pool is idle and would have taken it by now
        assert await status_of(client, other) == "pending"


@pytest.mark.anyio
async def test_every_worker_setting_reaches_the_pool(serve_app: Serve) -> None:
    workers = {
        "concurrency": 3,
        "queues": ["a", "b"],
        "lease": 12.5,
        "drain_timeout": 4.0,
        "prefetch": 2,
    }
    plan = plan_for(config(storage={"kind": "memory"}, workers=workers))
    async with serve_app(plan.app):
        pool = plan.plugin.worker
        assert pool is not None
        assert pool.concurrency == 3
        assert pool.queues == ("a", "b")
        assert pool.lease == 12.5
        assert pool.drain_timeout == 4.0
        assert pool.prefetch == 2


@pytest.mark.anyio
@pytest.mark.parametrize(("prefetch", "running"), [(0, 1), (2, 3)])
async def test_workers_prefetch_claims_jobs_beyond_concurrency(
    serve_app: Serve, prefetch: int, running: int
) -> None:
    workers = {"concurrency": 1, "prefetch": prefetch, "drain_timeout": 0.0}
    plan = plan_for(config(storage={"kind": "memory"}, workers=workers))
    async with serve_app(plan.app) as client:
        for _ in range(4):
            await submit(client, task="sleep", kwargs={"seconds": 5.0})

        async def claimed() -> bool:
            (row,) = (await client.get("/api/v1/queues")).json()["queues"]
            return bool(row["running"] == running)

        await wait_until(claimed)
        await anyio.sleep(0.1)
        (row,) = (await client.get("/api/v1/queues")).json()["queues"]
        assert (row["running"], row["pending"]) == (running, 4 - running)


def test_command_line_options_win_over_the_configuration() -> None:
    plan = plan_for(
        config(storage={"kind": "memory"}, workers={"concurrency": 3, "drain_timeout": 9.0}),
        concurrency=7,
        drain_timeout=1.0,
        host="127.0.0.2",
        port=0,
    )
    assert (plan.workers.concurrency, plan.workers.drain_timeout) == (7, 1.0)
    assert (plan.plugin.concurrency, plan.plugin.drain_timeout) == (7, 1.0)
    assert (plan.host, plan.port) == ("127.0.0.2", 0)
    assert plan.config.workers.concurrency == 3  # the configuration as read, for the API


def test_unset_workers_queues_serves_every_queue() -> None:
    plan = plan_for(config(storage={"kind": "memory"}))
    assert plan.workers.queues is None
    assert plan.plugin.queues is None


# --------------------------------------------------------------------------- storage.*


@pytest.mark.anyio
async def test_storage_kind_memory_keeps_jobs_in_this_process_and_says_so(
    serve_app: Serve,
) -> None:
    plan = plan_for(config(storage={"kind": "memory"}))
    assert type(plan.queue.storage) is hq.MemoryStorage
    assert plan.state == "memory (this process only)"
    assert any("nothing survives a restart" in w for w in plan.warnings)
    assert any("no other process" in w for w in plan.warnings)
    assert plan.retention is None  # nothing to prune on disk; said in a warning
    assert any(w.startswith("retention.*: not applied") for w in plan.warnings)
    async with serve_app(plan.app) as client:
        job = await submit(client, task="add", args=[1, 2])

        async def done() -> bool:
            return await status_of(client, job) == "completed"

        await wait_until(done)


def test_storage_kind_memory_replaces_a_queue_s_own_storage(tmp_path: Path) -> None:
    queue = demo_queue(SQLiteStorage(tmp_path / "own.db"))
    plan = plan_for(config(storage={"kind": "memory"}), queue)
    assert type(queue.storage) is hq.MemoryStorage
    assert plan.retention is None


def test_storage_kind_sqlite_uses_storage_path(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    plan = plan_for(config(storage={"kind": "sqlite", "path": str(path)}))
    assert isinstance(plan.queue.storage, SQLiteStorage)
    assert plan.queue.storage.path == path
    assert plan.state == f"SQLite file {path.resolve()}"
    assert not plan.warnings
    assert isinstance(plan.retention, Retention)


def test_db_option_wins_over_storage(tmp_path: Path) -> None:
    plan = plan_for(config(storage={"kind": "memory"}), db=tmp_path / "cli.db")
    assert isinstance(plan.queue.storage, SQLiteStorage)
    assert plan.queue.storage.path == tmp_path / "cli.db"
    assert not plan.warnings


def test_a_queue_s_own_storage_stays_unless_storage_is_configured(tmp_path: Path) -> None:
    own = SQLiteStorage(tmp_path / "own.db")
    queue = demo_queue(own)
    plan_for(config(), queue)
    assert queue.storage is own
    plan_for(config(storage={"path": str(tmp_path / "configured.db")}), queue)
    assert isinstance(queue.storage, SQLiteStorage)
    assert queue.storage.path == tmp_path / "configured.db"


# --------------------------------------------------------------------------- retention.*


def test_retention_settings_become_the_sqlite_policy(tmp_path: Path) -> None:
    settings = RetentionSettings(
        max_age_days=2.0, archive_dir=str(tmp_path), min_free_disk_mb=10, interval_seconds=60
    )
    assert retention_policy(settings) == RetentionPolicy(
        keep_for=2 * 86_400.0, archive_dir=str(tmp_path), min_free_bytes=10 * 1024 * 1024
    )
    plan = plan_for(
        config(storage={"path": str(tmp_path / "x.db")}, retention={"interval_seconds": 60})
    )
    assert plan.retention is not None
    assert plan.retention.interval == 60
    assert plan.retention.policy == retention_policy(RetentionSettings())
    assert plan.retention.clock is plan.queue.clock


@pytest.mark.anyio
async def test_retention_prunes_old_finished_jobs_after_archiving_them(
    tmp_path: Path, serve_app: Serve
) -> None:
    archive = tmp_path / "archive"
    plan = plan_for(
        config(
            storage={"path": str(tmp_path / "x.db")},
            # finished jobs kept 0.0864 s, checked every 0.1 s
            retention={
                "max_age_days": 1e-6,
                "interval_seconds": 0.1,
                "archive_dir": str(archive),
            },
        )
    )
    async with serve_app(plan.app) as client:
        job = await submit(client, task="add", args=[20, 22])
        pending = await submit(client, task="add", args=[1, 1], run_at=time.time() + 3600)

        async def pruned() -> bool:
            return await status_of(client, job) is None

        await wait_until(pruned, timeout=10)
        assert await status_of(client, pending) == "pending"  # only finished jobs go
        health = (await client.get("/health")).json()
        assert health["checks"]["retention"]["status"] == "healthy"
    archived = [j for f in sorted(archive.glob("*.jsonl.gz")) for j in read_archive(f)]
    assert [(j.id, j.result) for j in archived] == [(job, 42)]


class OffsetClock(hq.SystemClock):
    """The system clock, ``offset`` seconds ahead: moves "now" without waiting."""

    __slots__ = ("offset",)

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return super().now() + self.offset


def clocked_queue(storage: SQLiteStorage) -> tuple[hq.Queue, OffsetClock]:
    clock = OffsetClock()
    queue = hq.Queue(storage, clock=clock, events=hq.EventBus(history=100))

    @queue.task
    async def add(a: int, b: int) -> int:
        return a + b

    return queue, clock


@pytest.mark.anyio
@pytest.mark.parametrize(("min_free_disk_mb", "kept"), [(0, True), (1 << 40, False)])
async def test_retention_min_free_disk_mb_prunes_harder_when_the_disk_is_low(
    tmp_path: Path, serve_app: Serve, min_free_disk_mb: int, kept: bool
) -> None:
    """Under ``min_free_disk_mb`` free (1 EiB: always), finished jobs are kept an hour,
    not ``max_age_days``; with 0 the disk is never low."""
    queue, clock = clocked_queue(SQLiteStorage(tmp_path / "x.db"))
    settings = config(retention={"min_free_disk_mb": min_free_disk_mb, "max_age_days": 30})
    plan = plan_for(settings, queue)
    assert plan.retention is not None
    async with serve_app(plan.app) as client:
        job = await submit(client, task="add", args=[1, 2])

        async def done() -> bool:
            return await status_of(client, job) == "completed"

        await wait_until(done)
        service = plan.retention.service
        assert service is not None

        async def idle() -> bool:  # the run at start is over: the next one sees the offset
            return service.stats().runs >= 1 and not service.running

        await wait_until(idle)
        runs = service.stats().runs
        clock.offset = 2 * 3600.0  # the job finished two hours ago
        service.trigger()

        async def ran() -> bool:
            return service.stats().runs > runs

        await wait_until(ran)
        assert service.stats().failures == 0
        assert (await status_of(client, job) == "completed") is kept


# --------------------------------------------------------------------------- environment


@pytest.mark.usefixtures("no_hyperqueue_env")
def test_hyperqueue_variables_apply_without_config(tmp_path: Path) -> None:
    runner = CliRunner()
    env = {
        "HYPERQUEUE_WORKERS__CONCURRENCY": "3",
        "HYPERQUEUE_WORKERS__QUEUES": '["a"]',
        "HYPERQUEUE_STORAGE__PATH": str(tmp_path / "env.db"),
    }
    result = runner.invoke(main, ["serve", "--check"], env=env)
    assert result.exit_code == 0, result.output
    assert "workers: 3 (queues: a;" in result.output
    assert f"state: SQLite file {(tmp_path / 'env.db').resolve()}" in result.output
    assert not (tmp_path / "env.db").exists()  # --check opens nothing


@pytest.mark.usefixtures("no_hyperqueue_env")
def test_a_bad_variable_without_config_exits_2_naming_it() -> None:
    result = CliRunner().invoke(
        main, ["serve", "--check"], env={"HYPERQUEUE_WORKERS__CONCURRENCY": "0"}
    )
    assert result.exit_code == 2
    assert "workers.concurrency" in result.output
    assert "HYPERQUEUE_WORKERS__CONCURRENCY" in result.output


@pytest.mark.usefixtures("no_hyperqueue_env")
def test_client_variables_do_not_break_serve_config(tmp_path: Path) -> None:
    path = tmp_path / "hq.toml"
    path.write_text('[storage]\nkind = "memory"\n[workers]\nconcurrency = 4\n')
    env = {"HYPERQUEUE_URL": "http://127.0.0.1:9999", "HYPERQUEUE_API_KEY": "s3cret"}
    result = CliRunner().invoke(main, ["serve", "--check", "--config", str(path)], env=env)
    assert result.exit_code == 0, result.output
    assert "workers: 4 (" in result.output
    assert "s3cret" not in result.output
    shown = CliRunner().invoke(main, ["config", "show", "--config", str(path)], env=env)
    assert shown.exit_code == 0, shown.output


@pytest.mark.usefixtures("no_hyperqueue_env")
def test_postgres_storage_without_a_dsn_is_refused_naming_the_key() -> None:
    result = CliRunner().invoke(
        main, ["serve", "--check"], env={"HYPERQUEUE_STORAGE__KIND": "postgres"}
    )
    assert result.exit_code == 2
    assert "storage.dsn: required when kind is 'postgres'" in result.output


# the client variables (HYPERQUEUE_URL, HYPERQUEUE_API_KEY) of status and every other
# operator command are tested against real servers in tests/adapters/cli/


# --------------------------------------------------------------------------- real processes


@pytest.fixture
def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("HYPERQUEUE_")}


def test_serve_with_client_variables_and_workers_queues_from_the_environment(
    tmp_path: Path, clean_env: dict[str, str]
) -> None:
    """One shell sets the client's variables and the server's: ``serve --config`` starts,
    its pool serves only ``HYPERQUEUE_WORKERS__QUEUES``, and ``status`` finds it."""
    (tmp_path / "hq.toml").write_text('[storage]\nkind = "memory"\n')
    env = {
        **clean_env,
        "HYPERQUEUE_URL": "http://127.0.0.1:9",
        "HYPERQUEUE_API_KEY": "unused-here",
        "HYPERQUEUE_WORKERS__QUEUES": '["a"]',
    }
    proc = subprocess.Popen(
        [*CLI, "serve", "--port", "0", "--config", "hq.toml"],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    try:
        url = wait_serving(proc, "/health/ready")
        ids = {}
        for name in ("a", "b"):
            response = httpx.post(
                f"{url}/api/v1/jobs", json={"task": "add", "args": [1, 2], "queue": name}
            )
            assert response.status_code == 201, response.text
            ids[name] = response.json()["id"]
        wait_for(url, ids["a"], {"completed"})
        status = subprocess.run(
            [*CLI, "status", "--json"],
            env={**env, "HYPERQUEUE_URL": url},
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert status.returncode == 0, status.stderr.decode()
        queues = {q["queue"]: q for q in json.loads(status.stdout)["queues"]}
        assert (queues["a"]["completed"], queues["b"]["pending"]) == (1, 1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


WORKER_APP = """
import hyperqueue as hq

queue = hq.Queue()


@queue.task
async def double(x: int) -> int:
    return 2 * x
"""


def test_worker_command_takes_workers_and_storage_from_config_and_environment(
    tmp_path: Path, clean_env: dict[str, str]
) -> None:
    (tmp_path / "wjobs.py").write_text(WORKER_APP)
    db = tmp_path / "w.db"
    (tmp_path / "hq.toml").write_text(f'[storage]\npath = "{db}"\n[workers]\nconcurrency = 2\n')

    async def enqueue() -> dict[str, str]:
        producer = hq.Queue(SQLiteStorage(db))

        @producer.task
        async def double(x: int) -> int:
            raise AssertionError("runs in the worker process")

        async with producer:
            ids = {}
            for name in ("a", "b"):
                job = await producer.enqueue("double", args=[21], queue=name)
                ids[name] = job.id
            return ids

    ids = anyio.run(enqueue)
    proc = subprocess.Popen(
        [*CLI, "worker", "wjobs:queue", "--config", "hq.toml"],
        cwd=tmp_path,
        env={**clean_env, "PYTHONPATH": str(tmp_path), "HYPERQUEUE_WORKERS__QUEUES": '["a"]'},
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    try:
        banner = proc.stderr.readline().decode() + proc.stderr.readline().decode()
        assert "2 runners" in banner and f"SQLite file {db.resolve()}" in banner, banner
        assert "queues: a;" in banner, banner

        async def check() -> tuple[hq.Job, hq.Job]:
            async with hq.Queue(SQLiteStorage(db)) as reader:
                done = await reader.wait(ids["a"], timeout=20)
                await anyio.sleep(0.3)
                return done, await reader.get(ids["b"])

        done, other = anyio.run(check)
        assert done.result == 42
        assert other.status == hq.JobStatus.PENDING
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


# --------------------------------------------------------------------------- templates


@pytest.mark.anyio
async def test_templates_from_the_config_apply_to_submissions(serve_app: Serve) -> None:
    settings = config(
        storage={"kind": "memory"},
        workers={"queues": ["none"]},
        templates={"nightly": {"queue": "reports", "priority": "low", "max_attempts": 4}},
    )
    plan = plan_for(settings)
    async with serve_app(plan.app) as client:
        response = await client.post(
            "/api/v1/jobs", json={"task": "add", "args": [1, 2], "template": "nightly"}
        )
        assert response.status_code == 201, response.text
        job = response.json()
        assert (job["queue"], job["priority"], job["max_attempts"]) == ("reports", "low", 4)
        unknown = await client.post(
            "/api/v1/jobs", json={"task": "add", "args": [1, 2], "template": "weekly"}
        )
        assert unknown.status_code == 422
        assert "unknown template 'weekly'" in unknown.json()["detail"]


def test_slow_job_seconds_adds_the_slow_jobs_hook(tmp_path: Path) -> None:
    queue = demo_queue()
    plain = build_server(parse_config({}), queue, db=tmp_path / "a.db")
    assert not any(isinstance(h, hq.SlowJobs) for h in plain.queue.hooks)
    config = parse_config({"workers": {"slow_job_seconds": 2.5}})
    plan = build_server(config, demo_queue(), db=tmp_path / "b.db")
    [slow] = [h for h in plan.queue.hooks if isinstance(h, hq.SlowJobs)]
    assert slow.after == 2.5
