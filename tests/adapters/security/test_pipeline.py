"""The server's layers run in one pass (``_pipeline``) exactly as nested middleware would:
in order, a refusal seen only by the layers outside it, every watcher closed innermost
first whatever happened inside, the fused app answering as the unfused one."""

from __future__ import annotations

from typing import Any

import pytest
from litestar import Litestar
from litestar.middleware import DefineMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

import hyperqueue as hq
from hyperqueue_litestar import HyperqueuePlugin, create_app
from hyperqueue_litestar._audit import Audit, MemoryAuditSink
from hyperqueue_litestar._auth import Auth
from hyperqueue_litestar._config import ApiKey, RateLimits
from hyperqueue_litestar._limits import RateLimitMiddleware
from hyperqueue_litestar._metrics import Metrics
from hyperqueue_litestar._pipeline import ANSWERED, Call, Entry, Layer, Layers, fuse, run

pytestmark = pytest.mark.anyio


class _Recorder(Layer):
    """Logs what it sees; answers 418 itself when ``refuse`` is set."""

    def __init__(self, name: str, log: list[str], *, refuse: bool = False) -> None:
        self.name = name
        self.log = log
        self.refuse = refuse

    async def enter(self, call: Call) -> Entry:
        self.log.append(f"enter {self.name}")
        if self.refuse:
            await call.send({"type": "http.response.start", "status": 418, "headers": []})
            await call.send({"type": "http.response.body", "body": b"", "more_body": False})
            return ANSWERED
        return _Watch(self.name, self.log)


