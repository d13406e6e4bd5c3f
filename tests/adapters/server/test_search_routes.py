"""Search, exact counts, bulk actions and dead-letter groups over HTTP: one query
language, 422 for a bad query, honest counts (dry_run, expected), roles, tenants, and
one audit record per bulk action."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

import hyperqueue as hq
from hyperqueue_litestar import create_app
from hyperqueue_litestar._audit import Audit, MemoryAuditSink
from hyperqueue_litestar._auth import Auth
from hyperqueue_litestar._config import ApiKey, Config, TenantQuota
from hyperqueue_litestar._search_routes import BULK_BATCH
from hyperqueue_litestar._security import PRINCIPAL, Principal

pytestmark = pytest.mark.anyio

API = "/api/v1"
KEYS = [
    ApiKey(name="ops", key_hash=ApiKey.hash_key("op-key"), roles=["operator"]),
    ApiKey(name="watcher", key_hash=ApiKey.hash_key("view-key"), roles=["viewer"]),
    ApiKey(name="acme", key_hash=ApiKey.hash_key("acme-key"), roles=["operator"], tenant="acme"),
]
OPS = {"Authorization": "Bearer op-key"}
VIEWER = {"Authorization": "Bearer view-key"}
ACME = {"Authorization": "Bearer acme-key"}


@pytest.fixture
def queue() -> hq.Queue:
    queue = hq.Queue()

    @queue.task
    async def send_mail(to: str) -> None:
        raise TimeoutError(f"SMTP timeout after {len(to)}.5s for id {len(to) * 7}")

    @queue.task
    async def resize(size: int) -> int:
        if size < 0:
            raise ValueError(f"bad size {size}")
        return size

    return queue


@pytest.fixture
async def client(
    queue: hq.Queue, serve_app: Callable[[Any], Any]
) -> AsyncIterator[httpx.AsyncClient]:
    async with serve_app(create_app(queue, workers=False)) as client:
        yield client


async def settle(queue: hq.Queue, *subs: hq.Submission) -> list[hq.Job]:
    """Enqueue ``subs`` and run them to their end with a worker."""
    made = await queue.enqueue_many(subs)
    async with queue.worker(concurrency=10):
        return [await queue.wait(e.job.id, timeout=10) for e in made]


async def test_list_count_and_a_bad_query(client: httpx.AsyncClient, queue: hq.Queue) -> None:
    await settle(
        queue,
        *(hq.Submission(task="send_mail", args=("a" * i,), tenant="acme") for i in range(1, 4)),
        hq.Submission(task="resize", args=(-1,)),
        hq.Submission(task="resize", args=(5,)),
    )
    await queue.enqueue_many([hq.Submission(task="resize", args=(1,))])
    failed = await client.get(f"{API}/jobs", params={"q": "status:failed task:send_*", "limit": 2})
    assert failed.status_code == 200, failed.text
    page = failed.json()
    assert [j["task"] for j in page["items"]] == ["send_mail", "send_mail"]
    rest = await client.get(f"{API}/jobs", params={"cursor": page["next_cursor"], "limit": 2})
    assert len(rest.json()["items"]) == 1 and rest.json()["next_cursor"] is None
    # the old parameters still work, ANDed with q
    anded = await client.get(f"{API}/jobs", params={"q": "resize", "status": "failed"})
    assert [j["args"] for j in anded.json()["items"]] == [[-1]]
    counts = {
        q: (await client.get(f"{API}/jobs/count", params={"q": q})).json()["count"]
        for q in ("", "status:failed", 'error:"smtp timeout"', "tenant:acme since:1h", '"bad size"')
    }
    assert counts == {
        "": 6,
        "status:failed": 4,
        'error:"smtp timeout"': 3,
        "tenant:acme since:1h": 3,
        '"bad size"': 1,
    }
    for path in ("/jobs", "/jobs/count", "/dead-letters/groups"):
        bad = await client.get(f"{API}{path}", params={"q": "colour:red"})
        assert bad.status_code == 422, path
        assert bad.json()["detail"].startswith("unknown qualifier 'colour' (known: status,")
    bad = await client.post(f"{API}/jobs/cancel", json={"q": "since:yesterday"})
    assert bad.status_code == 422 and "since:yesterday" in bad.json()["detail"]
    assert await queue.count_jobs(hq.JobFilter(status=(hq.JobStatus.CANCELLED,))) == 0


async def test_dead_letter_groups_and_retry_of_one_group(
    client: httpx.AsyncClient, queue: hq.Queue
) -> None:
    await settle(
        queue,
        *(hq.Submission(task="send_mail", args=("x" * i,)) for i in range(1, 5)),
        hq.Submission(task="resize", args=(-3,)),
    )
    groups = (await client.get(f"{API}/dead-letters/groups")).json()["groups"]
    assert sorted((g["task"], g["count"]) for g in groups) == [("resize", 1), ("send_mail", 4)]
    mail = next(g for g in groups if g["task"] == "send_mail")
    assert (mail["error_type"], mail["message"]) == (
        "TimeoutError",
        "SMTP timeout after #s for id #",
    )
    q = f"fingerprint:{mail['fingerprint']}"
    retried = await client.post(f"{API}/jobs/retry", json={"q": q})
    assert retried.json() == {"count": 4, "dry_run": False}
    assert await queue.count_jobs(hq.JobFilter(status=(hq.JobStatus.PENDING,))) == 4
    left = (await client.get(f"{API}/dead-letters/groups")).json()["groups"]
    assert [g["task"] for g in left] == ["resize"]


async def test_bulk_cancel_dry_run_expected_and_many_batches(
    client: httpx.AsyncClient, queue: hq.Queue
) -> None:
    n = BULK_BATCH * 2 + 7
    await queue.enqueue_many([hq.Submission(task="resize", args=(i,)) for i in range(n)])
    await queue.enqueue_many([hq.Submission(task="send_mail", args=("k",))])
    dry = await client.post(f"{API}/jobs/cancel", json={"q": "task:resize", "dry_run": True})
    assert dry.json() == {"count": n, "dry_run": True}
    assert await queue.count_jobs(hq.JobFilter(status=(hq.JobStatus.CANCELLED,))) == 0
    wrong = await client.post(f"{API}/jobs/cancel", json={"q": "task:resize", "expected": 5})
    assert wrong.status_code == 409
    assert wrong.json()["extra"]["count"] == n
    assert await queue.count_jobs(hq.JobFilter(status=(hq.JobStatus.CANCELLED,))) == 0
    done = await client.post(f"{API}/jobs/cancel", json={"q": "task:resize", "expected": n})
    assert done.json() == {"count": n, "dry_run": False}
    stats = (await queue.stats())["default"]
    assert (stats.cancelled, stats.pending) == (n, 1)
    # retry applies to cancelled jobs, discard to final ones; cancel finds nothing now
    again = await client.post(f"{API}/jobs/cancel", json={"q": "task:resize"})
    assert again.json()["count"] == 0
    gone = await client.post(f"{API}/jobs/discard", json={"q": "status:cancelled"})
    assert gone.json()["count"] == n
    assert await queue.count_jobs() == 1
    unknown = await client.post(f"{API}/jobs/discard", json={"q": "x", "colour": 1})
    assert unknown.status_code in (400, 422)


async def test_roles_tenants_and_the_audit_record(
    queue: hq.Queue, serve_app: Callable[[Any], Any]
) -> None:
    auth = Auth.from_config(queue, Config(keys=KEYS, tenants={"acme": TenantQuota()}))
    sink = MemoryAuditSink()
    app = create_app(
        queue,
        workers=False,
        guards=[auth.guard],
        middleware=[auth.middleware],
        plugins=[Audit(queue, sink, guards=[auth.guard])],
    )
    await queue.enqueue_many(
        [hq.Submission(task="resize", args=(i,), tenant=t) for i, t in enumerate(["acme"] * 3)]
        + [hq.Submission(task="resize", args=(9,), tenant="globex")]
    )
    async with serve_app(app) as client:
        viewer = await client.post(f"{API}/jobs/cancel", json={"q": ""}, headers=VIEWER)
        assert viewer.status_code == 403 and "operator role" in viewer.json()["detail"]
        seen = await client.get(f"{API}/jobs/count", params={"q": ""}, headers=VIEWER)
        assert seen.json() == {"count": 4}
        # a tenant's key sees its own jobs only, whatever its query says
        mine = await client.get(f"{API}/jobs", params={"q": "resize"}, headers=ACME)
        assert {j["tenant"] for j in mine.json()["items"]} == {"acme"}
        theirs = await client.get(f"{API}/jobs", params={"q": "tenant:globex"}, headers=ACME)
        assert theirs.json()["items"] == []
        counted = await client.get(f"{API}/jobs/count", params={"q": ""}, headers=ACME)
        assert counted.json() == {"count": 3}
        tenant_cancel = await client.post(f"{API}/jobs/cancel", json={"q": ""}, headers=ACME)
        # confined to its tenant: never another tenant's job
        assert tenant_cancel.status_code == 200, tenant_cancel.text
        assert tenant_cancel.json()["count"] == 3
        globex = await queue.list_jobs(tenant="globex")
        assert [j.status for j in globex.items] == [hq.JobStatus.PENDING]

        done = await client.post(
            f"{API}/jobs/cancel", json={"q": "tenant:globex", "expected": 1}, headers=OPS
        )
        assert done.json() == {"count": 1, "dry_run": False}
        await client.post(f"{API}/jobs/retry", json={"q": "x", "dry_run": True}, headers=OPS)
    records = [r for r in (await sink.read()).items if r.event.startswith("jobs.")]
    assert [(r.event, r.actor.id, r.metadata["q"], r.metadata["count"]) for r in records] == [
        ("jobs.bulk_cancel", "acme", "", 3),
        ("jobs.bulk_cancel", "ops", "tenant:globex", 1),
    ]
    assert not [r for r in (await sink.read()).items if r.event == "job.cancel"]


class _AsTenant(ASGIMiddleware):
    """Resolves every caller as a key bound to tenant ``acme`` (as the auth part caches
    it), with no other check: the handlers' own confinement, whatever lets the request
    through."""

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        state = scope.setdefault("state", {})
        state[PRINCIPAL] = Principal(name="acme", roles=("operator",), tenant="acme", rank=2)
        await next_app(scope, receive, send)


async def test_the_handlers_confine_a_tenant_key_to_its_tenant(
    queue: hq.Queue, serve_app: Callable[[Any], Any]
) -> None:
    await queue.enqueue_many(
        [hq.Submission(task="resize", args=(i,), tenant="acme") for i in range(3)]
        + [hq.Submission(task="resize", args=(9,), tenant="globex")]
    )
    async with serve_app(create_app(queue, workers=False, middleware=[_AsTenant()])) as client:
        counted = await client.get(f"{API}/jobs/count", params={"q": "task:resize"})
        assert counted.json() == {"count": 3}
        other = await client.get(f"{API}/jobs/count", params={"q": "tenant:globex"})
        assert other.json() == {"count": 0}
        theirs = await client.post(f"{API}/jobs/cancel", json={"q": "tenant:globex"})
        assert theirs.json() == {"count": 0, "dry_run": False}
        done = await client.post(f"{API}/jobs/cancel", json={"q": ""})
        assert done.json() == {"count": 3, "dry_run": False}
        groups = await client.get(f"{API}/dead-letters/groups", params={"q": "tenant:globex"})
        assert groups.json() == {"groups": []}
    [globex] = (await queue.list_jobs(tenant="globex")).items
    assert globex.status is hq.JobStatus.PENDING
