"""The worker protocol over HTTP: claim, extend, finish with leases and fencing tokens
decided by the server's clock, the worker role, long polls, and refusals of bad bodies."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import msgspec
import pytest

import hyperqueue as hq
from hyperqueue.testing import FakeClock
from hyperqueue_litestar import Auth, create_app
from hyperqueue_litestar._config import ApiKey

pytestmark = pytest.mark.anyio

KEYS = {
    "work-key": ApiKey(name="remote", key_hash=ApiKey.hash_key("work-key"), roles=["worker"]),
    "view-key": ApiKey(name="watcher", key_hash=ApiKey.hash_key("view-key"), roles=["viewer"]),
    "op-key": ApiKey(name="ops", key_hash=ApiKey.hash_key("op-key"), roles=["operator"]),
}
W = "/api/v1/worker"


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def queue(clock: FakeClock) -> hq.Queue:
    queue = hq.Queue(clock=clock)

    @queue.task
    async def add(a: int, b: int) -> int:
        return a + b

    @queue.task
    async def other() -> None:
        return None

    return queue


@pytest.fixture
async def client(queue: hq.Queue, serve_app: Any) -> AsyncIterator[httpx.AsyncClient]:
    auth = Auth(queue, keys=list(KEYS.values()))
    app = create_app(queue, workers=False, guards=[auth.guard], middleware=[auth.middleware])
    async with serve_app(app) as client:
        client.headers.update(_auth("work-key"))
        yield client


async def _claim(
    client: httpx.AsyncClient, worker: str = "w1", **body: Any
) -> list[dict[str, Any]]:
    response = await client.post(f"{W}/claim", json={"worker": worker, **body})
    assert response.status_code == 200, response.text
    jobs: list[dict[str, Any]] = response.json()["jobs"]
    return jobs


async def test_claim_extend_finish_a_job(
    client: httpx.AsyncClient, queue: hq.Queue, clock: FakeClock
) -> None:
    job = await queue.enqueue("add", args=[1, 2])
    [claimed] = await _claim(client, lease=10)
    assert claimed["id"] == job.id and claimed["status"] == "running"
    assert claimed["token"] >= 1 and claimed["attempts"] == 1 and claimed["worker"] == "w1"
    assert claimed["lease_until"] == pytest.approx(clock.now() + 10)
    await clock.advance(8)
    extended = await client.post(
        f"{W}/extend", json={"leases": [{"id": job.id, "token": claimed["token"]}], "lease": 10}
    )
    assert extended.json() == {"kept": [True]}
    assert (await queue.get(job.id)).lease_until == pytest.approx(clock.now() + 10)
    started = await client.post(
        f"{W}/started", json={"starts": [{"id": job.id, "token": claimed["token"], "at": 5.0}]}
    )
    assert started.json() == {"started": [True]}
    done = await client.post(
        f"{W}/finish",
        json={
            "outcomes": [
                {"id": job.id, "token": claimed["token"], "status": "completed", "result": 3}
            ]
        },
    )
    assert done.status_code == 200, done.text
    [finished] = done.json()["jobs"]
    assert finished["status"] == "completed" and finished["result"] == 3
    assert finished["finished_at"] == pytest.approx(clock.now())
    stored = await queue.get(job.id)
    assert stored.status is hq.JobStatus.COMPLETED and stored.result == 3


async def test_remote_workers_changes_reach_the_servers_event_bus(
    client: httpx.AsyncClient, queue: hq.Queue
) -> None:
    """Metrics, hooks and audit of the server subscribe to its bus: a remote worker's
    start, progress and outcomes are published there as an in-process worker's are."""
    seen: list[tuple[str, str]] = []
    queue.events.subscribe(lambda e: seen.append((type(e).__name__, e.job.id)), "job.*")
    ok = await queue.enqueue("add", args=[1, 2])
    bad = await queue.enqueue("add", args=[2, 2])
    claimed = await _claim(client, limit=2)
    tokens = {j["id"]: j["token"] for j in claimed}
    await client.post(
        f"{W}/started", json={"starts": [{"id": ok.id, "token": tokens[ok.id], "at": 1.0}]}
    )
    await client.post(f"{W}/progress", json={"id": ok.id, "token": tokens[ok.id], "progress": 1})
    outcomes = [
        {"id": ok.id, "token": tokens[ok.id], "status": "completed", "result": 3},
        {"id": bad.id, "token": tokens[bad.id], "status": "failed", "error": "E"},
    ]
    assert (await client.post(f"{W}/finish", json={"outcomes": outcomes})).status_code == 200
    assert [name for name, _ in seen if name != "JobEnqueued"] == [
        "JobStarted",
        "JobProgress",
        "JobCompleted",
        "JobFailed",
    ]


