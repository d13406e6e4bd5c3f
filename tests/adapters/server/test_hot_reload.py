"""Hot reload: a valid change of the watched file applies at once (keys, tenant quotas,
rate limits, the slow-request threshold) as a new version by "file"; an invalid one is
refused with one log line and the server goes on as it was."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_process import start_server, stop

import hyperqueue as hq
from hyperqueue.testing import FakeClock
from hyperqueue_litestar import create_app
from hyperqueue_litestar._auth import Auth
from hyperqueue_litestar._config import ApiKey, load_config
from hyperqueue_litestar._config_routes import ConfigApi
from hyperqueue_litestar._limits import RateLimitMiddleware
from hyperqueue_litestar._metrics import Metrics

pytestmark = pytest.mark.anyio

Serve = Callable[[Any], AbstractAsyncContextManager[httpx.AsyncClient]]


def config_text(*, key: str, viewer: str, max_queued: int, limit: str, slow_ms: int) -> str:
    """Keys: ``admin-secret`` (admin), ``key`` (operator bound to tenant acme) and
    ``viewer`` (viewer, no tenant); ``limit`` is that of ``GET /api/v1/queues``."""
    return f"""
[server]
slow_request_ms = {slow_ms}

[[keys]]
name = "root"
key_hash = "{ApiKey.hash_key("admin-secret")}"
roles = ["admin"]

[[keys]]
name = "acme-ci"
key_hash = "{ApiKey.hash_key(key)}"
roles = ["operator"]
tenant = "acme"

[[keys]]
name = "watcher"
key_hash = "{ApiKey.hash_key(viewer)}"
roles = ["viewer"]

[tenants.acme]
max_queued = {max_queued}

[rate_limits.routes]
"GET /api/v1/queues" = "{limit}"
"""


def write(path: Path, text: str) -> None:
    """Write and move the mtime on, so the watcher sees a change however fast the test."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    os.utime(path, ns=(before + 1_000_000_000, before + 1_000_000_000))


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def queue(clock: FakeClock) -> hq.Queue:
    queue = hq.Queue(clock=clock, events=hq.EventBus(history=100, clock=clock))

    @queue.task
    async def add(a: int, b: int) -> int:
        return a + b

    return queue


async def test_a_valid_change_applies_at_once_as_a_version_by_file(
    tmp_path: Path, queue: hq.Queue, clock: FakeClock, serve_app: Serve
) -> None:
    path = tmp_path / "hq.toml"
    write(path, config_text(key="old-key", viewer="old-view", max_queued=1, limit="2/minute",
                            slow_ms=500))  # fmt: skip
    config = load_config(path, env={})
    auth = Auth.from_config(queue, config)
    limits = RateLimitMiddleware(queue, config.rate_limits)
    metrics = Metrics(queue, slow_request_ms=config.server.slow_request_ms)
    api = ConfigApi(
        queue,
        config,
        targets=[auth, limits, metrics],
        guards=[auth.guard],
        watch=path,
        watch_interval=1.0,
        env={},
    )
    app = create_app(
        queue,
        workers=False,
        guards=[auth.guard],
        middleware=[auth.middleware, limits],
        plugins=[metrics, api],
    )
    old = {"Authorization": "Bearer old-key"}
    new = {"Authorization": "Bearer new-key"}
    job = {"task": "add", "args": [1, 2]}
    async with serve_app(app) as client:
        assert (await client.post("/api/v1/jobs", json=job, headers=old)).status_code == 201
        assert (await client.post("/api/v1/jobs", json=job, headers=old)).status_code == 429
        queues = await client.get("/api/v1/queues", headers={"X-API-Key": "old-view"})
        assert queues.headers["RateLimit-Limit"] == "2"

        write(path, config_text(key="new-key", viewer="new-view", max_queued=5, limit="7/minute",
                                slow_ms=250))  # fmt: skip
        await clock.advance(1.0)

        assert (await client.post("/api/v1/jobs", json=job, headers=old)).status_code == 401
        assert (await client.post("/api/v1/jobs", json=job, headers=new)).status_code == 201
        assert (
            await client.get("/api/v1/queues", headers={"X-API-Key": "old-view"})
        ).status_code == 401
        listing = await client.get("/api/v1/queues", headers={"X-API-Key": "new-view"})
        assert listing.headers["RateLimit-Limit"] == "7"
        assert metrics.slow_request_ms == 250
        history = await api.history.history()
        assert [(v.version, v.author) for v in history] == [(2, "file"), (1, "startup")]
        assert api.version == 2


async def test_an_invalid_change_is_refused_with_one_log_line(
    tmp_path: Path,
    queue: hq.Queue,
    clock: FakeClock,
    serve_app: Serve,
) -> None:
    path = tmp_path / "hq.toml"
    good = config_text(key="ci", viewer="the-key", max_queued=1, limit="5/minute", slow_ms=500)
    write(path, good)
    config = load_config(path, env={})
    auth = Auth.from_config(queue, config)
    api = ConfigApi(queue, config, targets=[auth], watch=path, watch_interval=1.0, env={})
    app = create_app(queue, workers=False, guards=[auth.guard], plugins=[api])
    viewer = {"Authorization": "Bearer the-key"}
    async with serve_app(app) as client:
        write(path, good.replace('roles = ["viewer"]', 'roles = ["superuser"]'))
        # Litestar's logging set-up replaces the root handlers (and caplog's with them)
        # when the app starts: listen on the logger itself
        handler = Collect()
        logging.getLogger("hyperqueue.config").addHandler(handler)
        await clock.advance(1.0)
        await clock.advance(1.0)  # the same bad content is not reported again
        assert (await client.get("/api/v1/queues", headers=viewer)).status_code == 200
        logging.getLogger("hyperqueue.config").removeHandler(handler)
        refusals = [r.getMessage() for r in handler.records]
        assert len(refusals) == 1
        assert "refused" in refusals[0]
        assert "keys[2].roles" in refusals[0]
        assert str(path) in refusals[0]
        assert (await client.get("/api/v1/queues", headers=viewer)).status_code == 200
        assert api.current == config
        assert len(await api.history.history()) == 1


def test_serve_with_config_reloads_the_edited_file(tmp_path: Path) -> None:
    path = tmp_path / "hq.toml"
    write(path, config_text(key="ci", viewer="old-key", max_queued=5, limit="50/minute",
                            slow_ms=500))  # fmt: skip
    server = start_server(tmp_path, "--config", str(path))
    try:
        url = f"{server.url}/api/v1/queues"
        assert httpx.get(url, headers={"X-API-Key": "old-key"}).status_code == 200
        write(path, config_text(key="ci", viewer="new-key", max_queued=5, limit="50/minute",
                                slow_ms=500))  # fmt: skip
        deadline = time.monotonic() + 15
        while httpx.get(url, headers={"X-API-Key": "new-key"}).status_code != 200:
            assert time.monotonic() < deadline, "the edited file was never applied"
            time.sleep(0.1)
        assert httpx.get(url, headers={"X-API-Key": "old-key"}).status_code == 401
        admin = {"X-API-Key": "admin-secret"}
        history = httpx.get(f"{server.url}/api/v1/config/history", headers=admin).json()
        assert [v["author"] for v in history["items"]] == ["file", "startup"]
    finally:
        stop(server)
