"""The periodic jobs' routes on a real app: listing with the next slot, pause and
resume, 404 for an unknown name, and the roles they need."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest

import hyperqueue as hq
from hyperqueue.testing import FakeClock
from hyperqueue_litestar import create_app
from hyperqueue_litestar._auth import Auth
from hyperqueue_litestar._config import ApiKey, Config

MakeClient = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]

pytestmark = pytest.mark.anyio

T = 1_700_000_000.0  # every=60 slots fall at T + 40, T + 100, ...
FIELDS = {
    "name", "task", "queue", "cron", "every", "timezone", "catch_up", "paused", "next_at",
    "handled_until", "last_job", "missed",
}  # fmt: skip


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=T)


@pytest.fixture
def queue(clock: FakeClock) -> hq.Queue:
    queue = hq.Queue(clock=clock)

    @queue.periodic(every=60.0, queue="ops")
    async def sweep() -> None:
        pass

    @queue.periodic(every=3600.0, catch_up=True)
    async def hourly() -> None:
        pass

    return queue


@pytest.fixture
async def client(queue: hq.Queue, make_client: MakeClient) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(queue, lease=3600.0) as client:  # with a pool: it fires
        yield client


async def test_list_answers_every_schedule_with_its_next_slot(
    client: httpx.AsyncClient, queue: hq.Queue, clock: FakeClock
) -> None:
    await clock.advance(45)  # the pool fires sweep's slot T + 40
    response = await client.get("/api/v1/schedules")
    assert response.status_code == 200
    hourly, sweep = response.json()["schedules"]
    assert set(sweep) == FIELDS
    [job] = (await queue.list_jobs(task="sweep")).items
    assert sweep == {
        "name": "sweep",
        "task": "sweep",
        "queue": "ops",
        "cron": None,
        "every": 60.0,
        "timezone": None,
        "catch_up": False,
        "paused": False,
        "next_at": T + 100,
        "handled_until": T + 40,
        "last_job": job.id,
        "missed": 0,
    }
    assert hourly["name"] == "hourly" and hourly["catch_up"] is True
    assert hourly["next_at"] == (T // 3600 + 1) * 3600 and hourly["last_job"] is None


async def test_pause_and_resume_answer_the_schedule(
    client: httpx.AsyncClient, queue: hq.Queue, clock: FakeClock
) -> None:
    paused = await client.post("/api/v1/schedules/sweep/pause")
    assert paused.status_code == 200
    assert paused.json()["paused"] is True and paused.json()["next_at"] is None
    await clock.advance(300)
    assert (await queue.list_jobs(task="sweep")).items == []
    listed = {s["name"]: s for s in (await client.get("/api/v1/schedules")).json()["schedules"]}
    assert listed["sweep"]["paused"] is True
    resumed = await client.post("/api/v1/schedules/sweep/resume")
    assert resumed.status_code == 200
    body = resumed.json()
    assert body["paused"] is False
    assert body["handled_until"] == T + 300 and body["next_at"] == T + 340
    await clock.advance(60)
    [job] = (await queue.list_jobs(task="sweep")).items
    assert job.key == f"periodic:sweep:{T + 340!r}"
    assert (await queue.schedules())[1].missed == 0


@pytest.mark.parametrize("action", ["pause", "resume"])
async def test_unknown_schedule_is_a_json_404(client: httpx.AsyncClient, action: str) -> None:
    response = await client.post(f"/api/v1/schedules/nope/{action}")
    assert response.status_code == 404
    assert response.json() == {
        "status_code": 404,
        "detail": "no schedule named 'nope'",
        "extra": {"schedule": "nope"},
    }


# -- roles -------------------------------------------------------------------------------

KEYS = [
    ApiKey(name="watcher", key_hash=ApiKey.hash_key("view-key"), roles=["viewer"]),
    ApiKey(name="ops", key_hash=ApiKey.hash_key("op-key"), roles=["operator"]),
    ApiKey(name="acme", key_hash=ApiKey.hash_key("acme-key"), roles=["operator"], tenant="acme"),
]


@pytest.fixture
def secured(queue: hq.Queue, serve_app: Any) -> Any:
    auth = Auth.from_config(queue, Config(keys=KEYS))
    app = create_app(queue, workers=False, guards=[auth.guard], middleware=[auth.middleware])
    return serve_app(app)


def key(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def test_a_viewer_reads_and_an_operator_pauses(secured: Any) -> None:
    async with secured as client:
        assert (await client.get("/api/v1/schedules", headers=key("view-key"))).status_code == 200
        refused = await client.post("/api/v1/schedules/sweep/pause", headers=key("view-key"))
        assert refused.status_code == 403
        assert refused.json()["detail"] == (
            "key 'watcher' may not POST /api/v1/schedules/{name}/pause: it needs the operator role"
        )
        done = await client.post("/api/v1/schedules/sweep/pause", headers=key("op-key"))
        assert done.status_code == 200 and done.json()["paused"] is True
        again = await client.post("/api/v1/schedules/sweep/resume", headers=key("op-key"))
        assert again.status_code == 200 and again.json()["paused"] is False
        assert (await client.get("/api/v1/schedules")).status_code == 401
        assert (await client.post("/api/v1/schedules/sweep/resume")).status_code == 401


async def test_a_key_bound_to_a_tenant_cannot_reach_schedules(secured: Any) -> None:
    async with secured as client:
        for method, path in (
            ("GET", "/api/v1/schedules"),
            ("POST", "/api/v1/schedules/sweep/pause"),
        ):
            response = await client.request(method, path, headers=key("acme-key"))
            assert response.status_code == 403, path
