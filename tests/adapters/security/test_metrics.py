"""``/metrics`` on the real app: families, route templates, moving counts, slow requests."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar import get
from litestar.params import FromPath
from litestar.response import ServerSentEvent
from prometheus_client.parser import text_string_to_metric_families

import hyperqueue as hq
from hyperqueue.testing import FakeClock
from hyperqueue_litestar import create_app
from hyperqueue_litestar._metrics import Metrics, families
from hyperqueue_litestar._security import SlowRequest

pytestmark = pytest.mark.anyio


def sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


async def test_families_route_templates_and_counts_that_move(queue: hq.Queue, serve: Any) -> None:
    metrics = Metrics(queue)
    queue.breakers.get("payments")
    async with serve(create_app(queue, workers=False, plugins=[metrics])) as client:
        job = (await client.post("/api/v1/jobs", json={"task": "add", "args": [1, 2]})).json()
        await client.get(f"/api/v1/jobs/{job['id']}")
        await client.get("/api/v1/jobs/no-such-job")
        text = (await client.get("/metrics")).text
        assert set(families(text)) >= {
            "hyperqueue_http_requests",
            "hyperqueue_http_request_duration_seconds",
            "hyperqueue_http_errors",
            "hyperqueue_http_slow_requests",
            "hyperqueue_jobs",
            "hyperqueue_queue_depth",
            "hyperqueue_job_duration_seconds",
            "hyperqueue_breaker_state",
            "hyperqueue_breaker_trips",
            "hyperqueue_process_resident_memory_bytes",
            "hyperqueue_uptime_seconds",
        }
        assert all(name.startswith("hyperqueue_") for name in families(text))
        assert job["id"] not in text and "no-such-job" not in text
        route = "/api/v1/jobs/{job_id}"
        assert sample(text, "hyperqueue_http_requests_total", route=route, status="200") == 1
        assert sample(text, "hyperqueue_http_requests_total", route=route, status="404") == 1
        assert sample(text, "hyperqueue_jobs", queue="default", status="pending") == 1
        assert sample(text, "hyperqueue_queue_depth", queue="default") == 1
        assert sample(text, "hyperqueue_breaker_state", breaker="payments", state="closed") == 1
        assert sample(text, "hyperqueue_process_resident_memory_bytes") > 1_000_000
        await client.post("/api/v1/jobs", json={"task": "add", "args": [1, 2]})
        text = (await client.get("/metrics")).text
        assert sample(text, "hyperqueue_queue_depth", queue="default") == 2
        assert (
            sample(text, "hyperqueue_http_requests_total", route="/api/v1/jobs", method="POST") == 2
        )


async def test_job_durations_come_from_the_event_bus(queue: hq.Queue, serve: Any) -> None:
    metrics = Metrics(queue)
    async with serve(create_app(queue, workers=False, plugins=[metrics])) as client:
        job = hq.Job(
            id="j1", task="add", status=hq.JobStatus.COMPLETED, started_at=10.0, finished_at=12.5
        )
        queue.events.publish(hq.JobCompleted(at=12.5, job=job))
        text = (await client.get("/metrics")).text
    assert sample(text, "hyperqueue_job_duration_seconds_count", task="add") == 1
    assert sample(text, "hyperqueue_job_duration_seconds_sum", task="add") == 2.5


async def test_slow_requests_are_counted_and_published(
    queue: hq.Queue, clock: FakeClock, serve: Any
) -> None:
    @get("/slow/{n:int}")
    async def slow(n: FromPath[int]) -> int:
        await clock.advance(n / 1000)  # the request takes n ms on the server's clock
        return n

    seen: list[SlowRequest] = []
    queue.events.subscribe(seen.append, SlowRequest)
    metrics = Metrics(queue, slow_request_ms=250)
    app = create_app(queue, workers=False, plugins=[metrics], route_handlers=[slow])
    async with serve(app) as client:
        assert (await client.get("/slow/100")).status_code == 200
        assert (await client.get("/slow/400")).status_code == 200
        text = (await client.get("/metrics")).text
    assert [(e.route, round(e.duration_ms), e.threshold_ms) for e in seen] == [
        ("/slow/{n}", 400, 250)
    ]
    assert sample(text, "hyperqueue_http_slow_requests_total", route="/slow/{n}") == 1
    assert sample(text, "hyperqueue_http_request_duration_seconds_count", route="/slow/{n}") == 2


async def test_an_event_stream_is_counted_but_never_slow(
    queue: hq.Queue, clock: FakeClock, serve: Any
) -> None:
    @get("/stream")
    async def stream() -> ServerSentEvent:
        async def events() -> AsyncIterator[str]:
            yield "one"
            await clock.advance(30.0)  # a client that listened for 30 s, then left
            yield "two"

        return ServerSentEvent(events())

    @get("/slow")
    async def slow() -> int:
        await clock.advance(1.0)
        return 1

    seen: list[SlowRequest] = []
    queue.events.subscribe(seen.append, SlowRequest)
    metrics = Metrics(queue, slow_request_ms=250)
    app = create_app(queue, workers=False, plugins=[metrics], route_handlers=[stream, slow])
    lines: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lines.append  # type: ignore[method-assign]
    logger = logging.getLogger("hyperqueue.server")
    logger.addHandler(handler)  # the app's logging set-up replaces the root's handlers
    try:
        async with serve(app) as client:
            assert "two" in (await client.get("/stream")).text
            assert (await client.get("/slow")).status_code == 200
            text = (await client.get("/metrics")).text
    finally:
        logger.removeHandler(handler)
    assert [e.route for e in seen] == ["/slow"]
    assert sample(text, "hyperqueue_http_requests_total", route="/stream") == 1
    assert sample(text, "hyperqueue_http_slow_requests_total", route="/stream") == 0
    assert sample(text, "hyperqueue_http_request_duration_seconds_count", route="/stream") == 0
    assert sample(text, "hyperqueue_http_slow_requests_total", route="/slow") == 1
    slow_lines = [r for r in lines if r.getMessage().startswith("slow request")]
    assert [r.getMessage().split(" answered")[0] for r in slow_lines] == ["slow request: GET /slow"]