async def test_a_lost_lease_is_rescued_by_another_claimer_and_the_stale_finish_is_refused(
    client: httpx.AsyncClient, queue: hq.Queue, clock: FakeClock
) -> None:
    job = await queue.enqueue("add", args=[1, 2])
    [first] = await _claim(client, worker="a", lease=5)
    await clock.advance(4)
    assert (await client.post(f"{W}/rescue")).json() == {"jobs": []}  # still leased
    await clock.advance(2)  # the server's clock passes the lease: worker "a" is lost
    rescued = (await client.post(f"{W}/rescue")).json()["jobs"]
    assert [(j["id"], j["status"], j["rescues"]) for j in rescued] == [(job.id, "pending", 1)]
    [second] = await _claim(client, worker="b", lease=5)
    assert second["id"] == job.id and second["token"] > first["token"]
    late = await client.post(
        f"{W}/finish",
        json={
            "outcomes": [
                {"id": job.id, "token": first["token"], "status": "completed", "result": "late"}
            ]
        },
    )
    assert late.status_code == 409
    body = late.json()
    assert body["status_code"] == 409 and "stale" in body["detail"]
    assert body["extra"] == {"refused": [job.id], "jobs": [None]}
    stored = await queue.get(job.id)
    assert stored.status is hq.JobStatus.RUNNING and stored.worker == "b"
    assert stored.token == second["token"] and stored.result is None
    kept = await client.post(
        f"{W}/extend", json={"leases": [{"id": job.id, "token": first["token"]}]}
    )
    assert kept.json() == {"kept": [False]}
    ok = await client.post(
        f"{W}/finish",
        json={"outcomes": [{"id": job.id, "token": second["token"], "status": "completed"}]},
    )
    assert ok.status_code == 200


async def test_the_lease_is_counted_on_the_servers_clock(
    client: httpx.AsyncClient, queue: hq.Queue, clock: FakeClock
) -> None:
    """No body carries a time for the lease: a claim asking for ``now`` is refused."""
    await queue.enqueue("add", args=[1, 2])
    refused = await client.post(f"{W}/claim", json={"worker": "w", "now": 0})
    assert refused.status_code == 400
    [claimed] = await _claim(client, lease=30)
    assert claimed["lease_until"] == pytest.approx(clock.now() + 30)


async def test_claim_takes_only_the_tasks_and_queues_the_worker_declares(
    client: httpx.AsyncClient, queue: hq.Queue
) -> None:
    add = await queue.enqueue("add", args=[1, 2])
    other = await queue.enqueue("other", queue="q2")
    assert await _claim(client, tasks=["unknown"], limit=10) == []
    assert [j["id"] for j in await _claim(client, queues=["q2"], limit=10)] == [other.id]
    assert [j["id"] for j in await _claim(client, tasks=["add"], limit=10)] == [add.id]


async def test_long_poll_claim_wakes_when_a_job_is_enqueued(
    client: httpx.AsyncClient, queue: hq.Queue
) -> None:
    got: list[list[dict[str, Any]]] = []

    async def poll() -> None:
        got.append(await _claim(client, wait=20))

    with anyio.fail_after(5):  # well before the 20 s the poll may wait
        async with anyio.create_task_group() as tg:
            tg.start_soon(poll)
            await anyio.sleep(0.2)
            assert got == []  # it is waiting
            job = await queue.enqueue("add", args=[2, 2])
    assert [j["id"] for j in got[0]] == [job.id]


async def test_long_poll_answers_empty_when_nothing_comes(client: httpx.AsyncClient) -> None:
    with anyio.fail_after(5):
        assert await _claim(client, wait=0.2) == []


async def test_listen_answers_when_the_event_log_moves(
    client: httpx.AsyncClient, queue: hq.Queue
) -> None:
    first = (await client.post(f"{W}/listen", json={})).json()
    assert first["changed"] is False
    answers: list[dict[str, Any]] = []

    async def listen() -> None:
        response = await client.post(f"{W}/listen", json={"after": first["event_id"], "wait": 20})
        answers.append(response.json())

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(listen)
            await anyio.sleep(0.2)
            assert answers == []
            await queue.enqueue("add", args=[1, 1])
    assert answers[0]["changed"] is True and answers[0]["event_id"] > first["event_id"]


