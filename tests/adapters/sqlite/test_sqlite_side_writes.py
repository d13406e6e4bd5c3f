"""Rows of a side table written with the storage's transactions (``execute_write_many``):
taken as the transaction runs, so rows added while the one before is in flight join it,
and written once even when the batch runs again without a failed write."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from hyperqueue import StorageError
from hyperqueue_sqlite import SQLiteStorage

pytestmark = pytest.mark.anyio

SLOW = (  # a statement that holds the writer for a while (a few hundred ms)
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000000)"
    " SELECT count(*) FROM n"
)


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[SQLiteStorage]:
    storage = SQLiteStorage(tmp_path / "jobs.db")
    await storage.open()
    try:
        await storage.execute_write("CREATE TABLE side (n INTEGER NOT NULL)")
        yield storage
    finally:
        await storage.aclose()


async def side_rows(storage: SQLiteStorage) -> list[int]:
    return [n for (n,) in await storage.execute_write("SELECT n FROM side ORDER BY rowid")]


async def test_rows_added_while_the_transaction_before_runs_join_the_next(
    storage: SQLiteStorage,
) -> None:
    rows: deque[tuple[int]] = deque([(1,)])
    takes: list[list[int]] = []

    def take() -> list[tuple[int]]:
        taken = [rows.popleft() for _ in range(len(rows))]
        takes.append([n for (n,) in taken])
        return taken

    written: list[int] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(storage.execute_write, SLOW)  # in flight: the writer is busy
        await wait_all_tasks_blocked()

        async def write() -> None:
            written.append(await storage.execute_write_many("INSERT INTO side VALUES (?)", take))

        tg.start_soon(write)
        await wait_all_tasks_blocked()  # our write waits for the transaction in flight
        rows.extend([(2,), (3,)])  # these come in meanwhile
    assert takes == [[1, 2, 3]]  # taken once, as its transaction ran
    assert written == [3]
    assert await side_rows(storage) == [1, 2, 3]


async def test_a_batch_run_again_without_a_failed_write_keeps_the_taken_rows(
    storage: SQLiteStorage,
) -> None:
    rows: deque[tuple[int]] = deque([(1,), (2,)])
    calls = 0

    def take() -> list[tuple[int]]:
        nonlocal calls
        calls += 1
        return [rows.popleft() for _ in range(len(rows))]

    refused: list[BaseException] = []

    async def bad() -> None:
        try:
            await storage.execute_write("INSERT INTO no_such_table VALUES (1)")
        except StorageError as exc:
            refused.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(storage.execute_write, SLOW)
        await wait_all_tasks_blocked()
        # one batch: the taken rows first, then a write that fails, so the batch is
        # rolled back and runs again without it
        tg.start_soon(storage.execute_write_many, "INSERT INTO side VALUES (?)", take)
        await wait_all_tasks_blocked()
        tg.start_soon(bad)
    assert len(refused) == 1
    assert calls == 1
    assert await side_rows(storage) == [1, 2]
