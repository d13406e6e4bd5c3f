"""Jobs whose task no live worker knows wait, and the server says so: ``unserved`` in the
queue figures and a degraded ``unserved`` health check once one waited a minute."""

from __future__ import annotations

from typing import Any

import pytest

import hyperqueue as hq
from hyperqueue.testing import FakeClock
from hyperqueue_litestar import UNSERVED_AFTER

pytestmark = pytest.mark.anyio


async def test_a_task_no_worker_knows_is_reported_not_failed(make_client: Any) -> None:
    clock = FakeClock()
    producer = hq.Queue(clock=clock)  # the server: knows the task, runs no workers

    @producer.task
    async def render(page: int) -> int:
        return page

    async with make_client(producer, workers=False) as client:
        response = await client.post("/api/v1/jobs", json={"task": "render", "args": [1]})
        assert response.status_code == 201
        job_id = response.json()["id"]
        [figures] = (await client.get("/api/v1/queues")).json()["queues"]
        assert figures["unserved"] == 1 and figures["pending"] == 1
        health = (await client.get("/health")).json()
        assert health["checks"]["unserved"]["status"] == "healthy"  # not waited long yet
        await clock.advance(UNSERVED_AFTER + 1)
        health = (await client.get("/health")).json()
        check = health["checks"]["unserved"]
        assert check["status"] == "degraded" and "'render'" in check["message"]
        # a worker that knows the task (another queue object on the same storage)
        consumer = hq.Queue(producer.storage, clock=clock)

        @consumer.task(name="render")
        async def render_here(page: int) -> int:
            return page * 10

        async with consumer.worker():
            done = await consumer.wait(job_id, timeout=5)
        assert done.status is hq.JobStatus.COMPLETED and done.result == 10
        [figures] = (await client.get("/api/v1/queues")).json()["queues"]
        assert figures["unserved"] == 0
