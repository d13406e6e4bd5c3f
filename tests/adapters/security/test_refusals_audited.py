"""Every refusal, by any layer, is exactly one audit record (issue 9): the guard's 401 and
403, the tenant confinement of the auth middleware (another tenant's job answers 404, a
route a tenant may not use 403), the rate limits' 429, whichever order the audit
middleware has among them."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.config.app import AppConfig
from litestar.plugins import InitPlugin

import hyperqueue as hq
from hyperqueue_litestar import create_app
from hyperqueue_litestar._audit import Audit, MemoryAuditSink
from hyperqueue_litestar._auth import Auth
from hyperqueue_litestar._config import ApiKey, RateLimits
from hyperqueue_litestar._limits import RateLimitMiddleware

sys.path.insert(0, str(Path(__file__).parents[1] / "server"))
from server_process import Server, start_server, stop

pytestmark = pytest.mark.anyio

ACME = {"X-API-Key": "acme-key"}
GLOBEX = {"X-API-Key": "globex-key"}
OPS = {"X-API-Key": "op-key"}
VIEW = {"X-API-Key": "view-key"}
JOB = {"task": "add", "args": [1, 2]}


class _Middleware(InitPlugin):
    """Adds middleware after the plugins before it (so inside their middleware)."""

    def __init__(self, *middleware: Any) -> None:
        self.middleware = middleware

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        app_config.middleware.extend(self.middleware)
        return app_config


def build(queue: hq.Queue, keys: dict[str, ApiKey], sink: MemoryAuditSink, order: str) -> Any:
    """``order="served"``: as ``hyperqueue serve`` builds it (auth and limits answer before
    the audit middleware sees the request); ``"audit-outside"``: the audit middleware
    sees every answer, the refusals of the auth and limit middleware too."""
    auth = Auth(queue, keys=list(keys.values()))
    limits = RateLimitMiddleware(
        queue, RateLimits(default="100/minute", routes={"POST /api/v1/jobs": "3/minute"})
    )
    audit = Audit(queue, sink, guards=[auth.guard])
    if order == "served":
        return create_app(
            queue,
            workers=False,
            guards=[auth.guard],
            middleware=[auth.middleware, limits],
            plugins=[audit],
        )
    return create_app(
        queue,
        workers=False,
        guards=[auth.guard],
        plugins=[audit, _Middleware(auth.middleware, limits)],
    )


def records(sink: MemoryAuditSink) -> list[tuple[str, str | None, str | None, str, str]]:
    return [(r.event, r.actor.id, r.resource, r.action, r.result) for r in sink.records]


@pytest.fixture(params=["served", "audit-outside"])
def order(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_tenant_refusals_are_one_record_each(
    queue: hq.Queue, keys: dict[str, ApiKey], serve: Any, order: str
) -> None:
    sink = MemoryAuditSink()
    async with serve(build(queue, keys, sink, order)) as client:
        theirs = (await client.post("/api/v1/jobs", json=JOB, headers=GLOBEX)).json()["id"]
        sink.records.clear()
        answers = [
            await client.post(f"/api/v1/jobs/{theirs}/cancel", headers=ACME),
            await client.post(f"/api/v1/jobs/{theirs}/retry", headers=ACME),
            await client.get(f"/api/v1/jobs/{theirs}", headers=ACME),
            await client.get("/api/v1/queues", headers=ACME),
            await client.get("/api/v1/events", headers=ACME),
        ]
    assert [a.status_code for a in answers] == [404, 404, 404, 403, 403]
    assert records(sink) == [
        ("security.forbidden", "acme", "/api/v1/jobs/{job_id}/cancel", "POST", "refused"),
        ("security.forbidden", "acme", "/api/v1/jobs/{job_id}/retry", "POST", "refused"),
        ("security.forbidden", "acme", "/api/v1/jobs/{job_id}", "GET", "refused"),
        ("security.forbidden", "acme", "/api/v1/queues", "GET", "refused"),
        ("security.forbidden", "acme", "/api/v1/events", "GET", "refused"),
    ]
    assert all(r.actor.tenant == "acme" for r in sink.records)
    assert theirs in sink.records[0].metadata["detail"]
    assert "404" in sink.records[0].metadata["detail"]
    # the answer itself still reveals nothing about the other tenant's job
    assert answers[0].json() == {
        "status_code": 404,
        "detail": f"job {theirs!r} not found",
        "extra": {"job_id": theirs},
    }


async def test_a_missing_job_is_a_miss_not_a_refusal(
    queue: hq.Queue, keys: dict[str, ApiKey], serve: Any
) -> None:
    sink = MemoryAuditSink()
    async with serve(build(queue, keys, sink, "served")) as client:
        assert (await client.get("/api/v1/jobs/nope", headers=ACME)).status_code == 404
    assert [r for r in sink.records if r.event.startswith("security.")] == []


async def test_guard_and_limit_refusals_are_one_record_each(
    queue: hq.Queue, keys: dict[str, ApiKey], serve: Any, order: str
) -> None:
    sink = MemoryAuditSink()
    async with serve(build(queue, keys, sink, order)) as client:
        statuses = [
            (await client.post("/api/v1/jobs", json=JOB)).status_code,
            (await client.post("/api/v1/jobs", json=JOB, headers={"X-API-Key": "x"})).status_code,
            (await client.post("/api/v1/jobs", json=JOB, headers=VIEW)).status_code,
        ]
        statuses += [  # the fourth is over 3/minute
            (await client.post("/api/v1/jobs", json=JOB, headers=OPS)).status_code for _ in range(4)
        ]
    assert statuses == [401, 401, 403, 201, 201, 201, 429]
    refused = [r for r in records(sink) if r[4] != "success"]
    assert refused == [
        ("security.auth_failed", None, "/api/v1/jobs", "POST", "refused"),
        ("security.auth_failed", None, "/api/v1/jobs", "POST", "refused"),
        ("security.forbidden", "watcher", "/api/v1/jobs", "POST", "refused"),
        ("security.rate_limited", "ops", "/api/v1/jobs", "POST", "refused"),
    ]
    assert [r[0] for r in records(sink)].count("job.submit") == 3


async def test_front_door_refusals_are_one_record_each(
    queue: hq.Queue, keys: dict[str, ApiKey], serve: Any, order: str
) -> None:
    sink = MemoryAuditSink()
    crowded = {f"x-extra-{i}": "1" for i in range(120)}
    async with serve(build(queue, keys, sink, order)) as client:
        typed = await client.post(
            "/api/v1/jobs", content=b"task=add", headers={**OPS, "Content-Type": "text/plain"}
        )
        many = await client.get("/api/v1/jobs", headers={**OPS, **crowded})
    assert (typed.status_code, many.status_code) == (415, 431)
    assert [r for r in records(sink) if r[4] != "success"] == [
        ("security.media_type", None, "/api/v1/jobs", "POST", "refused"),
        ("security.header_limit", None, "/api/v1/jobs", "GET", "refused"),
    ]
    assert await queue.list_jobs() == hq.Page(items=[]), "nothing stored"


async def test_a_handler_refusal_is_one_record_with_its_detail(
    queue: hq.Queue, keys: dict[str, ApiKey], serve: Any
) -> None:
    sink = MemoryAuditSink()
    async with serve(build(queue, keys, sink, "served")) as client:
        job = (await client.post("/api/v1/jobs", json=JOB, headers=OPS)).json()["id"]
        answer = await client.post(f"/api/v1/jobs/{job}/retry", headers=OPS)  # not finished
    assert answer.status_code == 409
    [record] = [r for r in sink.records if r.event == "job.retry"]
    assert record.result == "error 409"
    assert record.metadata["detail"] == answer.json()["detail"]


# -- on the real server ---------------------------------------------------------------


@pytest.fixture
def tenant_server(tmp_path: Path) -> Iterator[Server]:
    blocks = [
        f'[[keys]]\nname = "{name}"\nkey_hash = "{ApiKey.hash_key(secret)}"\n'
        f'roles = ["{role}"]\n' + (f'tenant = "{tenant}"\n' if tenant else "")
        for name, secret, role, tenant in (
            ("root", "admin-key", "admin", None),
            ("acme", "acme-key", "operator", "acme"),
            ("globex", "globex-key", "operator", "globex"),
        )
    ]
    path = tmp_path / "hq.toml"
    path.write_text("\n".join(blocks))
    server = start_server(tmp_path, "--config", str(path))
    yield server
    stop(server)


def audit_records(url: str) -> list[dict[str, Any]]:
    page = httpx.get(f"{url}/api/v1/audit?limit=1000", headers={"X-API-Key": "admin-key"})
    items: list[dict[str, Any]] = page.json()["items"]
    return items


def test_tenant_refusals_are_audited_on_the_real_server(tenant_server: Server) -> None:
    url = tenant_server.url
    theirs = httpx.post(f"{url}/api/v1/jobs", json=JOB, headers=GLOBEX).json()["id"]
    before = len(audit_records(url))
    assert httpx.post(f"{url}/api/v1/jobs/{theirs}/cancel", headers=ACME).status_code == 404
    assert httpx.post(f"{url}/api/v1/jobs/{theirs}/retry", headers=ACME).status_code == 404
    assert httpx.get(f"{url}/api/v1/queues", headers=ACME).status_code == 403
    assert httpx.get(f"{url}/api/v1/events", headers=ACME).status_code == 403
    new: list[dict[str, Any]] = []
    for _ in range(100):  # the audit task writes within moments
        new = audit_records(url)[before:]
        if len(new) >= 4:
            break
        time.sleep(0.05)
    assert [(r["event"], r["actor"]["id"], r["resource"], r["result"]) for r in new] == [
        ("security.forbidden", "acme", "/api/v1/jobs/{job_id}/cancel", "refused"),
        ("security.forbidden", "acme", "/api/v1/jobs/{job_id}/retry", "refused"),
        ("security.forbidden", "acme", "/api/v1/queues", "refused"),
        ("security.forbidden", "acme", "/api/v1/events", "refused"),
    ]
