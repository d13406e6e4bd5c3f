"""``POST /api/v1/jobs`` through its fast lane (``_lane``) answers exactly as its route:
same statuses, headers and bodies for plain submissions, refusals, errors and anything
the lane leaves to the route; the keys, the audit log and the host's own hooks hold."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from litestar import Litestar, Request
from litestar.config.app import AppConfig
from litestar.plugins import InitPlugin
from litestar.routes import HTTPRoute

import hyperqueue as hq
from hyperqueue_litestar import HyperqueuePlugin, create_app, demo_queue
from hyperqueue_litestar._audit import Audit, MemoryAuditSink
from hyperqueue_litestar._auth import Auth
from hyperqueue_litestar._config import ApiKey
from hyperqueue_sqlite import SQLiteStorage

pytestmark = pytest.mark.anyio

JOB = {"task": "add", "args": [1, 2]}
TIMES = ("id", "created_at", "run_at")  # what differs between two submissions


@pytest.fixture
def routed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of the requests that reached a Litestar route."""
    paths: list[str] = []
    handle = HTTPRoute.handle

    async def counting(self: HTTPRoute, scope: Any, receive: Any, send: Any) -> None:
        paths.append(scope["path"])
        await handle(self, scope, receive, send)

    monkeypatch.setattr(HTTPRoute, "handle", counting)
    return paths


def _route_only(queue: hq.Queue, **options: Any) -> Litestar:
    """The same API without the lane: the plugin on its own, no ``create_app``."""
    return Litestar(plugins=[HyperqueuePlugin(queue, workers=False, **options)])


def _shape(answer: httpx.Response) -> tuple[int, list[tuple[str, str]], Any]:
    headers = [(k, v) for k, v in answer.headers.items() if k != "content-length"]
    body = answer.json()
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if k not in TIMES}
    return answer.status_code, headers, body


async def test_a_plain_submission_is_answered_by_the_lane_as_by_the_route(
    serve_app: Callable[[Any], Any], routed: list[str]
) -> None:
    lane_queue, route_queue = demo_queue(), demo_queue()
    async with serve_app(create_app(lane_queue, workers=False)) as client:
        by_lane = await client.post("/api/v1/jobs", json=JOB)
    assert routed == []  # answered before any route
    async with serve_app(_route_only(route_queue)) as client:
        by_route = await client.post("/api/v1/jobs", json=JOB)
    assert routed == ["/api/v1/jobs"]
    assert by_lane.status_code == 201
    assert _shape(by_lane) == _shape(by_route)
    assert list(by_lane.headers) == list(by_route.headers)  # same headers, same order
    stored = await lane_queue.get(by_lane.json()["id"])
    assert by_lane.content == msgspec.json.encode(stored)  # the stored job, as the route sends it


BODIES: list[Any] = [
    {"task": "nope"},  # unknown task: 422
    {"task": "add", "args": [1]},  # arguments that do not fit: 422
    {"task": "add", "args": ["one", 2]},  # nor these
    {"task": "add", "args": [1, 2], "bogus": True},  # unknown field: 400
    {"task": 5},  # a field of the wrong type: 400
    {"args": [1, 2]},  # no task: 400
    b"{not json",  # 400
    b"",  # no body: 400
    [1, 2],  # not an object: 400
    {"task": "add", "args": [1, 2], "queue": "other"},  # options: the route's path
    {"task": "add", "kwargs": {"a": 1, "b": 2}},
    {"task": "add", "args": [[1], 2]},  # nested arguments: the route's checks
    {"task": "add", "args": [1, 2], "priority": "urgent"},  # an option out of range: 400
    {"task": "add", "args": [1, 2], "key": "once"},  # 201
    {"task": "add", "args": [1, 2], "key": "once"},  # 200: the key's job
]


async def test_refusals_and_other_submissions_are_answered_as_by_the_route(
    serve_app: Callable[[Any], Any],
) -> None:
    answers: dict[str, list[Any]] = {}
    for name, app in (
        ("lane", create_app(demo_queue(), workers=False)),
        ("route", _route_only(demo_queue())),
    ):
        async with serve_app(app) as client:
            answers[name] = []
            for body in BODIES:
                if isinstance(body, bytes):
                    answer = await client.post(
                        "/api/v1/jobs",
                        content=body,
                        headers={"Content-Type": "application/json"},
                    )
                else:
                    answer = await client.post("/api/v1/jobs", json=body)
                answers[name].append(_shape(answer))
    assert answers["lane"] == answers["route"]
    statuses = [status for status, _, _ in answers["lane"]]
    assert statuses == [422, 422, 422, 400, 400, 400, 400, 400, 400, 201, 201, 422, 400, 201, 200]


