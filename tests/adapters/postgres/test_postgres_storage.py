"""PostgresStorage beyond the contract: transactional enqueue, LISTEN/NOTIFY wake-up and
its polling fallback, event ids in commit order, concurrent migration, tenant caps
across storage objects, and the errors of an unreachable database."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import anyio
import asyncpg
import pytest

import hyperqueue as hq
from hyperqueue import Job, JobStatus
from hyperqueue._ids import IdFactory
from hyperqueue.abc import WorkListener
from hyperqueue_postgres import SCHEMA_VERSION, PostgresStorage, _sql

pytestmark = pytest.mark.anyio
T0 = 1_700_000_000.0
_ids = IdFactory()


def make(task: str = "t", **fields: object) -> Job:
    return Job(id=_ids(T0), task=task, created_at=T0, run_at=T0, **fields)  # type: ignore[arg-type]


@pytest.fixture
async def storage(pg_dsn: str) -> AsyncIterator[PostgresStorage]:
    storage = PostgresStorage(pg_dsn, poll_interval=30)  # no poll: only a notify wakes
    await storage.open()
    yield storage
    await storage.aclose()


@pytest.fixture
async def other(pg_dsn: str, storage: PostgresStorage) -> AsyncIterator[PostgresStorage]:
    """A second storage object on the same database: another process, as far as the
    database can tell (its own pool and connections)."""
    other = PostgresStorage(pg_dsn, poll_interval=30)
    await other.open()
    yield other
    await other.aclose()


# -- transactional enqueue ---------------------------------------------------------------


async def test_enqueue_on_the_callers_connection_exists_exactly_when_it_commits(
    storage: PostgresStorage, pg_dsn: str
) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        kept, dropped = make(), make()
        async with conn.transaction():
            await conn.execute("CREATE TABLE orders (id int)")
            await storage.enqueue([kept], now=T0, key_ttl=None, connection=conn)
            assert await storage.get(kept.id) is None  # not committed: nobody sees it
        assert await storage.get(kept.id) == kept
        before = await storage.last_event_id()

        tx = conn.transaction()
        await tx.start()
        await conn.execute("INSERT INTO orders VALUES (1)")
        await storage.enqueue([dropped], now=T0, key_ttl=None, connection=conn)
        await tx.rollback()
        assert await storage.get(dropped.id) is None
        assert await conn.fetchval("SELECT count(*) FROM orders") == 0
        assert await storage.read_events(after=before) == []  # its event went with it
        assert (await storage.counts())["default"][JobStatus.PENDING] == 1
        [claimed] = await storage.claim(None, limit=10, now=T0, lease=30, worker="w")
        assert claimed.id == kept.id
    finally:
        await conn.close()


# -- wake-up ---------------------------------------------------------------------------


async def _wait_and_time(listener: WorkListener, woke: list[float]) -> None:
    await listener.wait()
    woke.append(time.perf_counter())


async def test_notify_wakes_an_idle_listener_of_another_storage_within_milliseconds(
    storage: PostgresStorage, other: PostgresStorage
) -> None:
    async with storage.listen() as listener:
        listener.clear()
        for _ in range(3):
            woke: list[float] = []
            async with anyio.create_task_group() as tg:
                tg.start_soon(_wait_and_time, listener, woke)
                await anyio.sleep(0.05)  # idle, waiting (its poll is 30 s away)
                assert not woke
                sent = time.perf_counter()
                await other.enqueue([make()], now=T0, key_ttl=None)
            latency = woke[0] - sent
            assert latency < 0.1, f"woken {latency * 1000:.1f} ms after the enqueue returned"
            listener.clear()


async def test_a_lost_notification_is_covered_by_the_poll(pg_dsn: str) -> None:
    """A listener whose LISTEN connection died (or a storage with ``notify=False``,
    for PgBouncer in transaction mode) still returns every ``poll_interval``."""
    admin = await asyncpg.connect(pg_dsn)
    poller = PostgresStorage(pg_dsn, poll_interval=0.05)
    quiet = PostgresStorage(pg_dsn, notify=False, poll_interval=0.05)
    producer = PostgresStorage(pg_dsn, notify=False)  # sends no notification at all
    try:
        for s in (poller, quiet, producer):
            await s.open()
        async with poller.listen() as a, quiet.listen() as b:
            assert quiet._listen_conn is None
            pid = poller._listen_conn.get_server_pid()
            await admin.execute("SELECT pg_terminate_backend($1)", pid)
            a.clear()
            b.clear()
            await producer.enqueue([make()], now=T0, key_ttl=None)
            with anyio.fail_after(2):
                await a.wait()
                await b.wait()
            # the lost LISTEN connection is opened again by an idle wait
            with anyio.fail_after(5):
                while not poller._is_listening() or poller._listen_conn.get_server_pid() == pid:
                    a.clear()
                    await a.wait()
    finally:
        for s in (poller, quiet, producer):
            await s.aclose()
        await admin.close()


async def test_a_worker_on_another_storage_runs_a_job_at_once(
    storage: PostgresStorage, other: PostgresStorage
) -> None:
    consumer = hq.Queue(storage)
    producer = hq.Queue(other)
    for queue in (consumer, producer):

        @queue.task
        async def add(a: int, b: int) -> int:
            return a + b

    async with consumer, producer, consumer.worker(concurrency=2):
        await anyio.sleep(0.05)  # the worker is idle
        job = await producer.tasks["add"].enqueue(1, 2)
        with anyio.fail_after(5):  # well under its 30 s poll: the notify woke it
            while (done := await other.get(job.id)) is None or not done.status.is_final:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        assert done.status is JobStatus.COMPLETED and done.result == 3


async def test_the_pool_opens_with_the_storage_and_knows_its_types(pg_dsn: str) -> None:
    """A worker's first jobs must not wait for connections to open, or for asyncpg to
    look up the array types of the claim and finish on each new connection (10-20 ms
    each: once the bulk of enqueue-to-start's p99)."""
    storage = PostgresStorage(pg_dsn)
    await storage.open()
    try:
        conn = await asyncpg.connect(pg_dsn)
        try:
            rows = await conn.fetch(
                "SELECT query FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name = 'hyperqueue'"
            )
        finally:
            await conn.close()
    finally:
        await storage.aclose()
    assert len(rows) == storage.min_size == 4
    # the last query of a warmed connection is asyncpg's type look-up (the first
    # connection then ran the migration and the pool's reset)
    warmed = [r for r in rows if "typeinfo_tree" in r["query"]]
    assert len(warmed) >= storage.min_size - 1  # one ran the migration after its warm-up


async def test_a_burst_of_enqueues_notifies_a_few_times_and_wakes_every_job(
    storage: PostgresStorage, other: PostgresStorage, pg_dsn: str
) -> None:
    """Notifying transactions commit one at a time in PostgreSQL, so one storage lets
    one of them in flight carry the NOTIFY and sends one more after the rest: far
    fewer notifications than transactions, and none of the jobs waits for a poll."""
    heard: list[float] = []
    spy = await asyncpg.connect(pg_dsn)
    await spy.add_listener("hq_work", lambda *_: heard.append(time.perf_counter()))
    consumer, producer = hq.Queue(storage), hq.Queue(other)
    for queue in (consumer, producer):

        @queue.task
        async def noop(i: int) -> int:
            return i

    try:
        async with consumer, producer, consumer.worker(concurrency=4):
            await anyio.sleep(0.05)  # the worker is idle; its poll is 30 s away
            for burst in range(3):
                heard.clear()
                async with anyio.create_task_group() as tg:
                    for i in range(40):
                        tg.start_soon(producer.tasks["noop"].enqueue, i)
                last_commit = time.perf_counter()
                done = 40 * (burst + 1)
                with anyio.fail_after(5):  # every job runs: no poll was needed
                    while (await other.counts())["default"][JobStatus.COMPLETED] < done:  # noqa: ASYNC110
                        await anyio.sleep(0.01)
                assert 1 <= len(heard) <= 20, len(heard)
                assert max(heard) >= last_commit - 0.001  # one came after the last commit
    finally:
        await spy.close()


# -- the event log ---------------------------------------------------------------------


async def test_an_event_committed_later_is_not_skipped_by_a_reader(
    storage: PostgresStorage, other: PostgresStorage, pg_dsn: str
) -> None:
    """Ids follow commit order: a transaction that wrote first but commits last still
    gets an id after everything a reader has already seen."""
    start = await storage.last_event_id()
    slow, fast = make(), make()
    conn = await asyncpg.connect(pg_dsn)
    try:
        tx = conn.transaction()
        await tx.start()
        await storage.enqueue([slow], now=T0, key_ttl=None, connection=conn)  # written first
        await other.enqueue([fast], now=T0, key_ttl=None)  # committed first
        seen = await storage.read_events(after=start)
        assert [e.job.id for e in seen] == [fast.id]
        await tx.commit()
    finally:
        await conn.close()
    later = await storage.read_events(after=seen[-1].id)
    assert [e.job.id for e in later] == [slow.id]
    assert later[0].id > seen[-1].id
    assert await other.last_event_id() == later[0].id


async def test_a_relay_resuming_after_the_newest_id_misses_no_later_commit(
    storage: PostgresStorage, other: PostgresStorage, pg_dsn: str
) -> None:
    """A queue's relay reads only other origins' entries and, after a short read, resumes
    after the newest id it took first (past its own entries): an entry of another
    process that commits after that still gets a larger id, so it is read next."""
    start = await storage.last_event_id()
    slow, mine = make(), make()
    conn = await asyncpg.connect(pg_dsn)
    try:
        tx = conn.transaction()
        await tx.start()
        await other.enqueue([slow], now=T0, key_ttl=None, connection=conn)  # written first
        await storage.enqueue([mine], now=T0, key_ttl=None)  # its own, committed first
        newest = await storage.last_event_id()
        assert newest > start
        assert await storage.read_events(after=start, skip_origin=storage.origin) == []
        await tx.commit()
    finally:
        await conn.close()
    [late] = await storage.read_events(after=newest, skip_origin=storage.origin)
    assert late.job.id == slow.id and late.origin == other.origin and late.id > newest


# -- many processes on one database ------------------------------------------------------


async def test_concurrent_opens_migrate_once(pg_dsn: str) -> None:
    storages = [PostgresStorage(pg_dsn) for _ in range(4)]
    async with anyio.create_task_group() as tg:
        for s in storages:
            tg.start_soon(s.open)
    try:
        conn = await asyncpg.connect(pg_dsn)
        try:
            assert await conn.fetch("SELECT version FROM hq_schema") == [(SCHEMA_VERSION,)]
        finally:
            await conn.close()
        await storages[0].open()  # twice is harmless
    finally:
        for s in storages:
            await s.aclose()


async def test_tenant_cap_holds_across_storage_objects(
    storage: PostgresStorage, other: PostgresStorage
) -> None:
    await storage.enqueue([make(tenant="acme") for _ in range(20)], now=T0, key_ttl=None)
    got: list[Job] = []

    async def claimer(s: PostgresStorage, name: str) -> None:
        got.extend(
            await s.claim(None, limit=5, now=T0, lease=30, worker=name, max_running={"acme": 3})
        )

    async with anyio.create_task_group() as tg:
        for n in range(8):
            tg.start_soon(claimer, storage if n % 2 else other, f"w{n}")
    assert len(got) == 3
    assert (await storage.counts())["default"][JobStatus.RUNNING] == 3


async def test_newer_schema_is_refused(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute("CREATE TABLE hq_schema (version integer NOT NULL)")
        await conn.execute("INSERT INTO hq_schema VALUES (99)")
    finally:
        await conn.close()
    with pytest.raises(hq.StorageError, match="newer"):
        await PostgresStorage(pg_dsn).open()


# -- errors ------------------------------------------------------------------------------


async def test_an_unreachable_server_is_a_clear_storage_error(anyio_backend: str) -> None:
    storage = PostgresStorage("postgresql://hq:secret@127.0.0.1:1/jobs", connect_timeout=3)
    with pytest.raises(hq.StorageError) as caught:
        await storage.open()
    message = str(caught.value)
    assert "127.0.0.1:1/jobs" in message and "cannot connect" in message
    assert "secret" not in message
    with pytest.raises(hq.StorageError, match="not open"):
        await storage.get("x")


async def test_a_missing_database_is_named(pg_dsn: str) -> None:
    dsn = pg_dsn.rpartition("/")[0] + "/hq_no_such_database"
    with pytest.raises(hq.StorageError, match="does not exist"):
        await PostgresStorage(dsn).open()


# -- counts ------------------------------------------------------------------------------


async def test_counts_are_exact_before_and_after_folding(storage: PostgresStorage) -> None:
    """Counts are per-transaction deltas summed on read; folding them changes nothing."""
    for n in range(30):
        await storage.enqueue(
            [make(f"t{n % 3}", queue=f"q{n % 2}") for _ in range(3)], now=T0, key_ttl=None
        )
    claimed = await storage.claim(None, limit=40, now=T0, lease=30, worker="w")
    outcomes = [
        hq.Outcome(id=j.id, token=j.token, status=JobStatus.COMPLETED) for j in claimed[:25]
    ]
    await storage.finish(outcomes, now=T0)
    await storage.cancel(claimed[30].id, now=T0)

    async def truth(conn: asyncpg.Connection) -> dict[str, dict[JobStatus, int]]:
        rows = await conn.fetch("SELECT queue, status, count(*) FROM hq_jobs GROUP BY 1, 2")
        out: dict[str, dict[JobStatus, int]] = {}
        for queue, status, n in rows:
            out.setdefault(queue, dict.fromkeys(JobStatus, 0))[JobStatus(status)] = n
        return out

    expected = await storage._run("test", truth)
    assert await storage.counts() == expected
    await storage._run("test", _sql.fold_counts, 0)
    assert await storage._run("test", _rows_of_counts) <= 2 * 3 * 5
    assert await storage.counts() == expected


async def _rows_of_counts(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM hq_job_counts"))


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_trio_is_refused_with_a_clear_error(anyio_backend: str) -> None:
    with pytest.raises(RuntimeError, match="asyncio only"):
        await PostgresStorage("postgresql://postgres@127.0.0.1:5432/test").open()


async def test_a_value_jsonb_cannot_hold_is_a_storage_error(storage: PostgresStorage) -> None:
    with pytest.raises(hq.StorageError, match="enqueuing failed"):
        await storage.enqueue([make(args=("nul \x00 inside",))], now=T0, key_ttl=None)
    assert (await storage.list()).items == []


# -- transactional enqueue from the queue's API -------------------------------------------


async def test_enqueue_in_commits_with_the_application_and_the_job_runs(pg_dsn: str) -> None:
    from hyperqueue_postgres import enqueue_in, enqueue_many_in

    queue = hq.Queue(PostgresStorage(pg_dsn, poll_interval=0.05), tenant_quotas={"acme": 2})
    ran: list[int] = []

    @queue.task
    async def receipt(order: int) -> int:
        ran.append(order)
        return order * 10

    conn = await asyncpg.connect(pg_dsn)
    try:
        async with queue:
            await conn.execute("CREATE TABLE orders (id int)")
            async with conn.transaction():
                await conn.execute("INSERT INTO orders VALUES (7)")
                job = await enqueue_in(conn, queue, receipt.options(key="o7", tenant="acme"), 7)
                assert await queue.storage.get(job.id) is None  # not committed: unseen
                again = await enqueue_in(conn, queue, receipt.options(key="o7", tenant="acme"), 7)
                [by_name] = await enqueue_many_in(
                    conn, queue, [hq.Submission(task="receipt", args=(8,), delay=0.01)]
                )
            assert again.id == job.id  # the key, seen inside the same transaction
            assert by_name.created and by_name.job.run_at > job.run_at
            async with queue.worker(concurrency=2):
                done = await queue.wait(job.id, timeout=10)
                await queue.wait(by_name.job.id, timeout=10)
            assert done.status is JobStatus.COMPLETED and done.result == 70
            assert sorted(ran) == [7, 8]
            assert done.tenant == "acme" and done.key == "o7"
    finally:
        await conn.close()


async def test_enqueue_in_rolled_back_leaves_nothing(pg_dsn: str) -> None:
    from hyperqueue_postgres import enqueue_in

    queue = hq.Queue(PostgresStorage(pg_dsn))

    @queue.task
    async def receipt(order: int) -> None: ...

    conn = await asyncpg.connect(pg_dsn)
    try:
        async with queue:
            made: list[Job] = []

            async def place_order() -> None:
                async with conn.transaction():
                    made.append(await enqueue_in(conn, queue, receipt, 1))
                    raise RuntimeError("the order failed")

            with pytest.raises(RuntimeError):
                await place_order()
            [job] = made
            assert await queue.storage.get(job.id) is None
            assert (await queue.storage.counts()) in ({}, {"default": dict.fromkeys(JobStatus, 0)})
            assert await queue.storage.last_event_id() == 0
            with pytest.raises(hq.ArgumentError):  # checked before anything is stored
                await enqueue_in(conn, queue, receipt, "x")  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="PostgresStorage"):
                await enqueue_in(conn, hq.Queue(), receipt, 1)
    finally:
        await conn.close()


async def test_estimates_read_no_job_rows_and_come_close(
    storage: PostgresStorage, pg_dsn: str
) -> None:
    """On a huge table a count by tenant would scan it; the estimate asks the planner
    (close once the table is analyzed), and stays exact where the deltas answer."""
    jobs = [make(tenant="big") for _ in range(3000)] + [make(tenant="small") for _ in range(300)]
    await storage.enqueue(jobs, now=T0, key_ttl=None)
    await storage.claim(None, limit=100, now=T0, lease=30, worker="w")
    conn = await asyncpg.connect(pg_dsn)
    try:  # autovacuum's ANALYZE, done now
        await conn.execute("ANALYZE hq_jobs")
    finally:
        await conn.close()
    pending = hq.JobFilter(status=(JobStatus.PENDING,))
    assert await storage.estimate(pending) == await storage.count(pending) == 3200
    big = await storage.estimate(hq.JobFilter(tenant="big"))
    small = await storage.estimate(hq.JobFilter(tenant="small"))
    assert 2400 <= big <= 3600 and 150 <= small <= 450, (big, small)
    assert await storage.estimate(hq.JobFilter(tenant="nobody")) <= 10
