"""Pausing and resuming a whole queue over HTTP: a running pool claims nothing from a
paused queue and runs its jobs once resumed, ``GET /queues`` says which are paused,
bad names answer 422, and only operators may change it (audited)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

import hyperqueue as hq
from hyperqueue_litestar import create_app
from hyperqueue_litestar._audit import Audit, MemoryAuditSink
from hyperqueue_litestar._auth import Auth
from hyperqueue_litestar._config import ApiKey, Config

pytestmark = pytest.mark.anyio


async def _status(client: httpx.AsyncClient, job_id: str) -> str:
    status: str = (await client.get(f"/api/v1/jobs/{job_id}")).json()["status"]
    return status


async def _queues(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    return {q["queue"]: q for q in (await client.get("/api/v1/queues")).json()["queues"]}


async def test_a_paused_queue_runs_nothing_until_resumed(queue: hq.Queue, make_client: Any) -> None:
    async with make_client(queue) as client:  # with a worker pool
        paused = await client.post("/api/v1/queues/mail/pause")
        assert paused.status_code == 200
        assert paused.json() == {"queue": "mail", "paused": True}
        assert (await _queues(client))["mail"]["paused"] is True  # listed with no jobs
        held = (
            await client.post("/api/v1/jobs", json={"task": "add", "args": [1, 2], "queue": "mail"})
        ).json()
        other = (await client.post("/api/v1/jobs", json={"task": "add", "args": [3, 4]})).json()
        assert (await queue.wait(other["id"], timeout=5)).status is hq.JobStatus.COMPLETED
        assert await _status(client, held["id"]) == "pending"
        figures = await _queues(client)
        assert figures["mail"]["paused"] is True and figures["mail"]["pending"] == 1
        assert figures["default"]["paused"] is False
        resumed = await client.post("/api/v1/queues/mail/resume")
        assert resumed.json() == {"queue": "mail", "paused": False}
        assert (await queue.wait(held["id"], timeout=5)).status is hq.JobStatus.COMPLETED
        assert (await _queues(client))["mail"]["paused"] is False
        again = await client.post("/api/v1/queues/mail/resume")  # idempotent
        assert again.status_code == 200


async def test_a_bad_name_answers_422_and_a_missing_one_404(
    queue: hq.Queue, make_client: Any
) -> None:
    async with make_client(queue, workers=False) as client:
        refused = await client.post(f"/api/v1/queues/{'q' * 201}/pause")
        assert refused.status_code == 422
        assert set(refused.json()) >= {"status_code", "detail"}
        assert (await client.post("/api/v1/queues//pause")).status_code == 404
        assert await queue.paused_queues() == []


KEYS = [
    ApiKey(name="watcher", key_hash=ApiKey.hash_key("view-key"), roles=["viewer"]),
    ApiKey(name="ops", key_hash=ApiKey.hash_key("op-key"), roles=["operator"]),
    ApiKey(name="acme", key_hash=ApiKey.hash_key("acme-key"), roles=["operator"], tenant="acme"),
]


def key(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def test_only_an_operator_pauses_and_each_change_is_audited(
    queue: hq.Queue, serve_app: Any
) -> None:
    auth = Auth.from_config(queue, Config(keys=KEYS))
    sink = MemoryAuditSink()
    app = create_app(
        queue,
        workers=False,
        guards=[auth.guard],
        middleware=[auth.middleware],
        plugins=[Audit(queue, sink, guards=[auth.guard])],
    )
    async with serve_app(app) as client:
        refused = await client.post("/api/v1/queues/mail/pause", headers=key("view-key"))
        assert refused.status_code == 403
        assert refused.json()["detail"] == (
            "key 'watcher' may not POST /api/v1/queues/{name}/pause: it needs the operator role"
        )
        tenant = await client.post("/api/v1/queues/mail/pause", headers=key("acme-key"))
        assert tenant.status_code == 403  # a tenant's key may not stop everyone's queue
        assert (await client.post("/api/v1/queues/mail/pause")).status_code == 401
        assert await queue.paused_queues() == []
        done = await client.post("/api/v1/queues/mail/pause", headers=key("op-key"))
        assert done.status_code == 200
        listed = await client.get("/api/v1/queues", headers=key("view-key"))
        assert [q["paused"] for q in listed.json()["queues"] if q["queue"] == "mail"] == [True]
        await client.post("/api/v1/queues/mail/resume", headers=key("op-key"))
    changes = [r for r in sink.records if r.event.startswith("queue.")]
    assert [(r.event, r.action, r.resource, r.result) for r in changes] == [
        ("queue.pause", "pause", "queue:mail", "success"),
        ("queue.resume", "resume", "queue:mail", "success"),
    ]
    assert changes[0].actor.id == "ops"  # refusals are security events, not changes
