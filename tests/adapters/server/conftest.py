from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest

import hyperqueue as hq
from hyperqueue_litestar import create_app, demo_queue

MakeClient = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def anyio_backend() -> str:
    """Litestar and uvicorn run on asyncio: the server's tests run there."""
    return "asyncio"


@pytest.fixture
def queue() -> hq.Queue:
    return demo_queue()


@asynccontextmanager
async def serve_in_process(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The app's lifespan and an HTTP client, in the test's own event loop (Litestar's
    test client runs the app in another thread, where the queue's wake-ups would not
    reach the test)."""
    async with app.lifespan():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hq.test") as client:
            yield client


@pytest.fixture
def make_client() -> MakeClient:
    """``async with make_client(queue, **options) as client``: the app in its lifespan."""

    def make(queue: hq.Queue, **options: Any) -> AbstractAsyncContextManager[httpx.AsyncClient]:
        return serve_in_process(create_app(queue, **options))

    return make


@pytest.fixture
def serve_app() -> Callable[[Any], AbstractAsyncContextManager[httpx.AsyncClient]]:
    """``async with serve_app(app) as client``: any Litestar app in its lifespan."""
    return serve_in_process


@pytest.fixture
async def client(queue: hq.Queue, make_client: MakeClient) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(queue, workers=False) as client:
        yield client