async def test_progress_and_register(
    client: httpx.AsyncClient, queue: hq.Queue, clock: FakeClock
) -> None:
    job = await queue.enqueue("add", args=[1, 2])
    [claimed] = await _claim(client)
    token = claimed["token"]
    ok = await client.post(
        f"{W}/progress", json={"id": job.id, "token": token, "progress": {"done": 1}}
    )
    assert ok.json() == {"recorded": True}
    stale = await client.post(f"{W}/progress", json={"id": job.id, "token": token + 1})
    assert stale.json() == {"recorded": False}
    assert (await queue.get(job.id)).progress == {"done": 1}
    # a worker's liveness is counted on the server's clock, whatever the worker says
    info = {
        "name": "node-1",
        "host": "h",
        "pid": 1,
        "tasks": ["add"],
        "seen_at": 0.0,
        "expires_at": 30.0,
    }
    assert (await client.post(f"{W}/register", json=info)).status_code == 204
    [live] = await queue.workers()
    assert live.name == "node-1" and live.expires_at == pytest.approx(clock.now() + 30)
    assert (await client.post(f"{W}/unregister", json={"name": "node-1"})).status_code == 204
    assert await queue.workers() == []
    got = await client.get(f"{W}/jobs/{job.id}")
    assert got.status_code == 200 and got.json()["id"] == job.id
    missing = await client.get(f"{W}/jobs/nope")
    assert missing.status_code == 404 and missing.json()["extra"] == {"job_id": "nope"}


async def test_roles(client: httpx.AsyncClient, queue: hq.Queue) -> None:
    """A worker key may use the worker protocol and nothing else; operators may too;
    a viewer may not claim; no key is 401."""
    await queue.enqueue("add", args=[1, 2])
    claim = {"worker": "w", "limit": 1}
    client.headers.pop("Authorization")
    assert (await client.post(f"{W}/claim", json=claim)).status_code == 401
    viewer = await client.post(f"{W}/claim", json=claim, headers=_auth("view-key"))
    assert viewer.status_code == 403 and "worker role" in viewer.json()["detail"]
    worker = _auth("work-key")
    assert (await client.get("/api/v1/jobs", headers=worker)).status_code == 403
    submit = await client.post("/api/v1/jobs", json={"task": "add", "args": [1, 2]}, headers=worker)
    assert submit.status_code == 403
    assert (await client.get("/api/v1/storage/counts", headers=worker)).status_code == 403
    assert (await client.get("/api/v1/storage/info", headers=worker)).status_code == 200
    [job] = (await client.post(f"{W}/claim", json=claim, headers=worker)).json()["jobs"]
    assert job["task"] == "add"
    await queue.enqueue("add", args=[3, 4])
    operator = await client.post(f"{W}/claim", json=claim, headers=_auth("op-key"))
    assert operator.status_code == 200 and len(operator.json()["jobs"]) == 1


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/claim", {}),
        ("/claim", {"worker": "w", "limit": 0}),
        ("/claim", {"worker": "w", "limit": 1001}),
        ("/claim", {"worker": "w", "lease": 0}),
        ("/claim", {"worker": "w", "lease": 86400}),
        ("/claim", {"worker": "w", "wait": -1}),
        ("/claim", {"worker": "w", "tasks": "add"}),
        ("/extend", {"leases": []}),
        ("/extend", {"leases": [{"id": "x", "token": "one"}]}),
        ("/finish", {"outcomes": [{"id": "x", "token": 1, "status": "exploded"}]}),
        ("/finish", {"outcomes": [{"id": "x", "token": 1}]}),
        ("/finish", []),
        ("/listen", {"after": -1}),
    ],
)
async def test_bad_bodies_are_refused_with_a_json_4xx(
    client: httpx.AsyncClient, queue: hq.Queue, path: str, body: Any
) -> None:
    await queue.enqueue("add", args=[1, 2])
    response = await client.post(W + path, json=body)
    assert response.status_code == 400, response.text
    assert response.json()["status_code"] == 400 and response.json()["detail"]
    assert (await queue.get((await queue.list_jobs()).items[0].id)).status is hq.JobStatus.PENDING


async def test_storage_enqueue_refuses_a_job_that_is_not_new(
    client: httpx.AsyncClient, queue: hq.Queue
) -> None:
    job = hq.Job(id="x1", task="add", status=hq.JobStatus.RUNNING, token=3)
    response = await client.post(
        "/api/v1/storage/enqueue",
        content=msgspec.json.encode({"jobs": [job]}),
        headers={**_auth("op-key"), "Content-Type": "application/json"},
    )
    assert response.status_code == 422 and "not new" in response.json()["detail"]
    assert await queue.storage.get("x1") is None


def _step(workflow: str, name: str, **fields: Any) -> hq.Job:
    return hq.Job(
        id=f"{workflow}-{name}", task="add", step=hq.Step(workflow=workflow, name=name, **fields)
    )


