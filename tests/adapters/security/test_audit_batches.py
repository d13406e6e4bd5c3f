"""Records of requests written in batches (a sink with ``write_taken``, as SQLite's, or
``write_many``, as PostgreSQL's): none lost, in order, readable as soon as the requests
are answered, kept when the app stops, a failing batch counted and the next ones still
written, and no answer complete before its record is written (so a client that has its
answer knows it is kept)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from anyio import wait_all_tasks_blocked

import hyperqueue as hq
from hyperqueue_litestar import create_app
from hyperqueue_litestar._audit import Audit, AuditPage, AuditRecord, SQLiteAuditSink
from hyperqueue_litestar._auth import Auth
from hyperqueue_litestar._config import ApiKey
from hyperqueue_sqlite import SQLiteStorage

pytestmark = pytest.mark.anyio

OPS = {"X-API-Key": "op-key"}
ADMIN = {"X-API-Key": "admin-key"}
JOB = {"task": "add", "args": [1, 2]}


def build(queue: hq.Queue, keys: dict[str, ApiKey], sink: Any) -> tuple[Any, Audit]:
    auth = Auth(queue, keys=list(keys.values()))
    audit = Audit(queue, sink, guards=[auth.guard])
    app = create_app(
        queue, workers=False, guards=[auth.guard], middleware=[auth.middleware], plugins=[audit]
    )
    return app, audit


async def test_every_request_is_recorded_and_readable_once_answered(
    tmp_path: Path, keys: dict[str, ApiKey], serve: Any
) -> None:
    storage = SQLiteStorage(tmp_path / "jobs.db")
    queue = hq.Queue(storage)

    @queue.task
    async def add(a: int, b: int) -> int:
        return a + b

    app, _ = build(queue, keys, SQLiteAuditSink(storage.path, storage=storage))
    async with serve(app) as client:
        ids: list[str] = []

        async def submit() -> None:
            ids.append((await client.post("/api/v1/jobs", json=JOB, headers=OPS)).json()["id"])

        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(submit)
        page = (await client.get("/api/v1/audit?limit=1000", headers=ADMIN)).json()
        assert sorted(r["resource"] for r in page["items"]) == sorted(f"job:{i}" for i in ids)
        for _ in range(5):  # and these, still waiting for their batch when the app stops
            await client.post("/api/v1/jobs", json=JOB, headers=OPS)
    async with SQLiteAuditSink(storage.path) as sink:
        kept = (await sink.read(limit=1000)).items
    assert len(kept) == 55
    assert [r.seq for r in kept] == list(range(1, 56))
    assert {(r.event, r.actor.id, r.result) for r in kept} == {("job.submit", "ops", "success")}


class _Sink:
    """Takes batches; the first ``fail`` of them raise; with ``gate`` set, every write
    waits for it (``writing`` is set once one does)."""

    def __init__(self, *, fail: int = 0) -> None:
        self.records: list[AuditRecord] = []
        self.fail = fail
        self.gate: anyio.Event | None = None
        self.writing = anyio.Event()

    async def write(self, record: AuditRecord) -> int:
        self.records.append(record)
        return len(self.records)

    async def write_many(self, records: Sequence[AuditRecord]) -> None:
        self.writing.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            self.fail -= 1
            raise OSError("the disk is full")
        self.records.extend(records)

    async def read(self, *, after: int = 0, limit: int = 100) -> AuditPage:
        return AuditPage(items=self.records[after : after + limit])


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


async def test_a_failing_batch_is_counted_and_the_next_ones_are_written(
    queue: hq.Queue, keys: dict[str, ApiKey], serve: Any
) -> None:
    sink = _Sink(fail=1)
    app, audit = build(queue, keys, sink)
    kept = _Kept()
    logging.getLogger("hyperqueue.audit").addHandler(kept)
    try:
        async with serve(app) as client:
            assert (await client.post("/api/v1/jobs", json=JOB, headers=OPS)).status_code == 201
            await audit.flush()
            assert audit.failed == 1 and sink.records == []
            assert (await client.post("/api/v1/jobs", json=JOB, headers=OPS)).status_code == 201
    finally:
        logging.getLogger("hyperqueue.audit").removeHandler(kept)
    assert len(sink.records) == 1
    assert kept.messages == ["audit: writing 1 records failed"]


async def test_a_sink_that_fails_before_taking_its_batch_loses_only_that_batch(
    queue: hq.Queue, keys: dict[str, ApiKey], serve: Any
) -> None:
    class _Taking:
        """Takes its batch as its write runs; the first write fails before it does."""

        def __init__(self) -> None:
            self.records: list[AuditRecord] = []
            self.fail = True

        async def write(self, record: AuditRecord) -> int:
            raise AssertionError("batches only")

        async def write_taken(self, take: Any) -> int:
            if self.fail:
                self.fail = False
                raise OSError("the disk is full")
            taken = take()
            self.records.extend(taken)
            return len(taken)

        async def read(self, *, after: int = 0, limit: int = 100) -> AuditPage:
            return AuditPage(items=self.records[after : after + limit])

    sink = _Taking()
    app, audit = build(queue, keys, sink)
    async with serve(app) as client:
        assert (await client.post("/api/v1/jobs", json=JOB, headers=OPS)).status_code == 201
        assert audit.failed == 1 and sink.records == []
        assert (await client.post("/api/v1/jobs", json=JOB, headers=OPS)).status_code == 201
        assert [r.event for r in sink.records] == ["job.submit"]
    assert audit.failed == 1


async def test_no_answer_completes_before_its_record_is_written(
    queue: hq.Queue, keys: dict[str, ApiKey], serve: Any
) -> None:
    sink = _Sink()
    sink.gate = anyio.Event()
    app, _ = build(queue, keys, sink)
    answered: list[int] = []
    async with serve(app) as client:

        async def submit() -> None:
            answer = await client.post("/api/v1/jobs", json=JOB, headers=OPS)
            answered.append(answer.status_code)

        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(submit)
            try:
                await sink.writing.wait()  # a batch is held at the gate
                await wait_all_tasks_blocked()
                assert answered == []  # the jobs are in, their answers wait for the records
                assert (await queue.stats())["default"].pending == 3
            finally:
                sink.gate.set()
    assert answered == [201] * 3
    assert len(sink.records) == 3


async def test_a_sink_without_batches_is_written_before_the_answer_too(
    queue: hq.Queue, keys: dict[str, ApiKey], serve: Any
) -> None:
    class _One:
        def __init__(self) -> None:
            self.records: list[AuditRecord] = []
            self.gate = anyio.Event()

        async def write(self, record: AuditRecord) -> int:
            await self.gate.wait()
            self.records.append(record)
            return len(self.records)

        async def read(self, *, after: int = 0, limit: int = 100) -> AuditPage:
            return AuditPage(items=self.records[after : after + limit])

    sink = _One()
    app, _ = build(queue, keys, sink)
    ends: list[bytes] = []

    async def watched(scope: Any, receive: Any, send: Any) -> None:
        """The app, noting each answer's last message as it leaves (the test client
        itself only answers once the app returns)."""

        async def spy(message: Any) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body"):
                ends.append(message["body"])
            await send(message)

        await app(scope, receive, spy)

    async with app.lifespan():
        transport = httpx.ASGITransport(app=watched)
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://hq.test") as client,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(partial(client.post, "/api/v1/jobs", json=JOB, headers=OPS))
            try:
                await wait_all_tasks_blocked()
                assert ends == [] and sink.records == []  # the record first
            finally:
                sink.gate.set()
    assert len(ends) == 1
    assert [r.event for r in sink.records] == ["job.submit"]
