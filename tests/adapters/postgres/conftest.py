"""PostgreSQL databases for the tests, on the server at 127.0.0.1:5432.

- ``pg_dsn``: a new, empty database for one test (``CREATE DATABASE hq_test_<random>``
  on the server of the ``test`` database, dropped after the test);
- ``pg_module_dsn``: one such database per test module, its ``hq_`` tables emptied
  before each test that asks for it (cheaper than a database per test: the contract
  suite).

Every test that uses them is skipped, with the reason, when no server can be reached.
``HYPERQUEUE_TEST_PG`` overrides the admin DSN. Databases are made and dropped from
synchronous fixtures, each statement on its own short event loop.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator

import pytest

asyncpg = pytest.importorskip("asyncpg", reason="hyperqueue_postgres needs asyncpg")

ADMIN_DSN = os.environ.get("HYPERQUEUE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
_unreachable: list[str] = []  # why the server cannot be reached, once known

_EMPTY = """
DO $$ BEGIN
    IF to_regclass('hq_jobs') IS NOT NULL THEN
        TRUNCATE hq_jobs, hq_job_keys, hq_job_counts, hq_job_events, hq_workers,
            hq_workflows, hq_schedules RESTART IDENTITY;
    END IF;
END $$
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # asyncpg is asyncio-only


def dsn_of(name: str) -> str:
    base, _, _ = ADMIN_DSN.rpartition("/")
    return f"{base}/{name}"


def _run(dsn: str, statement: str) -> None:
    """Run one statement on ``dsn``; skip the test if the server cannot be reached."""
    if _unreachable:
        pytest.skip(_unreachable[0])

    async def run() -> str | None:
        try:
            conn = await asyncpg.connect(dsn, timeout=3)
        except (OSError, TimeoutError, asyncpg.CannotConnectNowError) as exc:
            return f"no PostgreSQL server at {ADMIN_DSN} ({exc})"
        try:
            await conn.execute(statement)
        finally:
            await conn.close()
        return None

    reason = asyncio.run(run())
    if reason is not None:
        _unreachable.append(reason)
        pytest.skip(reason)


def _database() -> Iterator[str]:
    name = f"hq_test_{secrets.token_hex(6)}"
    _run(ADMIN_DSN, f'CREATE DATABASE "{name}"')
    try:
        yield dsn_of(name)
    finally:
        _run(ADMIN_DSN, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_dsn() -> Iterator[str]:
    """The DSN of a new, empty database, dropped after the test."""
    yield from _database()


@pytest.fixture(scope="module")
def _module_database() -> Iterator[str]:
    yield from _database()


@pytest.fixture
def pg_module_dsn(_module_database: str) -> str:
    """The module's database, its hyperqueue tables emptied for this test."""
    _run(_module_database, _EMPTY)
    return _module_database