@pytest.mark.parametrize(
    ("record", "jobs"),
    [
        # found by the fuzzer: a cap past 64 bits (a 500 from SQLite), steps without jobs
        (
            hq.WorkflowRecord(id="w", steps={"a": "w-a"}, concurrency=-(2**86)),
            [_step("w", "a")],
        ),
        (hq.WorkflowRecord(id="w", steps={"a": "w-a"}, concurrency=2**63), [_step("w", "a")]),
        (hq.WorkflowRecord(id="w", steps={"a": "w-a"}), [_step("w", "a", concurrency=2**64)]),
        (hq.WorkflowRecord(id="w", steps={"a": "w-a", "b": "w-b"}), []),
        (hq.WorkflowRecord(id="w", steps={"a": "w-a"}), [_step("w", "a"), _step("w", "b")]),
        (hq.WorkflowRecord(id="w", steps={"a": "w-a"}), [_step("other", "a")]),
        (hq.WorkflowRecord(id="w", steps={"a": "w-a"}), [_step("w", "a", waiting=2**70)]),
    ],
)
async def test_storage_workflows_refuses_steps_and_jobs_that_do_not_fit(
    client: httpx.AsyncClient, queue: hq.Queue, record: hq.WorkflowRecord, jobs: list[hq.Job]
) -> None:
    response = await client.post(
        "/api/v1/storage/workflows",
        content=msgspec.json.encode({"workflow": record, "jobs": jobs}),
        headers={**_auth("op-key"), "Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"]
    assert await queue.storage.get_workflow("w") is None
    assert (await queue.list_jobs()).items == []


async def test_a_finish_not_found_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"{W}/finish", json={"outcomes": [{"id": "nope", "token": 1, "status": "completed"}]}
    )
    assert response.status_code == 409 and response.json()["extra"]["refused"] == ["nope"]


# -- fuzzing: whatever a client sends to these routes, never a 5xx ---------------------------

FUZZED = [
    ("POST", "/api/v1/worker/claim"),
    ("POST", "/api/v1/worker/extend"),
    ("POST", "/api/v1/worker/finish"),
    ("POST", "/api/v1/worker/started"),
    ("POST", "/api/v1/worker/progress"),
    ("POST", "/api/v1/worker/register"),
    ("POST", "/api/v1/worker/unregister"),
    ("POST", "/api/v1/worker/rescue"),
    ("POST", "/api/v1/worker/next-run-at"),
    ("POST", "/api/v1/worker/listen"),
    ("GET", "/api/v1/worker/jobs/{job_id}"),
    ("GET", "/api/v1/storage/info"),
    ("POST", "/api/v1/storage/enqueue"),
    ("GET", "/api/v1/storage/jobs"),
    ("GET", "/api/v1/storage/counts"),
    ("GET", "/api/v1/storage/backlog"),
    ("GET", "/api/v1/storage/events"),
    ("GET", "/api/v1/storage/events/last"),
    ("GET", "/api/v1/storage/workers"),
    ("POST", "/api/v1/storage/search"),
    ("POST", "/api/v1/storage/count"),
    ("POST", "/api/v1/storage/error-groups"),
    ("POST", "/api/v1/storage/cancel-matching"),
    ("POST", "/api/v1/storage/retry-matching"),
    ("POST", "/api/v1/storage/discard-matching"),
    ("POST", "/api/v1/storage/workflows"),
    ("GET", "/api/v1/storage/workflows/{workflow_id}"),
    ("POST", "/api/v1/storage/workflows/{workflow_id}/cancel"),
    ("POST", "/api/v1/storage/workflows/{workflow_id}/retry"),
    ("GET", "/api/v1/storage/schedules"),
    ("POST", "/api/v1/storage/schedules"),
    ("POST", "/api/v1/storage/schedules/{name}/fire"),
    ("POST", "/api/v1/storage/schedules/{name}/pause"),
    ("GET", "/api/v1/storage/paused-queues"),
    ("POST", "/api/v1/storage/queues/{name}/pause"),
]


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from server_process import start_server, stop

    running = start_server(tmp_path_factory.mktemp("fuzz-worker"))
    yield running
    stop(running)


@pytest.mark.parametrize(("method", "path"), FUZZED, ids=[f"{m} {p}" for m, p in FUZZED])
def test_no_input_to_the_worker_and_storage_routes_gets_a_server_error(
    fuzz_server: Any, method: str, path: str
) -> None:
    """Valid and invalid bodies and parameters from the OpenAPI document (5 of each per
    route); a long poll's ``wait`` is set to 0 so that the fuzzing does not wait."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis.checks import not_a_server_error
    from schemathesis.generation.modes import GenerationMode

    api = schemathesis.openapi.from_url(f"{fuzz_server.url}/schema/openapi.json")
    operation = api[path][method]
    for mode in GenerationMode:

        @given(case=operation.as_strategy(mode))
        @settings(
            max_examples=5, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def check(case: Any) -> None:
            if isinstance(case.body, dict) and "wait" in case.body:
                case.body["wait"] = 0
            response = case.call(base_url=fuzz_server.url, timeout=10)
            case.validate_response(response, checks=[not_a_server_error])

        try:
            check()
        except Unsatisfiable:  # no input that breaks the schema (no body, a string in the path)
            if mode is GenerationMode.POSITIVE:
                raise