async def test_a_mode_refusal_a_storage_fault_and_a_large_body_are_the_routes_answers(
    serve_app: Callable[[Any], Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    answers: dict[str, list[Any]] = {}
    for name in ("lane", "route"):
        queue = demo_queue(SQLiteStorage(tmp_path / f"{name}.db"))
        modes = hq.ModeController(clock=queue.clock, retry_after=30)
        options: dict[str, Any] = {"modes": modes, "max_body_size": 200}
        app = (
            create_app(queue, workers=False, **options)
            if name == "lane"
            else _route_only(queue, **options)
        )
        async with serve_app(app) as client:
            answers[name] = []
            modes.set(hq.Mode.READ_ONLY, reason="disk nearly full")
            answers[name].append(_shape(await client.post("/api/v1/jobs", json=JOB)))
            modes.clear()
            big = {"task": "add", "args": [1, "x" * 300]}
            answers[name].append(_shape(await client.post("/api/v1/jobs", json=big)))

            async def broken(*args: Any, **kwargs: Any) -> Any:
                raise hq.StorageError("the disk is full")

            monkeypatch.setattr(queue.storage, "enqueue", broken)
            answers[name].append(_shape(await client.post("/api/v1/jobs", json=JOB)))
            monkeypatch.undo()
            assert len((await queue.list_jobs()).items) == 0
    assert answers["lane"] == answers["route"]
    assert [status for status, _, _ in answers["lane"]] == [503, 413, 503]
    assert ("retry-after", "30") in answers["lane"][0][1]


def _keys() -> list[ApiKey]:
    return [
        ApiKey(name="ops", key_hash=ApiKey.hash_key("op-key"), roles=["operator"]),
        ApiKey(name="watcher", key_hash=ApiKey.hash_key("view-key"), roles=["viewer"]),
        ApiKey(
            name="acme", key_hash=ApiKey.hash_key("acme-key"), roles=["operator"], tenant="acme"
        ),
    ]


async def test_keys_are_checked_and_each_request_is_audited_once(
    serve_app: Callable[[Any], Any], routed: list[str]
) -> None:
    queue = demo_queue()
    auth = Auth(queue, keys=_keys())
    sink = MemoryAuditSink()
    app = create_app(
        queue,
        workers=False,
        guards=[auth.guard],
        middleware=[auth.middleware],
        plugins=[Audit(queue, sink, guards=[auth.guard])],
    )
    async with serve_app(app) as client:
        statuses = [
            (await client.post("/api/v1/jobs", json=JOB, headers=headers)).status_code
            for headers in (
                {},
                {"X-API-Key": "wrong"},
                {"X-API-Key": "view-key"},
                {"X-API-Key": "op-key"},
                {"Authorization": "Bearer op-key"},
                {"X-API-Key": "acme-key"},
            )
        ]
        tenant_job = (await queue.list_jobs(tenant="acme")).items
    assert statuses == [401, 401, 403, 201, 201, 201]
    # the refusals and the tenant's submission (its body gets the tenant) took the
    # route; the two plain ones with an operator's key did not
    assert routed == ["/api/v1/jobs"] * 4
    assert len(tenant_job) == 1 and tenant_job[0].tenant == "acme"
    assert sorted((r.event, r.actor.id, r.result) for r in sink.records) == [
        ("job.submit", "acme", "success"),
        ("job.submit", "ops", "success"),
        ("job.submit", "ops", "success"),
        ("security.auth_failed", None, "refused"),
        ("security.auth_failed", None, "refused"),
        ("security.forbidden", "watcher", "refused"),
    ]
    usage = {u.name: u for u in auth.usage()}
    assert usage["ops"].requests == 2 and usage["watcher"].denied == 1


async def test_a_hook_of_the_host_still_runs_and_its_guards_still_guard(
    serve_app: Callable[[Any], Any], routed: list[str]
) -> None:
    queue = demo_queue()
    auth = Auth(queue, keys=_keys())
    seen: list[str] = []

    async def before(request: Request[Any, Any, Any]) -> None:
        seen.append(request.url.path)

    class Hook(InitPlugin):
        def on_app_init(self, app_config: AppConfig) -> AppConfig:
            app_config.before_request = before
            return app_config

    app = create_app(
        queue,
        workers=False,
        guards=[auth.guard],
        middleware=[auth.middleware],
        plugins=[Hook()],
    )
    async with serve_app(app) as client:
        refused = await client.post("/api/v1/jobs", json=JOB)
        created = await client.post("/api/v1/jobs", json=JOB, headers={"X-API-Key": "op-key"})
    assert (refused.status_code, created.status_code) == (401, 201)
    assert seen == ["/api/v1/jobs"]  # after the key check, as the router's hook runs it
    assert routed == ["/api/v1/jobs"] * 2

    async def host_guard(connection: Any, handler: Any) -> None:
        if connection.headers.get("x-team") != "blue":
            raise hq.OptionError("team", "only the blue team submits")

    routed.clear()
    guarded = create_app(demo_queue(), workers=False, guards=[host_guard])
    async with serve_app(guarded) as client:
        assert (await client.post("/api/v1/jobs", json=JOB)).status_code == 422
        ok = await client.post("/api/v1/jobs", json=JOB, headers={"X-Team": "blue"})
        assert ok.status_code == 201
    assert routed == ["/api/v1/jobs"] * 2
