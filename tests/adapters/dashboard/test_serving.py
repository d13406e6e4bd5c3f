"""The dashboard's shell, assets and read routes, in process (no browser): what a
browser is sent, under which headers, and who may read what."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

import hyperqueue as hq
from hyperqueue_litestar import ApiKey, Auth, create_app, demo_queue

pytestmark = pytest.mark.anyio

KEYS = {"admin-secret": "admin", "ops-secret": "operator", "view-secret": "viewer"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def serve(queue: hq.Queue, *, keyed: bool) -> AsyncIterator[httpx.AsyncClient]:
    options: dict[str, object] = {"workers": False}
    if keyed:
        keys = [
            ApiKey(name=role, key_hash=ApiKey.hash_key(secret), roles=[role])  # type: ignore[list-item]
            for secret, role in KEYS.items()
        ]
        auth = Auth(queue, keys=keys)
        options.update(guards=[auth.guard], middleware=[auth.middleware])
    app = create_app(queue, **options)
    async with app.lifespan():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            yield client


async def test_every_dashboard_path_is_the_shell_under_a_strict_policy() -> None:
    async with serve(demo_queue(), keyed=True) as client:
        for path in ("/dashboard", "/dashboard/jobs", "/dashboard/jobs/some-id", "/dashboard/x/y"):
            response = await client.get(path)  # no key: the shell holds no data
            assert response.status_code == 200, path
            assert response.headers["content-type"].startswith("text/html")
            policy = response.headers["content-security-policy"]
            assert "default-src 'self'" in policy
            assert "script-src 'self';" in policy and "unsafe-inline" not in policy
            assert "frame-ancestors 'none'" in policy
            assert response.headers["x-content-type-options"] == "nosniff"
            body = response.text
            assert '<script type="module" src="/dashboard/static/js/app.js">' in body
            assert 'content="/api/v1"' in body
            assert '<meta name="hq-open" content="false">' in body  # ask for a key first
            assert "<script>" not in body and "style=" not in body  # nothing inline
            assert "http://" not in body and "https://" not in body  # nothing from elsewhere


async def test_assets_come_from_the_package_with_their_types() -> None:
    async with serve(demo_queue(), keyed=False) as client:
        script = await client.get("/dashboard/static/js/app.js")
        assert script.status_code == 200
        assert script.headers["content-type"].startswith("text/javascript")
        assert "content-security-policy" in script.headers
        again = await client.get(
            "/dashboard/static/js/app.js", headers={"If-None-Match": script.headers["etag"]}
        )
        assert again.status_code == 304 and again.content == b""
        css = await client.get("/dashboard/static/app.css")
        assert css.headers["content-type"].startswith("text/css")
        assert (await client.get("/dashboard/static/js/nope.js")).status_code == 404
        escape = await client.get("/dashboard/static/%2e%2e/_api.py")
        assert escape.status_code == 404
        assert escape.json()["status_code"] == 404


async def test_no_asset_refers_to_another_origin() -> None:
    async with serve(demo_queue(), keyed=False) as client:
        shell = (await client.get("/dashboard")).text
        for name in ("app.css", "js/app.js", "js/live.js", "js/api.js", "js/pages/jobs.js"):
            text = (await client.get(f"/dashboard/static/{name}")).text
            assert "http://" not in text and "https://" not in text, name
        assert '<meta name="hq-open" content="true">' in shell  # no key to ask for


async def test_session_says_what_each_key_may_do() -> None:
    async with serve(demo_queue(), keyed=True) as client:
        assert (await client.get("/api/v1/session")).status_code == 401
        bad = await client.get("/api/v1/session", headers={"X-API-Key": "wrong"})
        assert bad.status_code == 401
        seen = {}
        for secret, role in KEYS.items():
            body = (await client.get("/api/v1/session", headers={"X-API-Key": secret})).json()
            seen[role] = (body["open"], body["name"], body["operate"], body["admin"])
        assert seen == {
            "admin": (False, "admin", True, True),
            "operator": (False, "operator", True, False),
            "viewer": (False, "viewer", False, False),
        }
    async with serve(demo_queue(), keyed=False) as client:
        body = (await client.get("/api/v1/session")).json()
        assert body["open"] is True
        assert body["operate"] is True


async def test_a_viewer_reads_workers_and_may_not_act() -> None:
    queue = demo_queue()
    async with serve(queue, keyed=True) as client:
        view = {"X-API-Key": "view-secret"}
        async with queue.worker(concurrency=3):
            body = (await client.get("/api/v1/workers", headers=view)).json()
        [pool] = body["workers"]
        assert pool["concurrency"] == 3
        assert "add" in pool["tasks"]
        assert body["now"] >= pool["started_at"]
        job = await queue.enqueue("fail", args=("x",))
        refused = await client.post(f"/api/v1/jobs/{job.id}/cancel", headers=view)
        assert refused.status_code == 403
        assert refused.json()["status_code"] == 403
        assert (await client.get("/api/v1/workers")).status_code == 401
