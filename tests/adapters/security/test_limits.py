"""Rate limits per client and route on the real app, time driven by a fake clock."""

from __future__ import annotations

from typing import Any

import pytest

import hyperqueue as hq
from hyperqueue.testing import FakeClock
from hyperqueue_litestar import create_app
from hyperqueue_litestar._auth import Auth
from hyperqueue_litestar._config import ApiKey, RateLimits
from hyperqueue_litestar._limits import RateLimitMiddleware
from hyperqueue_litestar._security import RateLimited

pytestmark = pytest.mark.anyio

LIMITS = RateLimits(default="5/minute", routes={"POST /api/v1/jobs": "2/minute"})


def build(queue: hq.Queue, keys: list[ApiKey] | None = None) -> Any:
    auth = Auth(queue, keys=keys or [])
    limits = RateLimitMiddleware(queue, LIMITS)
    return create_app(
        queue, workers=False, guards=[auth.guard], middleware=[auth.middleware, limits]
    )


async def test_headers_on_allowed_answers_and_429_with_retry_after(
    queue: hq.Queue, clock: FakeClock, serve: Any
) -> None:
    events: list[hq.Event] = []
    queue.events.subscribe(events.append, RateLimited)
    async with serve(build(queue)) as client:
        first = await client.post("/api/v1/jobs", json={"task": "add", "args": [1, 2]})
        assert first.status_code == 201
        assert first.headers["RateLimit-Limit"] == "2"
        assert first.headers["RateLimit-Remaining"] == "1"
        assert first.headers["RateLimit-Reset"] == "60"
        await clock.advance(20)
        second = await client.post("/api/v1/jobs", json={"task": "add", "args": [1, 2]})
        assert second.headers["RateLimit-Remaining"] == "0"
        refused = await client.post("/api/v1/jobs", json={"task": "add", "args": [1, 2]})
        assert refused.status_code == 429
        assert refused.headers["Retry-After"] == "40"
        assert refused.headers["RateLimit-Remaining"] == "0"
        assert refused.json()["status_code"] == 429
        assert "rate limit" in refused.json()["detail"]
        # reads have their own, looser limit
        read = await client.get("/api/v1/jobs")
        assert read.status_code == 200 and read.headers["RateLimit-Limit"] == "5"
        await clock.advance(40)
        again = await client.post("/api/v1/jobs", json={"task": "add", "args": [1, 2]})
        assert again.status_code == 201
    assert len((await queue.list_jobs()).items) == 3
    assert [e.route for e in events if isinstance(e, RateLimited)] == ["/api/v1/jobs"]


async def test_limits_are_per_route_template_and_per_client(queue: hq.Queue, serve: Any) -> None:
    keys = [
        ApiKey(name=n, key_hash=ApiKey.hash_key(n + "-secret"), roles=["operator"])
        for n in ("one", "two")
    ]
    async with serve(build(queue, keys)) as client:
        ids = [(await queue.enqueue("add", args=[i, i])).id for i in range(6)]
        one = {"X-API-Key": "one-secret"}
        codes = [(await client.get(f"/api/v1/jobs/{i}", headers=one)).status_code for i in ids]
        # six different paths, one template: the sixth is over 5/minute
        assert codes == [200] * 5 + [429]
        other = await client.get(f"/api/v1/jobs/{ids[0]}", headers={"X-API-Key": "two-secret"})
        assert other.status_code == 200
        assert (await client.get("/api/v1/queues", headers=one)).status_code == 200
        assert (await client.get("/health/live")).status_code == 200
