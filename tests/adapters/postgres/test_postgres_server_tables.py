"""The server's own tables on PostgreSQL: the audit log and the configuration versions,
shared by every server on the database (``serve --dsn``)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import anyio
import pytest

asyncpg = pytest.importorskip("asyncpg", reason="needs the postgres extra")

from hyperqueue_litestar._audit import AuditRecord  # noqa: E402
from hyperqueue_litestar._audit_postgres import PostgresAuditSink  # noqa: E402
from hyperqueue_litestar._security import Actor  # noqa: E402
from hyperqueue_postgres._config_store import ConfigStore  # noqa: E402

pytestmark = pytest.mark.anyio
SERVER = "postgresql://postgres@127.0.0.1:5432"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def dsn() -> AsyncIterator[str]:
    """A fresh database, dropped after the test."""
    try:
        admin = await asyncpg.connect(f"{SERVER}/test", timeout=3)
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.skip(f"no PostgreSQL at 127.0.0.1:5432 ({exc})")
    name = f"hq_tables_{secrets.token_hex(4)}"
    await admin.execute(f"CREATE DATABASE {name}")
    try:
        yield f"{SERVER}/{name}"
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


def record(n: int) -> AuditRecord:
    return AuditRecord(
        at=1_700_000_000.0 + n,
        event="job.submit",
        actor=Actor(type="key", id="ops", ip="127.0.0.1", tenant="acme"),
        resource=f"job:{n}",
        action="submit",
        result="success",
        metadata={"n": n},
    )


async def test_audit_records_are_kept_in_order_and_paged(dsn: str) -> None:
    async with PostgresAuditSink(dsn) as one, PostgresAuditSink(dsn) as two:
        seqs = [await (one if n % 2 else two).write(record(n)) for n in range(5)]
        assert seqs == sorted(seqs) and len(set(seqs)) == 5
        page = await one.read(limit=3)
        assert [r.resource for r in page.items] == ["job:0", "job:1", "job:2"]
        assert page.items[0].actor == record(0).actor and page.items[0].metadata == {"n": 0}
        rest = await two.read(after=page.next_after or 0)
        assert [r.resource for r in rest.items] == ["job:3", "job:4"]
        assert rest.next_after is None


async def test_a_batch_of_records_is_kept_whole_and_in_order(dsn: str) -> None:
    async with PostgresAuditSink(dsn) as sink:
        await sink.write(record(0))
        await sink.write_many([record(n) for n in range(1, 301)])
        page = await sink.read(limit=1000)
    assert [r.resource for r in page.items] == [f"job:{n}" for n in range(301)]
    assert [r.seq for r in page.items] == sorted(r.seq for r in page.items)
    assert page.items[-1].actor == record(300).actor
    assert page.items[-1].metadata == {"n": 300}


async def test_config_versions_are_shared_and_never_collide(dsn: str) -> None:
    async with ConfigStore(dsn) as one, ConfigStore(dsn) as two:
        assert await one.fetch_latest() is None
        versions: list[int] = []

        async def append(store: ConfigStore, n: int) -> None:
            versions.append(
                await store.append(
                    created_at=float(n), author="me", comment=None, document=f'{{"n": {n}}}'
                )
            )

        async with anyio.create_task_group() as tg:
            for n in range(10):
                tg.start_soon(append, one if n % 2 else two, n)
        assert sorted(versions) == list(range(1, 11))
        latest = await two.fetch_latest()
        assert latest is not None and latest[0] == 10
        assert [row[0] for row in await one.fetch_history(3)] == [10, 9, 8]
        assert await one.fetch(99) is None
