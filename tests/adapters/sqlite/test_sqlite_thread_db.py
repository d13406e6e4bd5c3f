"""A connection's thread: calls run there one at a time and in order, a cancelled call
is withdrawn if it has not begun and waited for if it has, and the thread ends with the
connection."""

from __future__ import annotations

import threading
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from hyperqueue_sqlite import ThreadConnection
from hyperqueue_sqlite._driver import Connection

pytestmark = pytest.mark.anyio

WAIT = 10.0  # seconds: a bound on waits for the connection's thread, never reached


def threads_named(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == name]


async def test_calls_run_in_order_one_at_a_time_off_the_event_loop(tmp_path: Path) -> None:
    db = ThreadConnection(tmp_path / "t.db", what="test table")
    await db.open()
    loop_thread = threading.get_ident()
    submitted: list[int] = []
    ran: list[int] = []
    running = 0

    def record(conn: Connection, i: int) -> int:
        nonlocal running
        running += 1
        assert running == 1, "two calls overlapped"
        assert threading.get_ident() != loop_thread
        conn.execute("SELECT 1")
        ran.append(i)
        running -= 1
        return i * i

    async def call(i: int) -> None:
        submitted.append(i)  # handed to the thread before the first await
        assert await db.call(record, i) == i * i

    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(call, i)
    assert ran == submitted
    await db.aclose()


async def test_errors_come_back_to_the_caller(tmp_path: Path) -> None:
    db = ThreadConnection(tmp_path / "t.db", what="test table")
    await db.open()

    def fail(_conn: Connection) -> None:
        raise LookupError("from the thread")

    with pytest.raises(LookupError, match="from the thread"):
        await db.call(fail)
    assert await db.call(lambda conn: conn.execute("SELECT 7").fetchall()) == [(7,)]
    await db.aclose()


async def test_a_cancelled_call_that_has_not_begun_never_runs(tmp_path: Path) -> None:
    db = ThreadConnection(tmp_path / "t.db", what="test table")
    await db.open()
    holding, release = threading.Event(), threading.Event()
    ran: list[str] = []

    def hold(_conn: Connection) -> None:
        holding.set()
        release.wait(WAIT)

    def later(_conn: Connection) -> None:
        ran.append("later")

    async with anyio.create_task_group() as tg:
        tg.start_soon(db.call, hold)
        assert await anyio.to_thread.run_sync(holding.wait, WAIT)
        with anyio.CancelScope() as scope:
            scope.cancel()
            await db.call(later)  # queued, then cancelled while it waits its turn
        assert scope.cancelled_caught
        release.set()
    await db.call(lambda _conn: None)  # every call queued before this one has run
    assert ran == []
    await db.aclose()


async def test_a_cancelled_call_that_has_begun_finishes_then_the_cancel_is_raised(
    tmp_path: Path,
) -> None:
    db = ThreadConnection(tmp_path / "t.db", what="test table")
    await db.open()
    holding, release = threading.Event(), threading.Event()
    scope = anyio.CancelScope()
    finished = anyio.Event()
    returned = False

    def write(conn: Connection) -> None:
        conn.execute("CREATE TABLE t (x)")
        holding.set()
        release.wait(WAIT)
        conn.execute("INSERT INTO t VALUES (1)")

    async def caller() -> None:
        nonlocal returned
        try:
            with scope:
                await db.call(write)
                returned = True
        finally:
            finished.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(caller)
        assert await anyio.to_thread.run_sync(holding.wait, WAIT)
        scope.cancel()  # the call is in the thread: it cannot be taken back
        await anyio.wait_all_tasks_blocked()
        assert not finished.is_set()  # the caller waits for the thread, shielded
        release.set()
        await finished.wait()
    assert scope.cancelled_caught  # the cancellation was raised once the call finished
    assert not returned
    assert await db.call(lambda conn: conn.execute("SELECT x FROM t").fetchall()) == [(1,)]
    await db.aclose()


async def test_the_thread_ends_when_the_connection_closes(tmp_path: Path) -> None:
    db = ThreadConnection(tmp_path / "t.db", what="test table")
    await db.open()
    name = f"hyperqueue test table {(tmp_path / 't.db').name}"
    (thread,) = threads_named(name)
    assert thread.daemon  # never keeps a program that forgot to close from exiting
    await db.aclose()
    await anyio.to_thread.run_sync(thread.join, WAIT)
    assert not thread.is_alive()
    await db.open()  # and a reopened connection gets a thread again
    assert await db.call(lambda conn: conn.execute("SELECT 1").fetchall()) == [(1,)]
    await db.aclose()
