"""Workflows and batches over HTTP: submit, poll, cancel, retry; a bad workflow is a 422
naming its step with nothing stored; roles and tenants as on the jobs routes."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import pytest

import hyperqueue as hq
from hyperqueue_litestar import create_app
from hyperqueue_litestar._auth import Auth
from hyperqueue_litestar._config import ApiKey, Config, TenantQuota
from hyperqueue_litestar._workflow_routes import MAX_STEPS

MakeClient = Callable[..., Any]
Client = httpx.AsyncClient

pytestmark = pytest.mark.anyio

FINAL = {"completed", "failed", "cancelled"}


class Calls:
    """What the tasks saw: calls per task, how many ran at once at most, and a switch
    that makes ``flaky`` fail until it is turned off."""

    def __init__(self) -> None:
        self.count: Counter[str] = Counter()
        self.running = 0
        self.most = 0
        self.failing = True
        self.started = anyio.Event()


@pytest.fixture
def calls() -> Calls:
    return Calls()


@pytest.fixture
def queue(calls: Calls) -> hq.Queue:
    queue = hq.Queue()

    @queue.task
    async def extract(url: str) -> list[int]:
        calls.count["extract"] += 1
        return [1, 2, 3]

    @queue.task
    async def scale(rows: list[int], factor: int = 2) -> list[int]:
        calls.count["scale"] += 1
        return [r * factor for r in rows]

    @queue.task
    async def total(rows: list[int]) -> int:
        calls.count["total"] += 1
        return sum(rows)

    @queue.task
    async def flaky(value: int) -> int:
        calls.count["flaky"] += 1
        if calls.failing:
            raise RuntimeError("flaky failed")
        return value

    @queue.task
    async def square(n: int) -> int:
        calls.count["square"] += 1
        calls.running += 1
        calls.most = max(calls.most, calls.running)
        try:
            await anyio.sleep(0.02)
        finally:
            calls.running -= 1
        return n * n

    @queue.task
    async def block() -> None:
        calls.count["block"] += 1
        calls.started.set()
        await anyio.sleep(60)

    return queue


async def stored(queue: hq.Queue) -> int:
    return sum(s.total for s in (await queue.stats()).values())


async def settle(client: Client, workflow_id: str, **headers: str) -> dict[str, Any]:
    """Poll ``GET /workflows/{id}`` until the workflow is final."""
    with anyio.fail_after(10):
        while True:
            response = await client.get(f"/api/v1/workflows/{workflow_id}", headers=headers)
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            if body["status"] in FINAL:
                return body
            await anyio.sleep(0.01)


PIPELINE: dict[str, Any] = {
    "steps": [
        {"name": "extract", "task": "extract", "args": ["s3://bucket/x"]},
        {"name": "scale", "task": "scale", "kwargs": {"factor": 3}, "inputs": {"rows": "extract"}},
        {"name": "total", "task": "total", "inputs": {"rows": "scale"}, "priority": "high"},
    ]
}


# -- running ---------------------------------------------------------------------------


async def test_a_dag_hands_results_on_and_ends_with_the_sinks_result(
    queue: hq.Queue, make_client: MakeClient, calls: Calls
) -> None:
    async with make_client(queue) as client:
        response = await client.post("/api/v1/workflows", json=PIPELINE)
        assert response.status_code == 201, response.text
        run = response.json()
        assert run["id"].startswith("wf_")
        assert run["status"] == "pending"
        assert list(run["steps"]) == ["extract", "scale", "total"]
        assert set(run["jobs"]) == {"extract", "scale", "total"}
        assert run["jobs"]["total"]["priority"] == "high"
        assert run["jobs"]["scale"]["kwargs"] == {"factor": 3}
        assert run["jobs"]["total"]["step"]["parents"] == [run["steps"]["scale"]]
        done = await settle(client, run["id"])
    assert done["status"] == "completed"
    assert done["result"] == {"total": 18}  # the sink's result only
    assert done["error"] is None
    assert done["finished_at"] is not None
    assert done["statuses"] == dict.fromkeys(["extract", "scale", "total"], "completed")
    assert done["jobs"]["scale"]["result"] == [3, 6, 9]
    assert calls.count == {"extract": 1, "scale": 1, "total": 1}


async def test_a_batch_is_steps_without_edges_run_under_its_concurrency(
    queue: hq.Queue, make_client: MakeClient, calls: Calls
) -> None:
    steps = [{"task": "square", "args": [n]} for n in range(6)]
    async with make_client(queue, concurrency=10) as client:
        response = await client.post("/api/v1/workflows", json={"steps": steps, "concurrency": 2})
        assert response.status_code == 201, response.text
        assert response.json()["concurrency"] == 2
        # a step's name is its task's, with a suffix from the second on
        assert list(response.json()["steps"]) == [
            "square", "square-2", "square-3", "square-4", "square-5", "square-6",
        ]  # fmt: skip
        done = await settle(client, response.json()["id"])
        brief = await client.get(f"/api/v1/workflows/{done['id']}", params={"jobs": "false"})
    assert done["status"] == "completed"
    assert sorted(done["result"].values()) == [0, 1, 4, 9, 16, 25]  # every step is a sink
    assert calls.count["square"] == 6
    assert calls.most == 2
    assert brief.json()["jobs"] is None
    assert brief.json()["status"] == "completed"


async def test_cancel_a_running_workflow(
    queue: hq.Queue, make_client: MakeClient, calls: Calls
) -> None:
    body = {
        "steps": [
            {"name": "block", "task": "block"},
            {"name": "after", "task": "total", "args": [[1]], "after": ["block"]},
        ]
    }
    async with make_client(queue) as client:
        run = (await client.post("/api/v1/workflows", json=body)).json()
        with anyio.fail_after(10):
            await calls.started.wait()
        running = (await client.get(f"/api/v1/workflows/{run['id']}")).json()
        assert running["status"] == "running"
        assert running["statuses"] == {"block": "running", "after": "pending"}
        cancelled = await client.post(f"/api/v1/workflows/{run['id']}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "cancelled"
        assert cancelled.json()["statuses"] == {"block": "cancelled", "after": "cancelled"}
        again = await client.post(f"/api/v1/workflows/{run['id']}/cancel")
        assert again.status_code == 200  # nothing left to cancel: the run as it is
        assert again.json()["status"] == "cancelled"
    assert calls.count == {"block": 1}


async def test_retry_runs_the_failed_step_and_what_follows_it_only(
    queue: hq.Queue, make_client: MakeClient, calls: Calls
) -> None:
    body = {
        "steps": [
            {"name": "extract", "task": "extract", "args": ["s3://x"]},
            {"name": "side", "task": "total", "args": [[5, 5]]},
            {"name": "flaky", "task": "flaky", "args": [7], "after": ["extract"]},
            {"name": "total", "task": "total", "inputs": {"rows": "extract"}, "after": ["flaky"]},
        ]
    }
    async with make_client(queue) as client:
        run = (await client.post("/api/v1/workflows", json=body)).json()
        failed = await settle(client, run["id"])
        assert failed["status"] == "failed"
        assert failed["statuses"] == {
            "extract": "completed", "side": "completed", "flaky": "failed", "total": "cancelled",
        }  # fmt: skip
        assert "step 'flaky' failed" in failed["error"]
        assert "flaky failed" in failed["error"]
        assert failed["result"] is None
        calls.failing = False
        retried = await client.post(f"/api/v1/workflows/{run['id']}/retry")
        assert retried.status_code == 200, retried.text
        assert retried.json()["statuses"]["extract"] == "completed"
        assert retried.json()["statuses"]["flaky"] in {"pending", "running", "completed"}
        done = await settle(client, run["id"])
    assert done["status"] == "completed"
    assert done["result"] == {"side": 10, "total": 6}
    assert done["steps"] == run["steps"]  # the same jobs, run again
    # extract and side completed the first time: their jobs did not run again
    assert calls.count == {"extract": 1, "total": 2, "flaky": 2}
    # ("total" counts side's run and the retried total step's)


async def test_retry_while_a_step_runs_is_409_and_unknown_ids_are_404(
    queue: hq.Queue, make_client: MakeClient, calls: Calls
) -> None:
    async with make_client(queue) as client:
        run = (await client.post("/api/v1/workflows", json={"steps": [{"task": "block"}]})).json()
        with anyio.fail_after(10):
            await calls.started.wait()
        busy = await client.post(f"/api/v1/workflows/{run['id']}/retry")
        assert busy.status_code == 409, busy.text
        assert busy.json()["status_code"] == 409
        assert "cannot retry" in busy.json()["detail"]
        await client.post(f"/api/v1/workflows/{run['id']}/cancel")
        for method, path in [
            ("GET", "/api/v1/workflows/wf_nope"),
            ("POST", "/api/v1/workflows/wf_nope/cancel"),
            ("POST", "/api/v1/workflows/wf_nope/retry"),
        ]:
            missing = await client.request(method, path)
            assert missing.status_code == 404, (method, path)
            assert missing.json() == {
                "status_code": 404,
                "detail": "no workflow with id 'wf_nope'",
                "extra": {"workflow_id": "wf_nope"},
            }


# -- refused ---------------------------------------------------------------------------

BAD_WORKFLOWS: list[tuple[str, Any, int, str]] = [
    (
        "cycle",
        {
            "steps": [
                {"name": "a", "task": "total", "args": [[1]], "after": ["c"]},
                {"name": "b", "task": "total", "args": [[1]], "after": ["a"]},
                {"name": "c", "task": "total", "args": [[1]], "after": ["b"]},
            ]
        },
        422,
        "the steps form a cycle: ",
    ),
    (
        "unknown step in after",
        {"steps": [{"name": "a", "task": "total", "args": [[1]], "after": ["ghost"]}]},
        422,
        "step 'a': depends on an unknown step 'ghost'",
    ),
    (
        "unknown step in inputs",
        {"steps": [{"name": "a", "task": "total", "inputs": {"rows": "ghost"}}]},
        422,
        "step 'a': depends on an unknown step 'ghost'",
    ),
    (
        "bad argument type",
        {
            "steps": [
                {"name": "ok", "task": "square", "args": [2]},
                {"name": "bad", "task": "square", "args": ["two"]},
            ]
        },
        422,
        "step 'bad': invalid arguments for task 'square' (argument 'n')",
    ),
    (
        "missing argument",
        {"steps": [{"name": "lonely", "task": "total"}]},
        422,
        "step 'lonely'",
    ),
    (
        "input for no parameter",
        {
            "steps": [
                {"name": "a", "task": "square", "args": [2]},
                {"name": "b", "task": "square", "args": [2], "inputs": {"m": "a"}},
            ]
        },
        422,
        "step 'b'",
    ),
    (
        "depends on itself",
        {"steps": [{"name": "a", "task": "square", "args": [2], "after": ["a"]}]},
        422,
        "step 'a': depends on itself",
    ),
    (
        "same name twice",
        {
            "steps": [
                {"name": "a", "task": "square", "args": [1]},
                {"name": "a", "task": "square", "args": [2]},
            ]
        },
        422,
        "step 'a': a step of this name was added already",
    ),
    ("unknown task", {"steps": [{"task": "nope"}]}, 422, "unknown task 'nope'"),
    (
        "unknown task with options",
        {"steps": [{"task": "nope", "priority": "high"}]},
        422,
        "unknown task 'nope'",
    ),
    ("no step", {"steps": []}, 422, "at least one step"),
    (
        "keyword taken by the step itself",
        {"steps": [{"task": "square", "kwargs": {"name": 1}}]},
        422,
        "step '#1 (square)': keyword argument 'name'",
    ),
    (
        "deep arguments",
        {"steps": [{"name": "deep", "task": "total", "args": [json.loads("[" * 40 + "]" * 40)]}]},
        422,
        "step 'deep': arguments nest deeper than 32 levels",
    ),
    ("bad option", {"steps": [{"task": "square", "args": [1], "delay": -1}]}, 422, "'delay'"),
    (
        "bad on_parent_failure",
        {"steps": [{"task": "square", "args": [1], "on_parent_failure": "maybe"}]},
        400,
        "on_parent_failure",
    ),
    (
        "idempotency key",
        {"steps": [{"task": "square", "args": [1], "key": "k"}]},
        400,
        "unknown field `key`",
    ),
    (
        "zero concurrency",
        {"steps": [{"task": "square", "args": [1]}], "concurrency": 0},
        400,
        ">= 1",
    ),
    ("no steps field", {"concurrency": 2}, 400, "steps"),
]


@pytest.mark.parametrize(
    ("body", "status", "named"),
    [pytest.param(b, s, n, id=i) for i, b, s, n in BAD_WORKFLOWS],
)
async def test_a_bad_workflow_is_a_4xx_naming_its_step_and_stores_nothing(
    client: Client, queue: hq.Queue, body: Any, status: int, named: str
) -> None:
    response = await client.post("/api/v1/workflows", json=body)
    assert response.status_code == status, response.text
    error = response.json()
    assert error["status_code"] == status
    assert named in error["detail"]
    assert await stored(queue) == 0


async def test_the_cycle_is_named_in_order(client: Client) -> None:
    body = {
        "steps": [
            {"name": "a", "task": "total", "args": [[1]], "after": ["b"]},
            {"name": "b", "task": "total", "args": [[1]], "after": ["a"]},
        ]
    }
    detail = (await client.post("/api/v1/workflows", json=body)).json()["detail"]
    assert detail in {"the steps form a cycle: a -> b -> a", "the steps form a cycle: b -> a -> b"}


async def test_too_many_steps_is_a_422_saying_the_limit(client: Client, queue: hq.Queue) -> None:
    steps = [{"task": "square", "args": [1]}] * (MAX_STEPS + 1)
    response = await client.post("/api/v1/workflows", json={"steps": steps})
    assert response.status_code == 422
    assert response.json()["detail"].startswith("a workflow has at most 10,000 steps")
    assert response.json()["extra"] == {"limit": MAX_STEPS, "steps": MAX_STEPS + 1}
    assert await stored(queue) == 0


async def test_step_options_reach_the_steps_jobs(client: Client) -> None:
    step = {
        "task": "square",
        "args": [3],
        "queue": "maths",
        "priority": "low",
        "delay": 30,
        "timeout": 5,
        "max_attempts": 4,
        "tenant": "t1",
    }
    response = await client.post("/api/v1/workflows", json={"steps": [step]})
    assert response.status_code == 201, response.text
    job = response.json()["jobs"]["square"]
    assert (job["queue"], job["priority"], job["timeout"]) == ("maths", "low", 5.0)
    assert (job["max_attempts"], job["tenant"]) == (4, "t1")
    assert job["run_at"] == pytest.approx(job["created_at"] + 30)


async def test_read_only_mode_refuses_submission_with_503(
    queue: hq.Queue, make_client: MakeClient
) -> None:
    modes = hq.ModeController(clock=queue.clock)
    async with make_client(queue, workers=False, modes=modes) as client:
        modes.set(hq.Mode.READ_ONLY, reason="test")
        response = await client.post("/api/v1/workflows", json=PIPELINE)
        assert response.status_code == 503, response.text
        assert await stored(queue) == 0


# -- keys and tenants ------------------------------------------------------------------

KEYS = {
    "op-key": ApiKey(name="ops", key_hash=ApiKey.hash_key("op-key"), roles=["operator"]),
    "view-key": ApiKey(name="watcher", key_hash=ApiKey.hash_key("view-key"), roles=["viewer"]),
    "acme-key": ApiKey(
        name="acme", key_hash=ApiKey.hash_key("acme-key"), roles=["operator"], tenant="acme"
    ),
}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_roles_viewer_reads_and_operator_changes(
    queue: hq.Queue, serve_app: Callable[[Any], Any]
) -> None:
    auth = Auth.from_config(
        queue, Config(keys=list(KEYS.values()), tenants={"acme": TenantQuota()})
    )
    app = create_app(queue, workers=False, guards=[auth.guard], middleware=[auth.middleware])
    async with serve_app(app) as client:
        refused = await client.post("/api/v1/workflows", json=PIPELINE, headers=bearer("view-key"))
        assert refused.status_code == 403, refused.text
        assert "operator role" in refused.json()["detail"]
        assert await stored(queue) == 0
        assert (await client.post("/api/v1/workflows", json=PIPELINE)).status_code == 401
        made = await client.post("/api/v1/workflows", json=PIPELINE, headers=bearer("op-key"))
        assert made.status_code == 201, made.text
        path = f"/api/v1/workflows/{made.json()['id']}"
        assert (await client.get(path, headers=bearer("view-key"))).status_code == 200
        for action in ("cancel", "retry"):
            viewer = await client.post(f"{path}/{action}", headers=bearer("view-key"))
            assert viewer.status_code == 403, action
        cancelled = await client.post(f"{path}/cancel", headers=bearer("op-key"))
        assert cancelled.status_code == 200
        retried = await client.post(f"{path}/retry", headers=bearer("op-key"))
        assert retried.status_code == 200
        assert retried.json()["status"] == "pending"


async def test_the_routes_confine_a_tenant_caller_to_its_tenant(
    queue: hq.Queue, serve_app: Callable[[Any], Any]
) -> None:
    auth = Auth.from_config(
        queue, Config(keys=list(KEYS.values()), tenants={"acme": TenantQuota()})
    )
    app = create_app(queue, workers=False, guards=[auth.guard], middleware=[auth.middleware])
    acme = bearer("acme-key")
    async with serve_app(app) as client:
        body = {"steps": [{**PIPELINE["steps"][0], "tenant": "globex"}, *PIPELINE["steps"][1:]]}
        mine = await client.post("/api/v1/workflows", json=body, headers=acme)
        assert mine.status_code == 201, mine.text
        assert {job["tenant"] for job in mine.json()["jobs"].values()} == {"acme"}
        own = await client.get(f"/api/v1/workflows/{mine.json()['id']}", headers=acme)
        assert own.status_code == 200
        theirs = await client.post("/api/v1/workflows", json=PIPELINE, headers=bearer("op-key"))
        # a key with no tenant stores steps as the body says: one of another tenant
        mixed = await client.post("/api/v1/workflows", json=body, headers=bearer("op-key"))
        for other in (theirs.json()["id"], mixed.json()["id"]):
            for method, path in [
                ("GET", f"/api/v1/workflows/{other}"),
                ("POST", f"/api/v1/workflows/{other}/cancel"),
                ("POST", f"/api/v1/workflows/{other}/retry"),
            ]:
                response = await client.request(method, path, headers=acme)
                assert response.status_code == 404, (method, path)
                assert response.json()["detail"] == f"no workflow with id {other!r}"
        assert (await queue.get_workflow(theirs.json()["id"])).status is hq.WorkflowStatus.PENDING
