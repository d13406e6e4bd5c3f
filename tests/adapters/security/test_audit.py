"""Audit records for mutations and security events; suspicious bursts; SQLite sink."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import hyperqueue as hq
from hyperqueue.testing import FakeClock
from hyperqueue_litestar import create_app
from hyperqueue_litestar._audit import Audit, AuditRecord, MemoryAuditSink, SQLiteAuditSink
from hyperqueue_litestar._auth import Auth
from hyperqueue_litestar._config import ApiKey, RateLimits
from hyperqueue_litestar._limits import RateLimitMiddleware
from hyperqueue_litestar._security import Actor, SuspiciousActivity
from hyperqueue_sqlite import SQLiteStorage

pytestmark = pytest.mark.anyio

OPS = {"X-API-Key": "op-key"}
ADMIN = {"X-API-Key": "admin-key"}


def build(queue: hq.Queue, keys: dict[str, ApiKey], sink: Any, **audit: Any) -> Any:
    auth = Auth(queue, keys=list(keys.values()))
    limits = RateLimitMiddleware(
        queue, RateLimits(default="100/minute", routes={"POST /api/v1/jobs": "3/minute"})
    )
    return create_app(
        queue,
        workers=False,
        guards=[auth.guard],
        middleware=[auth.middleware, limits],
        plugins=[Audit(queue, sink, guards=[auth.guard], **audit)],
    )


async def test_every_mutation_is_recorded(
    queue: hq.Queue, keys: dict[str, ApiKey], serve: Any, clock: FakeClock
) -> None:
    sink = MemoryAuditSink()
    async with serve(build(queue, keys, sink)) as client:
        job = (
            await client.post("/api/v1/jobs", json={"task": "add", "args": [1, 2]}, headers=OPS)
        ).json()
        await client.post(
            "/api/v1/jobs/batch", json={"jobs": [{"task": "add", "args": [3, 4]}]}, headers=OPS
        )
        await client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=OPS)
        await client.post(f"/api/v1/jobs/{job['id']}/retry", headers=OPS)
        await client.post(f"/api/v1/jobs/{job['id']}/retry", headers=OPS)  # 409: not cancelled now
        await client.get("/api/v1/jobs", headers=OPS)  # a read: not audited
    records = sink.records
    assert [(r.event, r.action, r.result) for r in records] == [
        ("job.submit", "submit", "success"),
        ("job.batch", "batch", "success"),
        ("job.cancel", "cancel", "success"),
        ("job.retry", "retry", "success"),
        ("job.retry", "retry", "error 409"),
    ]
    assert records[0].resource == f"job:{job['id']}"
    assert records[0].actor == Actor(type="key", id="ops", ip="127.0.0.7")
    assert records[0].at == clock.now()
    assert records[1].metadata["created"] == 1 and len(records[1].metadata["ids"]) == 1
    assert records[2].resource == f"job:{job['id']}"
    assert [r.seq for r in records] == [1, 2, 3, 4, 5]


async def test_workflow_and_schedule_changes_are_recorded_as_such(
    queue: hq.Queue, keys: dict[str, ApiKey], serve: Any
) -> None:
    sink = MemoryAuditSink()
    async with serve(build(queue, keys, sink)) as client:
        body = {"steps": [{"task": "add", "args": [1, 2]}]}
        run = (await client.post("/api/v1/workflows", json=body, headers=OPS)).json()
        await client.post(f"/api/v1/workflows/{run['id']}/cancel", headers=OPS)
        await client.post(f"/api/v1/workflows/{run['id']}/retry", headers=OPS)
        await client.post("/api/v1/schedules/nightly/pause", headers=OPS)  # 404: unknown
    assert [(r.event, r.resource, r.result) for r in sink.records] == [
        ("workflow.submit", f"workflow:{run['id']}", "success"),
        ("workflow.cancel", f"workflow:{run['id']}", "success"),
        ("workflow.retry", f"workflow:{run['id']}", "success"),
        ("schedule.pause", "schedule:nightly", "error 404"),
    ]


async def test_security_events_are_recorded(
    queue: hq.Queue, keys: dict[str, ApiKey], serve: Any
) -> None:
    sink = MemoryAuditSink()
    async with serve(build(queue, keys, sink)) as client:
        await client.get("/api/v1/jobs")  # 401
        await client.post(
            "/api/v1/jobs", json={"task": "add", "args": [1, 2]}, headers={"X-API-Key": "view-key"}
        )  # 403
        for _ in range(4):  # the fourth is over 3/minute
            await client.post("/api/v1/jobs", json={"task": "add", "args": [1, 2]}, headers=OPS)
    events = [r.event for r in sink.records]
    assert events.count("security.auth_failed") == 1
    assert events.count("security.forbidden") == 1
    assert events.count("security.rate_limited") == 1
    # a refused mutation is one record, its security event: not also a job.submit
    assert [r.result for r in sink.records if r.event == "job.submit"] == ["success"] * 3
    denied = next(r for r in sink.records if r.event == "security.forbidden")
    assert denied.actor.id == "watcher" and denied.resource == "/api/v1/jobs"
    assert (denied.action, denied.result) == ("POST", "refused")


async def test_a_burst_from_one_client_is_flagged_once(
    queue: hq.Queue, keys: dict[str, ApiKey], serve: Any, clock: FakeClock
) -> None:
    sink = MemoryAuditSink()
    flagged: list[SuspiciousActivity] = []
    queue.events.subscribe(flagged.append, SuspiciousActivity)
    async with serve(build(queue, keys, sink, burst=5, window=60.0)) as client:
        for _ in range(4):
            await client.get("/api/v1/jobs", headers={"X-API-Key": "guess"})
            await clock.advance(20)  # spread over 80 s: never 5 within 60 s
        assert flagged == []
        for _ in range(5):
            await client.get("/api/v1/jobs", headers={"X-API-Key": "guess"})
        await clock.advance(0)
    assert len(flagged) == 1
    assert flagged[0].client == "127.0.0.7" and flagged[0].count == 5
    assert flagged[0].kinds == {"security.auth_failed": 5}
    suspicious = [r for r in sink.records if r.event == "security.suspicious"]
    assert len(suspicious) == 1 and suspicious[0].result == "flagged"


async def test_audit_endpoint_is_admin_only_and_paginated(
    queue: hq.Queue, keys: dict[str, ApiKey], serve: Any
) -> None:
    sink = MemoryAuditSink()
    async with serve(build(queue, keys, sink)) as client:
        for i in range(3):
            await client.post("/api/v1/jobs", json={"task": "add", "args": [i, i]}, headers=OPS)
        assert (await client.get("/api/v1/audit", headers=OPS)).status_code == 403
        assert (await client.get("/api/v1/audit")).status_code == 401
        first = (await client.get("/api/v1/audit", params={"limit": 2}, headers=ADMIN)).json()
        assert [r["event"] for r in first["items"]] == ["job.submit", "job.submit"]
        rest = (
            await client.get("/api/v1/audit", params={"after": first["next_after"]}, headers=ADMIN)
        ).json()
    assert [r["seq"] for r in rest["items"]] == [3]
    assert rest["next_after"] is None


async def test_sqlite_sink_persists_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    storage = SQLiteStorage(path)
    await storage.open()  # the job database exists, audit_log included
    await storage.aclose()
    record = AuditRecord(
        at=1.5,
        event="job.submit",
        actor=Actor(type="key", id="ops", ip="127.0.0.1", tenant="acme"),
        resource="job:1",
        action="submit",
        result="success",
        metadata={"status": 201},
    )
    async with SQLiteAuditSink(path) as sink:
        assert await sink.write(record) == 1
        assert await sink.write(record) == 2
    async with SQLiteAuditSink(path) as sink:
        page = await sink.read(limit=1)
        assert page.items == [msgspec_replace(record, seq=1)]
        assert page.next_after == 1
        rest = await sink.read(after=1)
        assert [r.seq for r in rest.items] == [2] and rest.next_after is None


async def test_sqlite_sink_on_its_own_connection_writes_a_taken_batch_in_order(
    tmp_path: Path,
) -> None:
    path = tmp_path / "jobs.db"
    storage = SQLiteStorage(path)
    await storage.open()
    await storage.aclose()
    records = [
        AuditRecord(
            at=float(n), event="job.submit", actor=Actor(type="key", id="ops"),
            resource=f"job:{n}", action="submit", result="success",
        )
        for n in range(700)
    ]  # fmt: skip
    async with SQLiteAuditSink(path) as sink:
        assert await sink.write_taken(lambda: records) == 700
        page = await sink.read(limit=1000)
    assert [r.resource for r in page.items] == [f"job:{n}" for n in range(700)]
    assert [r.seq for r in page.items] == list(range(1, 701))


def msgspec_replace(record: AuditRecord, **changes: Any) -> AuditRecord:
    import msgspec

    return msgspec.structs.replace(record, **changes)


async def test_concurrent_records_share_transactions_and_each_is_committed(
    tmp_path: Path,
) -> None:
    """A burst of requests writes its audit records by group commit: every write returns
    its own sequence number once its row is in the file."""
    import anyio

    path = tmp_path / "audit.db"
    record = AuditRecord(
        at=1.0, event="job.submit", actor=Actor(type="key", id="ops"), resource="job:x",
        action="POST /api/v1/jobs", result="success", metadata={"status": 201},
    )  # fmt: skip
    seqs: list[int] = []
    async with SQLiteAuditSink(path) as sink:

        async def write(n: int) -> None:
            seqs.append(await sink.write(msgspec_replace(record, resource=f"job:{n}")))

        async with anyio.create_task_group() as tg:
            for n in range(200):
                tg.start_soon(write, n)
    assert sorted(seqs) == list(range(1, 201))
    async with SQLiteAuditSink(path) as sink:
        page = await sink.read(limit=500)
    assert sorted(r.resource for r in page.items) == sorted(f"job:{n}" for n in range(200))


async def test_a_failing_write_in_a_shared_transaction_fails_alone(tmp_path: Path) -> None:
    import anyio

    from hyperqueue_sqlite import ThreadConnection

    db = ThreadConnection(tmp_path / "t.db", what="test table")
    await db.open()
    try:
        await db.query("creating", "CREATE TABLE t (n INTEGER UNIQUE)")
        outcomes: dict[int, object] = {}

        async def insert(n: int) -> None:
            try:
                outcomes[n] = await db.write("inserting", "INSERT INTO t VALUES (?)", (n % 5,))
            except Exception as exc:
                outcomes[n] = type(exc).__name__

        async with anyio.create_task_group() as tg:
            for n in range(10):
                tg.start_soon(insert, n)
        rows = await db.query("reading", "SELECT n FROM t ORDER BY n")
    finally:
        await db.aclose()
    assert [row[0] for row in rows] == [0, 1, 2, 3, 4]
    assert sum(1 for v in outcomes.values() if v == []) == 5, outcomes


async def test_records_go_through_the_storages_writer_with_the_jobs(tmp_path: Path) -> None:
    """On the server's own SQLite file the sink writes through the storage's group
    commit: a burst of records and enqueues shares its transactions, and every record
    and job is in the file."""
    import anyio

    storage = SQLiteStorage(tmp_path / "jobs.db")
    queue = hq.Queue(storage)

    @queue.task
    async def noop() -> None:
        return None

    record = AuditRecord(
        at=1.0, event="job.submit", actor=Actor(type="key", id="ops"), resource="job:x",
        action="submit", result="success", metadata={"status": 201},
    )  # fmt: skip
    with pytest.raises(ValueError, match="not on"):
        SQLiteAuditSink(tmp_path / "other.db", storage=storage)
    async with queue, SQLiteAuditSink(storage.path, storage=storage) as sink:

        async def request(n: int) -> None:
            job = await noop.enqueue()
            await sink.write(msgspec_replace(record, resource=f"job:{job.id}"))

        async with anyio.create_task_group() as tg:
            for n in range(100):
                tg.start_soon(request, n)
        page = await sink.read(limit=500)
        jobs = await queue.list_jobs(limit=500)
    assert sorted(r.resource for r in page.items) == sorted(f"job:{j.id}" for j in jobs.items)
    assert len(page.items) == 100