class _Watch:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    def seen(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.log.append(f"{self.name} saw {message['status']}")

    def close(self) -> None:
        self.log.append(f"close {self.name}")


class _FailingClose(_Watch):
    def close(self) -> None:
        self.log.append(f"close {self.name}")
        raise RuntimeError("close failed")


def _scope() -> Scope:
    return {"type": "http", "method": "POST", "path": "/x", "headers": [], "state": {}}  # type: ignore[typeddict-item]


async def _sent(messages: list[Message], message: Message) -> None:
    messages.append(message)


async def test_layers_answer_in_order_and_close_innermost_first() -> None:
    log: list[str] = []
    sent: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        log.append("app")
        await send({"type": "http.response.start", "status": 201, "headers": []})

    layers = [_Recorder("outer", log), _Recorder("inner", log)]
    await run(layers, _scope(), None, lambda m: _sent(sent, m), app)  # type: ignore[arg-type]
    assert log == [
        "enter outer",
        "enter inner",
        "app",
        "inner saw 201",  # as through nested send wrappers: the inner one first
        "outer saw 201",
        "close inner",
        "close outer",
    ]
    assert [m["status"] for m in sent] == [201]


async def test_a_refusal_is_seen_by_the_layers_outside_it_only() -> None:
    log: list[str] = []
    sent: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError("a refused request never reaches the app")

    layers = [
        _Recorder("outer", log),
        _Recorder("refuser", log, refuse=True),
        _Recorder("inner", log),
    ]
    await run(layers, _scope(), None, lambda m: _sent(sent, m), app)  # type: ignore[arg-type]
    assert log == ["enter outer", "enter refuser", "outer saw 418", "close outer"]
    assert sent[0]["status"] == 418


async def test_watchers_close_even_when_the_app_or_another_close_fails() -> None:
    log: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise ValueError("the app failed")

    class Failing(_Recorder):
        async def enter(self, call: Call) -> Entry:
            self.log.append(f"enter {self.name}")
            return _FailingClose(self.name, self.log)

    layers = [_Recorder("outer", log), Failing("middle", log), _Recorder("inner", log)]
    # as from nested ``finally`` blocks: the failing close's error, the app's as context
    with pytest.raises(RuntimeError, match="close failed") as raised:
        await run(layers, _scope(), None, lambda m: _sent([], m), app)  # type: ignore[arg-type]
    assert isinstance(raised.value.__context__, ValueError)
    assert log[-3:] == ["close inner", "close middle", "close outer"]

    async def quiet(scope: Scope, receive: Receive, send: Send) -> None:
        return None

    log.clear()
    with pytest.raises(RuntimeError, match="close failed"):
        await run(layers, _scope(), None, lambda m: _sent([], m), quiet)  # type: ignore[arg-type]
    assert log[-3:] == ["close inner", "close middle", "close outer"]


def test_fuse_joins_consecutive_layers_and_keeps_everything_else_in_place() -> None:
    log: list[str] = []
    a, b, c = (_Recorder(n, log) for n in "abc")

    class Other:
        def __call__(self, app: ASGIApp) -> ASGIApp:
            return app

    other = Other()
    defined = DefineMiddleware(Other)
    fused = fuse([a, b, other, c, defined])
    assert isinstance(fused[0], Layers) and fused[0].layers == (a, b)
    assert fused[1:] == [other, c, defined]  # a lone layer stays as it is

    class Excluding(_Recorder):
        exclude_path_pattern = "^/health"

    d = Excluding("d", log)
    assert fuse([a, d, b]) == [a, d, b]  # a layer with an exclusion runs on its own


def _build(queue: hq.Queue, sink: MemoryAuditSink, *, fused: bool) -> Any:
    """The server's layers over the API, as ``create_app`` fuses them or as plain nested
    middleware (the plugin on its own)."""
    keys = [ApiKey(name="ops", key_hash=ApiKey.hash_key("op-key"), roles=["operator"])]
    auth = Auth(queue, keys=keys)
    limits = RateLimitMiddleware(queue, RateLimits(routes={"POST /api/v1/jobs": "2/minute"}))
    plugins = [Metrics(queue), Audit(queue, sink, guards=[auth.guard])]
    if fused:
        return create_app(
            queue,
            workers=False,
            guards=[auth.guard],
            middleware=[auth.middleware, limits],
            plugins=plugins,
        )
    plugin = HyperqueuePlugin(
        queue, workers=False, guards=[auth.guard], middleware=[auth.middleware, limits]
    )
    return Litestar(plugins=[plugin, *plugins])


@pytest.mark.parametrize("fused", [True, False])
async def test_the_fused_app_answers_audits_and_counts_as_nested_middleware(
    queue: hq.Queue, serve: Any, fused: bool
) -> None:
    sink = MemoryAuditSink()
    app = _build(queue, sink, fused=fused)
    layers = [m for m in app.middleware if isinstance(m, Layers)]
    assert bool(layers) is fused
    ops = {"X-API-Key": "op-key"}
    job = {"task": "add", "args": [1, 2]}
    async with serve(app) as client:
        answers = [
            await client.post("/api/v1/jobs", json=job),  # 401
            await client.post("/api/v1/jobs", json=job, headers=ops),  # 201
            await client.post("/api/v1/jobs", json=job, headers=ops),  # 201
            await client.post("/api/v1/jobs", json=job, headers=ops),  # 429
            await client.post("/api/v1/jobs", content=b"x", headers=ops),  # 415
        ]
        metrics = (await client.get("/metrics")).text
    assert [a.status_code for a in answers] == [401, 201, 201, 429, 415]
    # the 401 counts against its address's quota, the key's own quota starts at 2
    assert [a.headers.get("RateLimit-Remaining") for a in answers] == ["1", "1", "0", "0", None]
    assert answers[3].headers["Retry-After"] == "60"
    # one record per request (security events are written by the audit's own task)
    assert sorted((r.event, r.result) for r in sink.records) == [
        ("job.submit", "success"),
        ("job.submit", "success"),
        ("security.auth_failed", "refused"),
        ("security.media_type", "refused"),
        ("security.rate_limited", "refused"),
    ]
    for status, count in (("401", 1), ("201", 2), ("429", 1), ("415", 1)):
        line = (
            f'hyperqueue_http_requests_total{{method="POST",route="/api/v1/jobs",'
            f'status="{status}"}} {count}.0'
        )
        assert line in metrics
