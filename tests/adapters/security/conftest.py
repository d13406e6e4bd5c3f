from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

import hyperqueue as hq
from hyperqueue.testing import FakeClock
from hyperqueue_litestar._config import ApiKey

KEYS = {
    "admin-key": ApiKey(name="root", key_hash=ApiKey.hash_key("admin-key"), roles=["admin"]),
    "op-key": ApiKey(name="ops", key_hash=ApiKey.hash_key("op-key"), roles=["operator"]),
    "view-key": ApiKey(name="watcher", key_hash=ApiKey.hash_key("view-key"), roles=["viewer"]),
    "acme-key": ApiKey(
        name="acme", key_hash=ApiKey.hash_key("acme-key"), roles=["operator"], tenant="acme"
    ),
    "globex-key": ApiKey(
        name="globex", key_hash=ApiKey.hash_key("globex-key"), roles=["operator"], tenant="globex"
    ),
}


@pytest.fixture
def anyio_backend() -> str:
    """Litestar runs on asyncio: the server's tests run there."""
    return "asyncio"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def queue(clock: FakeClock) -> hq.Queue:
    queue = hq.Queue(clock=clock, events=hq.EventBus(history=1000, clock=clock))

    @queue.task
    async def add(a: int, b: int) -> int:
        return a + b

    return queue


@pytest.fixture
def keys() -> dict[str, ApiKey]:
    """Configured keys by their secret: admin, operator, viewer, two tenant operators."""
    return dict(KEYS)


@pytest.fixture
def serve() -> Any:
    """``async with serve(app) as client``: the app's lifespan and a client."""
    return _serve


@asynccontextmanager
async def _serve(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The app's lifespan and a client in the test's own event loop."""
    async with app.lifespan():
        transport = httpx.ASGITransport(app=app, client=("127.0.0.7", 4321))
        async with httpx.AsyncClient(transport=transport, base_url="http://hq.test") as client:
            yield client
