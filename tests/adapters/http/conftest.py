"""A real server for HttpStorage: the Litestar app served by uvicorn on an ephemeral
port, in the test's own event loop, so every call goes over TCP and through the routes.

The storage contract passes an explicit ``now`` to each call, and a production server
never takes its time from a client. So the test server's clock is the test's: a
:class:`SetClock` shared with :class:`ClockedStorage`, which sets it to a call's
``now`` before sending the call (an ``HttpStorage`` sends no time for a lease). The
server reads its own clock, as in production; only the test decides what it reads.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import uvicorn

import hyperqueue as hq
from hyperqueue_http import HttpStorage
from hyperqueue_litestar import ApiKey, create_app

# the helpers that start ``hyperqueue serve`` as a real process live with the server tests
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
from server_process import Server, start_server, stop

OPERATOR = "op-secret-1"
"""The secret of the keyed server's operator key (``ops``)."""
WORKER = "worker-secret-1"
"""The secret of the keyed server's worker key (``remote``)."""


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``hyperqueue serve`` as a real process (SQLite, its demo tasks) with two keys:
    an operator key and a worker key."""
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


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """uvicorn and Litestar run on asyncio: these tests run there (module-wide, so one
    server serves a module's tests)."""
    return "asyncio"


class SetClock:
    """A clock whose time the test sets; waits are real (the server's long polls)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.value = start

    def now(self) -> float:
        return self.value

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(seconds, 0.0))

    def cancel_after(self, seconds: float) -> anyio.CancelScope:
        return anyio.CancelScope(deadline=anyio.current_time() + max(seconds, 0.0))


class ClockedStorage:
    """``inner`` (an HttpStorage), with the server's clock set to each call's ``now``
    first (to a registered worker's ``seen_at`` for :meth:`register_worker`)."""

    def __init__(self, inner: HttpStorage, clock: SetClock) -> None:
        self._inner = inner
        self._clock = clock

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not inspect.iscoroutinefunction(attr):
            return attr
        clock = self._clock

        @functools.wraps(attr)
        async def call(*args: Any, **kwargs: Any) -> Any:
            if "now" in kwargs:
                clock.value = kwargs["now"]
            elif name == "register_worker":
                clock.value = args[0].seen_at
            return await attr(*args, **kwargs)

        return call


class FreshStorage:
    """The server's storage: a memory storage that :meth:`reset` replaces with an empty
    one, so one server process serves every test of a module from a clean slate."""

    def __init__(self) -> None:
        self.inner = hq.MemoryStorage()

    async def reset(self) -> None:
        self.inner = hq.MemoryStorage()
        await self.inner.open()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class _Server(uvicorn.Server):
    """uvicorn's server, telling when it listens."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = anyio.Event()

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets=sockets)
        self.listening.set()


@asynccontextmanager
async def serve(queue: hq.Queue, **options: Any) -> AsyncIterator[str]:
    """``queue``'s app (no in-process workers) on 127.0.0.1 and an ephemeral port; yields
    its URL."""
    app = create_app(queue, workers=False, **options)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = _Server(config)
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        with anyio.fail_after(10):
            await server.listening.wait()
        port = server.servers[0].sockets[0].getsockname()[1]
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True


@pytest.fixture(scope="module")
def clock() -> SetClock:
    return SetClock()


@pytest.fixture(scope="module")
def server_storage() -> FreshStorage:
    return FreshStorage()


@pytest.fixture(scope="module")
async def module_server(clock: SetClock, server_storage: FreshStorage) -> AsyncIterator[str]:
    queue = hq.Queue(server_storage, clock=clock)  # type: ignore[arg-type]
    async with serve(queue) as url:
        yield url


@pytest.fixture
async def server_url(module_server: str, server_storage: FreshStorage, clock: SetClock) -> str:
    """The module's server, with an empty storage and its clock at the start."""
    await server_storage.reset()
    clock.value = 1_700_000_000.0
    return module_server
