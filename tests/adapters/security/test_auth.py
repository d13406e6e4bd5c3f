"""API keys, roles and tenants on the real app from ``create_app``."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import anyio
import pytest
from litestar import put
from litestar.params import JSONBody

import hyperqueue as hq
from hyperqueue.testing import FakeClock
from hyperqueue_litestar import create_app
from hyperqueue_litestar._auth import Auth, KeyRing, presented_key
from hyperqueue_litestar._config import ApiKey, Config, TenantQuota
from hyperqueue_litestar._security import AccessDenied, AuthenticationFailed


def auth_headers(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


pytestmark = pytest.mark.anyio


async def change_config(data: JSONBody[dict[str, Any]]) -> dict[str, Any]:
    """Stands in for the configuration route: a change the admin role alone may make."""
    return data


@pytest.fixture
def make_app(queue: hq.Queue, keys: dict[str, ApiKey]) -> Any:
    return lambda **options: build_app(queue, keys, **options)


def build_app(queue: hq.Queue, keys: dict[str, ApiKey], **options: Any) -> tuple[Any, Auth]:
    config = Config(
        keys=list(keys.values()),
        tenants={"acme": TenantQuota(max_queued=3, max_running=5), "globex": TenantQuota()},
    )
    auth = Auth.from_config(queue, config, **options)
    config_route = put("/api/v1/config", guards=[auth.guard], status_code=200, name="cfg")(
        change_config
    )
    app = create_app(
        queue,
        workers=False,
        guards=[auth.guard],
        middleware=[auth.middleware],
        route_handlers=[config_route],
    )
    return app, auth


# -- every role against every kind of route -------------------------------------------

ROUTES = {
    "read": ("GET", "/api/v1/jobs/{pending}", None, 200),
    "list": ("GET", "/api/v1/jobs", None, 200),
    "queues": ("GET", "/api/v1/queues", None, 200),
    "submit": ("POST", "/api/v1/jobs", {"task": "add", "args": [1, 2]}, 201),
    "batch": ("POST", "/api/v1/jobs/batch", {"jobs": [{"task": "add", "args": [1, 2]}]}, 200),
    "cancel": ("POST", "/api/v1/jobs/{pending}/cancel", None, 200),
    "retry": ("POST", "/api/v1/jobs/{cancelled}/retry", None, 200),
    "config": ("PUT", "/api/v1/config", {"workers": 3}, 200),
}
ALLOWED = {
    "viewer": {"read", "list", "queues"},
    "operator": {"read", "list", "queues", "submit", "batch", "cancel", "retry"},
    "admin": set(ROUTES),
}
ROLE_KEYS = {"viewer": "view-key", "operator": "op-key", "admin": "admin-key"}


@pytest.mark.parametrize("route", sorted(ROUTES))
@pytest.mark.parametrize("role", sorted(ALLOWED))
async def test_each_role_against_each_kind_of_route(
    make_app: Any, serve: Any, queue: hq.Queue, role: str, route: str
) -> None:
    app, _ = make_app()
    async with serve(app) as client:
        pending = await queue.enqueue("add", args=[1, 1])
        cancelled = await queue.cancel((await queue.enqueue("add", args=[2, 2])).id)
        method, path, body, ok = ROUTES[route]
        path = path.format(pending=pending.id, cancelled=cancelled.id)
        response = await client.request(
            method, path, json=body, headers=auth_headers(ROLE_KEYS[role])
        )
        if route in ALLOWED[role]:
            assert response.status_code == ok, response.text
        else:
            assert response.status_code == 403
            assert response.json()["status_code"] == 403
            assert "role" in response.json()["detail"]
        missing = await client.request(method, path, json=body)
        assert missing.status_code == 401


async def test_401_and_403_bodies_are_json_and_published_as_events(
    make_app: Any, serve: Any, queue: hq.Queue
) -> None:
    app, _ = make_app()
    seen: list[hq.Event] = []
    queue.events.subscribe(seen.append, "security.*")
    async with serve(app) as client:
        missing = await client.get("/api/v1/jobs")
        unknown = await client.get("/api/v1/jobs", headers={"X-API-Key": "guess"})
        forbidden = await client.post(
            "/api/v1/jobs", json={"task": "add", "args": [1, 2]}, headers=auth_headers("view-key")
        )
    assert missing.status_code == 401
    assert missing.json()["status_code"] == 401
    assert "API key is required" in missing.json()["detail"]
    assert unknown.status_code == 401
    assert "unknown API key" in unknown.json()["detail"]
    assert forbidden.status_code == 403
    assert forbidden.json() == {
        "status_code": 403,
        "detail": "key 'watcher' may not POST /api/v1/jobs: it needs the operator role",
    }
    assert [type(e) for e in seen] == [AuthenticationFailed, AuthenticationFailed, AccessDenied]
    assert isinstance(seen[0], AuthenticationFailed)
    assert seen[0].client == "127.0.0.7" and seen[0].route == "/api/v1/jobs"
    assert isinstance(seen[2], AccessDenied) and seen[2].client == "watcher"


async def test_x_api_key_header_is_accepted_and_health_stays_open(
    make_app: Any, serve: Any, queue: hq.Queue
) -> None:
    app, _ = make_app()
    async with serve(app) as client:
        assert (
            await client.get("/api/v1/jobs", headers={"X-API-Key": "view-key"})
        ).status_code == 200
        assert (await client.get("/health/live")).status_code == 200


async def test_no_keys_means_open(serve: Any, queue: hq.Queue, keys: dict[str, ApiKey]) -> None:
    auth = Auth(queue)
    assert auth.open
    app = create_app(queue, workers=False, guards=[auth.guard], middleware=[auth.middleware])
    async with serve(app) as client:
        response = await client.post("/api/v1/jobs", json={"task": "add", "args": [1, 2]})
    assert response.status_code == 201
    assert not Auth(queue, keys=[keys["op-key"]]).open


async def test_keys_are_never_logged_and_only_hashes_are_held(
    make_app: Any, serve: Any, queue: hq.Queue, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app, auth = make_app()
    async with serve(app) as client:
        await client.get("/api/v1/jobs", headers=auth_headers("admin-key"))
        await client.get("/api/v1/jobs", headers=auth_headers("wrong-secret"))
    assert "admin-key" not in caplog.text and "wrong-secret" not in caplog.text
    ring = auth.keys
    assert "admin-key" not in repr(
        vars(ring._entries[0])
        if hasattr(ring._entries[0], "__dict__")
        else [getattr(ring._entries[0], s) for s in ring._entries[0].__slots__]
    )
    assert ring._entries[0].digest == hashlib.sha256(b"admin-key").digest()


def test_presented_key_reads_bearer_then_x_api_key() -> None:
    assert presented_key({"authorization": "Bearer abc"}) == "abc"
    assert presented_key({"authorization": "bearer  abc "}) == "abc"
    assert presented_key({"authorization": "Basic abc", "x-api-key": "xyz"}) == "xyz"
    assert presented_key({}) is None


# -- key usage -----------------------------------------------------------------------


async def test_key_usage_counts_requests_and_denials_with_last_use(
    make_app: Any, serve: Any, queue: hq.Queue, clock: FakeClock
) -> None:
    app, auth = make_app()
    async with serve(app) as client:
        await client.get("/api/v1/jobs", headers=auth_headers("view-key"))
        await clock.advance(30)
        await client.get("/api/v1/jobs", headers=auth_headers("view-key"))
        await client.post(
            "/api/v1/jobs", json={"task": "add", "args": [1, 2]}, headers=auth_headers("view-key")
        )
    usage = {u.name: u for u in auth.usage()}
    assert usage["watcher"].requests == 3
    assert usage["watcher"].denied == 1
    assert usage["watcher"].last_used == clock.now()
    assert usage["root"].requests == 0 and usage["root"].last_used is None


def test_authenticate_is_by_hash(clock: FakeClock, keys: dict[str, ApiKey]) -> None:
    ring = KeyRing(list(keys.values()), clock=clock)
    principal = ring.authenticate("acme-key")
    assert principal is not None and principal.name == "acme" and principal.tenant == "acme"
    assert ring.authenticate("acme-key ") is None
    assert ring.authenticate(keys["acme-key"].key_hash) is None


# -- tenants -------------------------------------------------------------------------


async def test_a_tenant_key_sees_only_its_tenant(
    make_app: Any, serve: Any, queue: hq.Queue
) -> None:
    app, _ = make_app()
    async with serve(app) as client:
        mine = await client.post(
            "/api/v1/jobs",
            json={"task": "add", "args": [1, 2], "tenant": "globex"},  # forced to acme
            headers=auth_headers("acme-key"),
        )
        assert mine.status_code == 201
        assert mine.json()["tenant"] == "acme"
        theirs = await client.post(
            "/api/v1/jobs", json={"task": "add", "args": [3, 4]}, headers=auth_headers("globex-key")
        )
        other = theirs.json()["id"]
        assert theirs.json()["tenant"] == "globex"
        for method, path in [
            ("GET", f"/api/v1/jobs/{other}"),
            ("POST", f"/api/v1/jobs/{other}/cancel"),
            ("POST", f"/api/v1/jobs/{other}/retry"),
            ("GET", "/api/v1/jobs/no-such-job"),
        ]:
            response = await client.request(method, path, headers=auth_headers("acme-key"))
            assert response.status_code == 404, (method, path)
            assert response.json()["status_code"] == 404
        own = await client.get(
            f"/api/v1/jobs/{mine.json()['id']}", headers=auth_headers("acme-key")
        )
        assert own.status_code == 200
        listing = await client.get(
            "/api/v1/jobs", params={"tenant": "globex"}, headers=auth_headers("acme-key")
        )
        assert [j["id"] for j in listing.json()["items"]] == [mine.json()["id"]]
        everything = await client.get("/api/v1/jobs", headers=auth_headers("admin-key"))
        assert len(everything.json()["items"]) == 2
        batch = await client.post(
            "/api/v1/jobs/batch",
            json={"jobs": [{"task": "add", "args": [1, 1], "tenant": "globex"}]},
            headers=auth_headers("acme-key"),
        )
        assert batch.json()["items"][0]["job"]["tenant"] == "acme"
        unfiltered = await client.get("/api/v1/dead-letters", headers=auth_headers("acme-key"))
        assert unfiltered.status_code == 403
    assert (await queue.get(other)).status is hq.JobStatus.PENDING


async def test_tenant_quota_refuses_submissions_over_it_with_429(
    make_app: Any, serve: Any, queue: hq.Queue
) -> None:
    app, _ = make_app()
    async with serve(app) as client:
        for i in range(3):
            ok = await client.post(
                "/api/v1/jobs",
                json={"task": "add", "args": [i, i]},
                headers=auth_headers("acme-key"),
            )
            assert ok.status_code == 201
        over = await client.post(
            "/api/v1/jobs", json={"task": "add", "args": [9, 9]}, headers=auth_headers("acme-key")
        )
        assert over.status_code == 429
        body = over.json()
        assert body["status_code"] == 429
        assert "max_queued" in body["detail"]
        assert body["extra"] == {"tenant": "acme", "quota": "max_queued", "limit": 3, "current": 3}
        other = await client.post(
            "/api/v1/jobs", json={"task": "add", "args": [9, 9]}, headers=auth_headers("globex-key")
        )
        assert other.status_code == 201
        await queue.cancel((await queue.list_jobs(tenant="acme")).items[0].id)
        await anyio.lowlevel.checkpoint()
    stats = await queue.list_jobs(tenant="acme", status="pending")
    assert len(stats.items) == 2


async def test_quota_is_counted_by_the_storage_at_once(
    make_app: Any, serve: Any, queue: hq.Queue
) -> None:
    """max_queued is checked where jobs are stored, so a job cancelled (by any process)
    frees its place at once, and jobs another process enqueued count at once too."""
    app, _ = make_app()
    async with serve(app) as client:
        for i in range(3):
            await client.post(
                "/api/v1/jobs",
                json={"task": "add", "args": [i, i]},
                headers=auth_headers("acme-key"),
            )
        refused = await client.post(
            "/api/v1/jobs", json={"task": "add", "args": [1, 1]}, headers=auth_headers("acme-key")
        )
        assert refused.status_code == 429
        assert refused.json()["extra"]["quota"] == "max_queued"
        first = (await queue.list_jobs(tenant="acme")).items[0]
        await queue.cancel(first.id)
        accepted = await client.post(
            "/api/v1/jobs", json={"task": "add", "args": [1, 1]}, headers=auth_headers("acme-key")
        )
        assert accepted.status_code == 201
