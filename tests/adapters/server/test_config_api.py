"""Configuration over HTTP: admin only, validated before anything is stored, every change
a new version that the running server takes at once, and every change audited."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec
import pytest

import hyperqueue as hq
from hyperqueue_litestar import create_app
from hyperqueue_litestar._audit import Audit, MemoryAuditSink
from hyperqueue_litestar._auth import Auth
from hyperqueue_litestar._config import ApiKey, Config, RateLimits, TenantQuota, read_config
from hyperqueue_litestar._config_routes import ConfigApi
from hyperqueue_litestar._limits import RateLimitMiddleware
from hyperqueue_litestar._metrics import Metrics

pytestmark = pytest.mark.anyio

Serve = Callable[[Any], AbstractAsyncContextManager[httpx.AsyncClient]]


def key(name: str, secret: str, role: str, tenant: str | None = None) -> ApiKey:
    return ApiKey(name=name, key_hash=ApiKey.hash_key(secret), roles=[role], tenant=tenant)  # type: ignore[list-item]


ADMIN = {"Authorization": "Bearer admin-secret"}
OPS = {"Authorization": "Bearer ops-secret"}
VIEW = {"Authorization": "Bearer view-secret"}
START = Config(
    keys=[
        key("root", "admin-secret", "admin"),
        key("ops", "ops-secret", "operator"),
        key("watcher", "view-secret", "viewer"),
    ],
    tenants={"acme": TenantQuota(max_queued=5)},
)


@dataclass
class Server:
    client: httpx.AsyncClient
    api: ConfigApi
    sink: MemoryAuditSink


@pytest.fixture
async def server(queue: hq.Queue, serve_app: Serve) -> AsyncIterator[Server]:
    auth = Auth.from_config(queue, START)
    limits = RateLimitMiddleware(queue, START.rate_limits)
    metrics = Metrics(queue)
    sink = MemoryAuditSink()
    api = ConfigApi(queue, START, targets=[auth, limits, metrics], guards=[auth.guard])
    app = create_app(
        queue,
        workers=False,
        guards=[auth.guard],
        middleware=[auth.middleware, limits],
        plugins=[metrics, Audit(queue, sink, guards=[auth.guard]), api],
    )
    async with serve_app(app) as client:
        yield Server(client, api, sink)


def plain(value: Config | ApiKey) -> dict[str, Any]:
    """A configuration (or a key) as the JSON document a client sends."""
    return msgspec.to_builtins(value)  # type: ignore[no-any-return]


async def test_admin_reads_the_running_configuration_with_hashes_and_no_key(
    server: Server,
) -> None:
    response = await server.client.get("/api/v1/config", headers=ADMIN)
    assert response.status_code == 200
    body = response.json()
    assert response.headers["X-Config-Version"] == "1"
    assert [k["name"] for k in body["keys"]] == ["root", "ops", "watcher"]
    assert body["keys"][0]["key_hash"] == ApiKey.hash_key("admin-secret")
    assert "admin-secret" not in response.text
    assert body["tenants"]["acme"]["max_queued"] == 5


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/config"),
        ("GET", "/api/v1/config/history"),
        ("GET", "/api/v1/config/versions/1"),
        ("GET", "/api/v1/config/diff?from=1"),
        ("GET", "/api/v1/config/export"),
        ("PUT", "/api/v1/config"),
        ("POST", "/api/v1/config/rollback/1"),
    ],
)
async def test_every_config_route_is_admin_only(server: Server, method: str, path: str) -> None:
    body = plain(START) if method == "PUT" else None
    assert (await server.client.request(method, path, json=body)).status_code == 401
    for headers in (VIEW, OPS):
        response = await server.client.request(method, path, json=body, headers=headers)
        assert response.status_code == 403, (headers, response.text)
        assert "admin" in response.json()["detail"]
    assert len(await server.api.history.history()) == 1


async def test_put_validates_first_and_a_bad_document_names_the_key(server: Server) -> None:
    bad = plain(START)
    bad["workers"] = {"concurrency": 0}
    response = await server.client.put("/api/v1/config", json=bad, headers=ADMIN)
    assert response.status_code == 422
    assert response.json()["extra"]["key"] == "workers.concurrency"
    assert "workers.concurrency" in response.json()["detail"]
    unknown = {**plain(START), "surprise": 1}
    response = await server.client.put("/api/v1/config", json=unknown, headers=ADMIN)
    assert response.status_code == 422
    assert response.json()["extra"]["key"] == "surprise"
    json_type = {**ADMIN, "Content-Type": "application/json"}
    not_json = await server.client.put("/api/v1/config", content=b"{", headers=json_type)
    assert not_json.status_code == 422
    untyped = await server.client.put("/api/v1/config", content=b"{}", headers=ADMIN)
    assert untyped.status_code == 415  # a body must say it is JSON (or TOML)
    assert "application/toml" in untyped.json()["detail"]
    assert len(await server.api.history.history()) == 1
    assert server.api.current == START


async def test_a_good_document_becomes_a_version_and_applies_at_once(server: Server) -> None:
    new = plain(START)
    new["keys"] = [
        plain(key("root", "admin-secret", "admin")),
        plain(key("newcomer", "new-secret", "operator")),
    ]
    new["workers"] = {"concurrency": 3}
    response = await server.client.put("/api/v1/config?comment=rotate", json=new, headers=ADMIN)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["version"]["version"] == 2
    assert body["version"]["author"] == "root"
    assert body["version"]["comment"] == "rotate"
    assert "workers.concurrency" in body["changed"]
    assert body["restart_required"] == ["workers.concurrency"]
    # the new key works now, the removed one does not
    submit = {"task": "add", "args": [1, 2]}
    fresh = {"Authorization": "Bearer new-secret"}
    assert (await server.client.post("/api/v1/jobs", json=submit, headers=fresh)).status_code == 201
    assert (await server.client.post("/api/v1/jobs", json=submit, headers=OPS)).status_code == 401
    history = (await server.client.get("/api/v1/config/history", headers=ADMIN)).json()["items"]
    assert [(v["version"], v["author"]) for v in history] == [(2, "root"), (1, "startup")]
    stored = (await server.client.get("/api/v1/config/versions/2", headers=ADMIN)).json()
    assert stored["config"]["workers"]["concurrency"] == 3
    diff = (await server.client.get("/api/v1/config/diff?from=1&to=2", headers=ADMIN)).json()
    paths = [c["path"] for c in diff["changes"]]
    assert "workers.concurrency" in paths
    assert "keys[1].name" in paths


async def test_toml_import_and_export_round_trip(server: Server) -> None:
    exported = await server.client.get("/api/v1/config/export?format=toml", headers=ADMIN)
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("application/toml")
    assert read_config(exported.text) == START
    changed = exported.text.replace("max_queued = 5", "max_queued = 7")
    response = await server.client.put(
        "/api/v1/config",
        content=changed.encode(),
        headers={**ADMIN, "Content-Type": "application/toml"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["restart_required"] == []
    as_json = await server.client.get("/api/v1/config/export?format=json", headers=ADMIN)
    assert read_config(as_json.text, format="json").tenants["acme"].max_queued == 7
    old = await server.client.get("/api/v1/config/export?format=json&version=1", headers=ADMIN)
    assert read_config(old.text, format="json") == START
    bad_format = await server.client.get("/api/v1/config/export?format=yaml", headers=ADMIN)
    assert bad_format.status_code == 400


async def test_rollback_is_a_new_version_and_applies(server: Server) -> None:
    locked_out = plain(START)
    locked_out["keys"] = [plain(key("root", "admin-secret", "admin"))]
    assert (await server.client.put("/api/v1/config", json=locked_out, headers=ADMIN)).is_success
    assert (await server.client.get("/api/v1/queues", headers=VIEW)).status_code == 401
    response = await server.client.post("/api/v1/config/rollback/1", headers=ADMIN)
    assert response.status_code == 200, response.text
    assert response.json()["version"]["version"] == 3
    assert response.json()["version"]["comment"] == "rollback to version 1"
    assert (await server.client.get("/api/v1/queues", headers=VIEW)).status_code == 200
    assert server.api.current == START
    missing = await server.client.post("/api/v1/config/rollback/99", headers=ADMIN)
    assert missing.status_code == 404
    assert (await server.client.get("/api/v1/config/versions/99", headers=ADMIN)).status_code == 404
    assert (
        await server.client.get("/api/v1/config/diff?from=99", headers=ADMIN)
    ).status_code == 404


async def test_rate_limits_change_live(server: Server) -> None:
    submit = {"task": "add", "args": [1, 2]}
    tight = plain(START)
    tight["rate_limits"] = plain(
        Config(rate_limits=RateLimits(routes={"POST /api/v1/jobs": "1/minute"}))
    )["rate_limits"]
    assert (await server.client.post("/api/v1/jobs", json=submit, headers=OPS)).status_code == 201
    assert (await server.client.put("/api/v1/config", json=tight, headers=ADMIN)).is_success
    first = await server.client.post("/api/v1/jobs", json=submit, headers=OPS)
    assert first.status_code == 201
    assert first.headers["RateLimit-Limit"] == "1"
    assert (await server.client.post("/api/v1/jobs", json=submit, headers=OPS)).status_code == 429


async def test_every_change_is_audited(server: Server) -> None:
    bad = {**plain(START), "workers": {"concurrency": -1}}
    await server.client.put("/api/v1/config", json=bad, headers=ADMIN)
    await server.client.put("/api/v1/config", json=plain(START), headers=ADMIN)
    await server.client.post("/api/v1/config/rollback/1", headers=ADMIN)
    await server.client.get("/api/v1/config", headers=ADMIN)
    page = await server.sink.read()
    changes = [r for r in page.items if r.event == "config.change"]
    assert [(r.action, r.result, r.actor.id) for r in changes] == [
        ("put", "error 422", "root"),
        ("put", "success", "root"),
        ("post", "success", "root"),
    ]
    assert changes[2].metadata["route"] == "/api/v1/config/rollback/{version}"


async def test_if_match_makes_a_change_a_compare_and_swap(server: Server) -> None:
    """Two admins read version 1 and both change it: the second change, made from a
    version no longer running, is refused with 412 and changes nothing."""
    read = await server.client.get("/api/v1/config", headers=ADMIN)
    assert read.headers["X-Config-Version"] == "1"
    first, second = plain(START), plain(START)
    first["workers"] = {"concurrency": 3}
    second["workers"] = {"concurrency": 7}
    match = {**ADMIN, "If-Match": '"1"'}
    ok = await server.client.put("/api/v1/config", json=first, headers=match)
    assert ok.status_code == 200, ok.text
    assert ok.json()["version"]["version"] == 2
    late = await server.client.put("/api/v1/config", json=second, headers=match)
    assert late.status_code == 412, late.text
    assert late.json()["extra"] == {"version": 2}
    assert "version 2 is running" in late.json()["detail"]
    assert server.api.current.workers.concurrency == 3
    history = (await server.client.get("/api/v1/config/history", headers=ADMIN)).json()["items"]
    assert [v["version"] for v in history] == [2, 1]
    bad = await server.client.put(
        "/api/v1/config", json=second, headers={**ADMIN, "If-Match": "latest"}
    )
    assert bad.status_code == 422 and bad.json()["extra"] == {"header": "If-Match"}
    again = await server.client.put(
        "/api/v1/config", json=second, headers={**ADMIN, "If-Match": "2"}
    )
    assert again.status_code == 200 and server.api.current.workers.concurrency == 7
