"""The REST API through Litestar's test client: every route, and every kind of bad
input answered with a 4xx naming the problem, with nothing stored."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import pytest
from litestar import Litestar, get
from litestar.di import NamedDependency

import hyperqueue as hq
from hyperqueue_litestar import HyperqueuePlugin, JobTemplate

MakeClient = Callable[..., Any]

pytestmark = pytest.mark.anyio

Client = httpx.AsyncClient


async def stored(queue: hq.Queue) -> int:
    return sum(s.total for s in (await queue.stats()).values())


# -- submitting ------------------------------------------------------------------------


async def test_submit_returns_201_and_the_job_as_stored(client: Client, queue: hq.Queue) -> None:
    response = await client.post(
        "/api/v1/jobs",
        json={"task": "add", "args": [1, 2], "priority": "high", "queue": "maths", "tenant": "t1"},
    )
    assert response.status_code == 201
    body = response.json()
    assert body["task"] == "add"
    assert body["args"] == [1, 2]
    assert body["priority"] == "high"
    assert body["queue"] == "maths"
    assert body["tenant"] == "t1"
    assert body["status"] == "pending"
    job = await queue.get(body["id"])
    assert job.priority is hq.Priority.HIGH
    assert set(body) >= {
        "id", "task", "queue", "status", "priority", "args", "kwargs", "attempts",
        "max_attempts", "result", "error", "progress", "key", "tenant", "created_at",
        "started_at", "finished_at",
    }  # fmt: skip


async def test_same_key_twice_gives_200_with_the_first_job(client: Client, queue: hq.Queue) -> None:
    first = await client.post("/api/v1/jobs", json={"task": "add", "args": [1, 2], "key": "k1"})
    second = await client.post("/api/v1/jobs", json={"task": "add", "args": [5, 5], "key": "k1"})
    assert first.status_code == 201
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    assert await stored(queue) == 1


async def test_delay_and_options_reach_the_job(client: Client, queue: hq.Queue) -> None:
    response = await client.post(
        "/api/v1/jobs",
        json={"task": "sleep", "kwargs": {"seconds": 0.5}, "delay": 60, "max_attempts": 3,
              "timeout": 5},
    )  # fmt: skip
    assert response.status_code == 201
    job = await queue.get(response.json()["id"])
    assert job.run_at == pytest.approx(job.created_at + 60)
    assert job.max_attempts == 3
    assert job.timeout == 5.0
    assert job.kwargs == {"seconds": 0.5}


async def test_template_fills_defaults_and_the_body_wins(
    queue: hq.Queue, make_client: MakeClient
) -> None:
    templates = {"bulk": JobTemplate(queue="bulk", priority=hq.Priority.LOW, max_attempts=4)}
    async with make_client(queue, workers=False, templates=templates) as client:
        response = await client.post(
            "/api/v1/jobs",
            json={"task": "add", "args": [1, 1], "template": "bulk", "priority": "critical"},
        )
        assert response.status_code == 201
        body = response.json()
        assert (body["queue"], body["priority"], body["max_attempts"]) == ("bulk", "critical", 4)
        unknown = await client.post(
            "/api/v1/jobs", json={"task": "add", "args": [1, 1], "template": "nope"}
        )
        assert unknown.status_code == 422
        assert "unknown template 'nope'" in unknown.json()["detail"]
        assert await stored(queue) == 1


BAD_SUBMISSIONS: list[tuple[str, Any, int, str]] = [
    ("unknown task", {"task": "nope"}, 422, "unknown task 'nope'"),
    ("wrong argument type", {"task": "add", "args": [1, "x"]}, 422, "argument 'b'"),
    ("missing argument", {"task": "add", "args": [1]}, 422, "'add'"),
    ("unknown keyword", {"task": "add", "args": [1, 2], "kwargs": {"c": 1}}, 422, "'add'"),
    ("invalid priority", {"task": "add", "args": [1, 2], "priority": "urgent"}, 400, "urgent"),
    ("negative delay", {"task": "add", "args": [1, 2], "delay": -1}, 422, "'delay'"),
    ("zero max_attempts", {"task": "add", "args": [1, 2], "max_attempts": 0}, 422, "max_attempts"),
    ("huge max_attempts", {"task": "add", "args": [1, 2], "max_attempts": 10**20}, 400, "<="),
    ("negative timeout", {"task": "add", "args": [1, 2], "timeout": -5}, 422, "'timeout'"),
    ("unknown field", {"task": "add", "args": [1, 2], "colour": "red"}, 400, "colour"),
    ("task not a string", {"task": 5}, 400, "str"),
    ("args not a list", {"task": "add", "args": "12"}, 400, "array"),
    ("no task", {"args": [1, 2]}, 400, "task"),
    ("queue not a string", {"task": "add", "args": [1, 2], "queue": [1]}, 400, "queue"),
    ("tenant not a string", {"task": "add", "args": [1, 2], "tenant": 5}, 400, "tenant"),
    ("body not an object", [1, 2], 400, "object"),
    ("empty key", {"task": "add", "args": [1, 2], "key": ""}, 422, "'key'"),
    ("delay and run_at", {"task": "add", "args": [1, 2], "delay": 1, "run_at": 5}, 422, "delay"),
    ("deep arguments", {"task": "echo", "args": [json.loads("[" * 40 + "]" * 40)]}, 422, "deeper"),
]


@pytest.mark.parametrize(
    ("body", "status", "named"),
    [pytest.param(b, s, n, id=i) for i, b, s, n in BAD_SUBMISSIONS],
)
async def test_bad_submission_is_a_4xx_naming_the_problem_and_stores_nothing(
    client: Client, queue: hq.Queue, body: Any, status: int, named: str
) -> None:
    response = await client.post("/api/v1/jobs", json=body)
    assert response.status_code == status, response.text
    error = response.json()
    assert error["status_code"] == status
    assert named in error["detail"]
    assert await stored(queue) == 0


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        pytest.param(b"{not json", "malformed", id="malformed"),
        pytest.param(b"", "", id="empty"),
        pytest.param(b'{"task": "echo", "args": [' + b"[" * 5000 + b"]" * 5000 + b"]}",
                     "nested too deeply", id="very-deep"),
        pytest.param(b'{"task": "echo", "args": ["\\ud800"]}', "", id="lone-surrogate"),
    ],
)  # fmt: skip
async def test_unparseable_body_is_400(
    client: Client, queue: hq.Queue, raw: bytes, named: str
) -> None:
    response = await client.post(
        "/api/v1/jobs", content=raw, headers={"content-type": "application/json"}
    )
    assert 400 <= response.status_code < 500, response.text
    assert named in response.json()["detail"]
    assert await stored(queue) == 0


async def test_oversize_body_is_413_with_a_configurable_limit(
    queue: hq.Queue, make_client: MakeClient
) -> None:
    async with make_client(queue, workers=False, max_body_size=1000) as client:
        body = {"task": "echo", "args": ["x" * 2000]}
        response = await client.post("/api/v1/jobs", json=body)
        assert response.status_code == 413
        assert "1000 bytes" in response.json()["detail"]
        small = await client.post("/api/v1/jobs", json={"task": "echo", "args": ["x"]})
        assert small.status_code == 201
    assert await stored(queue) == 1


# -- batches ---------------------------------------------------------------------------


async def test_batch_of_valid_jobs_stores_all(client: Client, queue: hq.Queue) -> None:
    jobs = [{"task": "add", "args": [i, i]} for i in range(5)] + [{"task": "echo", "key": "b"}]
    response = await client.post("/api/v1/jobs/batch", json={"jobs": jobs})
    assert response.status_code == 200
    body = response.json()
    assert (body["created"], body["existing"], body["failed"]) == (6, 0, 0)
    assert [item["job"]["args"] for item in body["items"][:5]] == [[i, i] for i in range(5)]
    assert await stored(queue) == 6
    again = (await client.post("/api/v1/jobs/batch", json={"jobs": jobs[-1:]})).json()
    assert again["items"][0]["status_code"] == 200
    assert again["existing"] == 1


async def test_batch_reports_each_bad_item_and_stores_the_good(
    client: Client, queue: hq.Queue
) -> None:
    jobs = [
        {"task": "add", "args": [1, 2]},
        {"task": "nope"},
        {"task": "add", "args": [1, "x"]},
        {"task": "add", "args": [3, 4], "delay": -1},
    ]
    response = await client.post("/api/v1/jobs/batch", json={"jobs": jobs})
    assert response.status_code == 200
    items = response.json()["items"]
    assert [item["status_code"] for item in items] == [201, 422, 422, 422]
    assert items[0]["job"]["args"] == [1, 2]
    assert "unknown task 'nope'" in items[1]["detail"]
    assert "argument 'b'" in items[2]["detail"]
    assert "delay" in items[3]["detail"]
    assert await stored(queue) == 1


@pytest.mark.parametrize(
    "body",
    [{"jobs": []}, {"jobs": [{"task": "add"}] * 1001}, {"jobs": [{"task": 1}]}, {"items": []}],
    ids=["empty", "too-many", "bad-item", "no-jobs"],
)
async def test_malformed_batch_is_400_and_stores_nothing(
    client: Client, queue: hq.Queue, body: Any
) -> None:
    response = await client.post("/api/v1/jobs/batch", json=body)
    assert response.status_code == 400
    assert response.json()["detail"].startswith("invalid request")
    assert await stored(queue) == 0


# -- reading ---------------------------------------------------------------------------


async def test_get_job_and_404(client: Client, queue: hq.Queue) -> None:
    job = await queue.enqueue("add", args=[1, 2])
    response = await client.get(f"/api/v1/jobs/{job.id}")
    assert response.status_code == 200
    assert response.json()["id"] == job.id
    missing = await client.get("/api/v1/jobs/no-such-job")
    assert missing.status_code == 404
    assert missing.json() == {
        "status_code": 404,
        "detail": "no job with id 'no-such-job'",
        "extra": {"job_id": "no-such-job"},
    }


async def test_list_filters_and_paginates_without_gaps(client: Client, queue: hq.Queue) -> None:
    ids = [(await queue.enqueue("add", args=[i, i], tenant="a")).id for i in range(7)]
    await queue.enqueue("echo", queue="other", tenant="b")
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"task": "add", "limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/api/v1/jobs", params=params)).json()
        seen += [job["id"] for job in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]  # newest first, each once
    other = (await client.get("/api/v1/jobs", params={"queue": "other"})).json()["items"]
    assert [job["task"] for job in other] == ["echo"]
    tenant = (await client.get("/api/v1/jobs", params={"tenant": "b"})).json()["items"]
    assert [job["tenant"] for job in tenant] == ["b"]
    pending = (await client.get("/api/v1/jobs", params={"status": "pending"})).json()["items"]
    assert len(pending) == 8
    assert (await client.get("/api/v1/jobs", params={"status": "done"})).status_code == 400
    for limit in (0, 1001, "x"):
        bad = await client.get("/api/v1/jobs", params={"limit": limit})
        assert bad.status_code == 400
        assert "limit" in bad.json()["detail"]


async def test_queues_and_dead_letters(queue: hq.Queue, make_client: MakeClient) -> None:
    async with make_client(queue, concurrency=2) as client:
        failed = await queue.enqueue("fail", args=["boom"])
        done = await queue.enqueue("add", args=[2, 2], queue="maths")
        with anyio.fail_after(10):
            await queue.wait(failed.id)
            await queue.wait(done.id)
        queues = (await client.get("/api/v1/queues")).json()["queues"]
        figures = {q["queue"]: q for q in queues}
        assert figures["default"]["failed"] == 1
        assert figures["maths"]["completed"] == 1
        assert figures["maths"]["total"] == 1
        letters = (await client.get("/api/v1/dead-letters")).json()
        assert [job["id"] for job in letters["items"]] == [failed.id]
        assert "boom" in letters["items"][0]["error"]
        assert (await client.get("/api/v1/dead-letters", params={"queue": "maths"})).json()[
            "items"
        ] == []


# -- changing --------------------------------------------------------------------------


async def test_cancel_then_retry_and_409_for_invalid_transitions(
    client: Client, queue: hq.Queue
) -> None:
    job = await queue.enqueue("add", args=[1, 2])
    cancelled = await client.post(f"/api/v1/jobs/{job.id}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    again = await client.post(f"/api/v1/jobs/{job.id}/cancel")
    assert again.status_code == 200  # cancelling is idempotent
    retried = await client.post(f"/api/v1/jobs/{job.id}/retry")
    assert retried.status_code == 200
    assert retried.json()["status"] == "pending"
    pending = await client.post(f"/api/v1/jobs/{job.id}/retry")
    assert pending.status_code == 409
    assert pending.json()["extra"]["status"] == "pending"
    assert (await client.post("/api/v1/jobs/nope/cancel")).status_code == 404
    assert (await client.post("/api/v1/jobs/nope/retry")).status_code == 404


async def test_submitted_job_runs_to_completion(queue: hq.Queue, make_client: MakeClient) -> None:
    async with make_client(queue, concurrency=2) as client:
        job = (await client.post("/api/v1/jobs", json={"task": "add", "args": [20, 22]})).json()
        with anyio.fail_after(10):
            done = await queue.wait(job["id"])
        assert done.result == 42
        assert (await client.get(f"/api/v1/jobs/{job['id']}")).json()["status"] == "completed"
        late = await client.post(f"/api/v1/jobs/{job['id']}/cancel")
        assert late.status_code == 409
        assert "cannot cancel" in late.json()["detail"]


# -- modes -----------------------------------------------------------------------------


async def test_read_only_mode_refuses_submissions_with_503_and_retry_after(
    queue: hq.Queue, make_client: MakeClient
) -> None:
    modes = hq.ModeController(clock=queue.clock, retry_after=30)
    async with make_client(queue, workers=False, modes=modes) as client:
        job = await queue.enqueue("add", args=[1, 2])
        modes.set(hq.Mode.READ_ONLY, reason="disk nearly full")
        refused = await client.post("/api/v1/jobs", json={"task": "add", "args": [1, 2]})
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "30"
        assert "read_only" in refused.json()["detail"]
        assert "disk nearly full" in refused.json()["detail"]
        batch = await client.post("/api/v1/jobs/batch", json={"jobs": [{"task": "echo"}]})
        assert batch.status_code == 503
        assert (await client.get(f"/api/v1/jobs/{job.id}")).status_code == 200
        assert (await client.get("/api/v1/jobs")).status_code == 200
        assert await stored(queue) == 1


async def test_maintenance_answers_only_health_and_status(
    queue: hq.Queue, make_client: MakeClient
) -> None:
    modes = hq.ModeController(clock=queue.clock)
    async with make_client(queue, workers=False, modes=modes) as client:
        job = await queue.enqueue("add", args=[1, 2])
        modes.set(hq.Mode.MAINTENANCE, until=queue.clock.now() + 120)
        for method, path in [
            ("GET", f"/api/v1/jobs/{job.id}"),
            ("GET", "/api/v1/jobs"),
            ("GET", "/api/v1/dead-letters"),
            ("POST", f"/api/v1/jobs/{job.id}/cancel"),
            ("POST", f"/api/v1/jobs/{job.id}/retry"),
        ]:
            response = await client.request(method, path)
            assert response.status_code == 503, path
            assert 115 <= int(response.headers["retry-after"]) <= 120
        assert (await client.get("/api/v1/queues")).status_code == 200
        health = await client.get("/health")
        assert health.status_code == 200
        assert health.json()["mode"] == "maintenance"
        assert (await queue.get(job.id)).status is hq.JobStatus.PENDING


# -- the plugin in a host's own app --------------------------------------------------------


async def test_plugin_provides_the_queue_to_host_handlers_and_takes_guards(
    serve_app: Callable[[Litestar], Any],
) -> None:
    from litestar.connection import ASGIConnection
    from litestar.exceptions import NotAuthorizedException
    from litestar.handlers.base import BaseRouteHandler

    queue = hq.Queue(events=hq.EventBus(history=100))

    @queue.task
    async def noop() -> None:
        return None

    def needs_header(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        if connection.headers.get("x-api-key") != "secret":
            raise NotAuthorizedException("missing or wrong API key")

    @get("/count")
    async def count(hq_queue: NamedDependency[hq.Queue]) -> dict[str, int]:
        return {"jobs": sum(s.total for s in (await hq_queue.stats()).values())}

    plugin = HyperqueuePlugin(queue, workers=False, guards=[needs_header], api_prefix="/q")
    app = Litestar(route_handlers=[count], plugins=[plugin])
    async with serve_app(app) as client:
        refused = await client.post("/q/jobs", json={"task": "noop"})
        assert refused.status_code == 401
        assert refused.json()["detail"] == "missing or wrong API key"
        ok = await client.post("/q/jobs", json={"task": "noop"}, headers={"x-api-key": "secret"})
        assert ok.status_code == 201
        assert (await client.get("/count")).json() == {"jobs": 1}
        assert (await client.get("/health")).status_code == 200  # health is not guarded


def test_plugin_refuses_what_is_not_a_queue() -> None:
    with pytest.raises(TypeError, match=r"hyperqueue\.Queue"):
        HyperqueuePlugin("app:queue")  # type: ignore[arg-type]


async def test_unknown_route_and_method_are_json_4xx(client: Client) -> None:
    missing = await client.get("/api/v1/nothing")
    assert missing.status_code == 404
    assert missing.json()["status_code"] == 404
    wrong = await client.delete("/api/v1/jobs")
    assert wrong.status_code == 405
    assert "detail" in wrong.json()


async def test_openapi_document_lists_every_route(client: Client) -> None:
    document = (await client.get("/schema/openapi.json")).json()
    paths = set(document["paths"])
    assert paths >= {
        "/api/v1/jobs",
        "/api/v1/jobs/batch",
        "/api/v1/jobs/{job_id}",
        "/api/v1/jobs/{job_id}/cancel",
        "/api/v1/jobs/{job_id}/retry",
        "/api/v1/queues",
        "/api/v1/dead-letters",
        "/api/v1/events",
        "/health",
        "/health/live",
        "/health/ready",
    }
    submit = document["paths"]["/api/v1/jobs"]["post"]
    assert {"201", "422", "503"} <= set(submit["responses"])


@pytest.mark.parametrize(
    "kwargs", [{"self": 1}, {"task": 1}, {"1": 2}, {"value": 1, "extra": 2}], ids=str
)
async def test_keywords_that_collide_or_do_not_exist_are_422(
    client: Client, queue: hq.Queue, kwargs: dict[str, Any]
) -> None:
    response = await client.post("/api/v1/jobs", json={"task": "echo", "kwargs": kwargs})
    assert response.status_code == 422, response.text
    assert "'echo'" in response.json()["detail"]
    assert await stored(queue) == 0


async def test_health_reports_memory_as_a_non_critical_check(
    queue: hq.Queue, make_client: MakeClient
) -> None:
    async with make_client(queue, workers=False, max_memory_bytes=1) as client:
        response = await client.get("/health")
    body = response.json()
    assert set(body["checks"]) >= {"storage", "queue_depth", "workers", "memory"}
    assert body["checks"]["memory"]["status"] == "degraded"
    assert "MiB resident" in body["checks"]["memory"]["message"]
    assert body["checks"]["memory"]["latency_ms"] >= 0
    # over its memory limit the server is degraded, still serving: not a 503
    assert response.status_code == 200 and body["status"] == "degraded"
