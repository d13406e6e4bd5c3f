"""One database connection used from a thread of its own, one call at a time.

Every connection to a hyperqueue file is one of these: the storage's writer and reader
(:mod:`._storage`), and the connections of the side tables (configuration versions,
audit records). A call runs a whole function in the connection's thread (a whole
transaction: one hop, however many statements it holds); calls run one at a time, in
the order they were made, and the same code runs on trio as well as asyncio.

The hop is the cost of a small transaction, so it is kept lean: the caller puts the
call on the thread's queue and waits for an event, which the thread sets through the
event loop's own thread-safe entry (``call_soon_threadsafe`` on asyncio, the trio
token's ``run_sync_soon`` on trio). ``anyio.to_thread.run_sync`` with a capacity
limiter does the same through a pool, a limiter and a cancel scope: a bare hop cost
some 60 us there against 20 here on asyncio, and a single producer's enqueue some 150
us against 115 (``benchmarks/bench_sqlite.py``: "single producer").
Cancellation behaves as it did there: a call still waiting for its turn is withdrawn
and never runs; a call the thread has begun is waited for, shielded, and the
cancellation is raised once it has finished.

The thread is a daemon and ends after ``IDLE_SECONDS`` without calls (or when the
connection closes), so a program that never closes its connections still exits when
its main function returns; what it committed is in the file (the WAL), and the next
connection to open the file reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sys
import threading
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, TypeVarTuple

import anyio

from hyperqueue import StorageError

from ._batch import GroupCommit
from ._driver import Connection, DatabaseError
from ._open import check_path, prepare, storage_error
from ._sql import Op

__all__ = ["ThreadConnection"]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

IDLE_SECONDS = 10.0  # a connection's thread ends after this long without a call

_QUEUED, _RUNNING, _WITHDRAWN = 0, 1, 2


class _Call:
    """``fn(*args)`` on its way through a connection's thread, and its outcome."""

    __slots__ = ("args", "done", "error", "fn", "result", "state", "wake")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
        self.result: Any = None
        self.error: BaseException | None = None
        self.state = _QUEUED
        self.done = anyio.Event()
        self.wake = _setter(self.done)


def _setter(event: anyio.Event) -> Callable[[], object]:
    """What a thread calls to set ``event`` in the current task's event loop."""
    trio = sys.modules.get("trio")  # not imported: not running on trio
    if trio is not None:
        try:
            token = trio.lowlevel.current_trio_token()
        except RuntimeError:  # trio is imported, this task runs on asyncio
            pass
        else:
            return partial(token.run_sync_soon, event.set)
    return partial(asyncio.get_running_loop().call_soon_threadsafe, event.set)


class _Thread:
    """The thread of one connection: runs the calls put to it one at a time, in order.

    Started by the first call after it ended; it ends after ``IDLE_SECONDS`` without a
    call, or at :meth:`stop` once the calls before it ran.
    """

    __slots__ = ("_calls", "_lock", "_name", "_running")

    def __init__(self, name: str) -> None:
        self._name = name
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._lock = threading.Lock()  # guards _running and each call's state
        self._running = False

    def put(self, call: _Call) -> None:
        with self._lock:
            if not self._running:  # if no thread can start, the call is not put
                threading.Thread(target=self._run, name=self._name, daemon=True).start()
                self._running = True
            self._calls.put(call)

    def withdraw(self, call: _Call) -> bool:
        """Take back a call the thread has not begun; False if it has (or is done)."""
        with self._lock:
            if call.state == _QUEUED:
                call.state = _WITHDRAWN
                return True
            return False

    def stop(self) -> None:
        """End the thread once the calls already put have run."""
        self._calls.put(None)

    def _run(self) -> None:
        calls, lock = self._calls, self._lock
        while True:
            try:
                call = calls.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                call = None
            if call is None:  # idle, or stopped: end unless a call came meanwhile
                with lock:
                    if calls.empty():
                        self._running = False
                        return
                continue
            with lock:
                if call.state != _QUEUED:  # withdrawn by a cancelled caller
                    continue
                call.state = _RUNNING
            try:
                call.result = call.fn(*call.args)
            except BaseException as exc:  # handed to the caller, raised there
                call.error = exc
            with contextlib.suppress(RuntimeError):  # the event loop has ended
                call.wake()
            del call  # hold no result while idle


class ThreadConnection:
    """``await open()``, ``await call(fn, *args)``, ``await aclose()``.

    ``what`` names the user in errors ("SQLite config store '/x.db' is not open");
    ``busy_timeout`` bounds a wait for another process's write lock.
    """

    __slots__ = ("_conn", "_group", "_thread", "busy_timeout", "path", "what")

    def __init__(self, path: str | Path, *, what: str, busy_timeout: float = 5.0) -> None:
        self.path = Path(path)
        self.what = what
        self.busy_timeout = busy_timeout
        self._conn: Connection | None = None
        self._thread = _Thread(f"hyperqueue {what} {self.path.name}")
        self._group = GroupCommit(self._write_batch)

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    async def open(self, setup: Callable[..., object] | None = None, *args: Any) -> None:
        """Connect, then run ``setup(conn, *args)`` in the same hop; if it raises, the
        connection is closed. By default the path is checked and the file prepared as
        ``SQLiteStorage`` prepares it (WAL, synchronous=NORMAL, migrations)."""
        if self._conn is not None:
            return
        if setup is None:
            check_path(self.path)
            setup, args = prepare, (self.path, "NORMAL")
        self._conn = await self._run(self._connect, setup, args)

    def _connect(self, setup: Callable[..., object], args: tuple[Any, ...]) -> Connection:
        try:
            conn = Connection(self.path, busy_timeout=self.busy_timeout)
        except DatabaseError as exc:
            raise storage_error(self.path, exc, "opening") from exc
        try:
            setup(conn, *args)
        except DatabaseError as exc:
            conn.close()
            raise storage_error(self.path, exc, "opening") from exc
        except BaseException:
            conn.close()
            raise
        return conn

    async def aclose(self) -> None:
        """Close once the call in flight (if any) is done; shielded from cancellation."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with anyio.CancelScope(shield=True):
                await self._run(conn.close)
            self._thread.stop()

    async def call(self, fn: Callable[[Connection, *Ts], T], *args: *Ts) -> T:
        """``fn(conn, *args)`` in the connection's thread: one hop, however much it does.
        Errors come back as raised; a closed connection is a ``StorageError``."""
        conn = self._conn
        if conn is None:
            raise StorageError(f"{self.what} {str(self.path)!r} is not open")
        return await self._run(fn, conn, *args)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        call = _Call(fn, args)
        self._thread.put(call)
        try:
            await call.done.wait()
        except BaseException:  # cancelled: withdraw the call, or let it finish
            if not self._thread.withdraw(call):
                with anyio.CancelScope(shield=True):
                    await call.done.wait()
            raise
        if call.error is not None:
            raise call.error
        result: T = call.result
        return result

    async def query(self, doing: str, sql: str, params: tuple[object, ...] = ()) -> list[Any]:
        """The rows of one statement; driver errors become ``StorageError`` saying
        what was being done."""
        return await self.call(_query, self.path, doing, sql, params)

    async def write(self, doing: str, sql: str, params: tuple[object, ...] = ()) -> list[Any]:
        """As :meth:`query`, for a write that many callers make at once (an audit record
        per request): calls that arrive while one transaction is in flight share the
        next one (group commit), so each still returns once its row is committed, but a
        burst costs one transaction and one thread hop, not one each."""
        result: list[Any] = await self._group.submit(_query, self.path, doing, sql, params)
        return result

    async def write_values(self, doing: str, sql: str, rows: Sequence[Sequence[object]]) -> int:
        """As :meth:`write`, for ``rows`` of one ``INSERT ... VALUES (?, ...)`` (run as
        multi-row statements: ``Connection.execute_values``); returns the rows written."""
        count: int = await self._group.submit(_values, self.path, doing, sql, rows)
        return count

    async def _write_batch(self, ops: list[Op]) -> None:
        await self.call(_in_one_transaction, self.path, ops)


def _in_one_transaction(conn: Connection, path: Path, ops: Sequence[Op]) -> None:
    """Each op's statement in one ``BEGIN IMMEDIATE`` transaction; an op that fails
    keeps its error (SQLite undoes that statement alone), an error of the transaction
    itself fails them all."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except DatabaseError as exc:
        error = storage_error(path, exc, "starting a transaction")
        for op in ops:
            op.error = error
        return
    for op in ops:
        try:
            op.result = op.fn(conn, *op.args)
        except Exception as exc:
            op.error = exc
    try:
        conn.execute("COMMIT")
    except DatabaseError as exc:
        with contextlib.suppress(DatabaseError):  # no transaction left to undo
            conn.execute("ROLLBACK")
        error = storage_error(path, exc, "committing")
        for op in ops:
            op.error = error


def _query(
    conn: Connection, path: Path, doing: str, sql: str, params: tuple[object, ...]
) -> list[Any]:
    try:
        return conn.execute(sql, params).fetchall()
    except DatabaseError as exc:
        raise storage_error(path, exc, doing) from exc


def _values(
    conn: Connection, path: Path, doing: str, sql: str, rows: Sequence[Sequence[object]]
) -> int:
    try:
        return conn.execute_values(sql, rows)
    except DatabaseError as exc:
        raise storage_error(path, exc, doing) from exc
