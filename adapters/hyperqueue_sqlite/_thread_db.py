"""One database connection used from anyio worker threads, one call at a time.

Every connection to a hyperqueue file is one of these: the storage's writer and reader
(:mod:`._storage`), and the connections of the side tables (configuration versions,
audit records). A call hops to a worker thread through ``anyio.to_thread.run_sync``
with a capacity limiter of one, so calls on a connection never overlap and the same
code runs on trio as well as asyncio. A call runs a whole function there (a whole
transaction: one hop, however many statements it holds).

anyio's worker threads end with the event loop, so a program that never closes its
connections still exits when its main function returns; what it committed is in the
file (the WAL), and the next connection to open the file reads it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar, TypeVarTuple

import anyio
import anyio.to_thread

from hyperqueue import StorageError

from ._batch import GroupCommit
from ._driver import Connection, DatabaseError
from ._open import check_path, prepare, storage_error
from ._sql import Op

__all__ = ["ThreadConnection"]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class ThreadConnection:
    """``await open()``, ``await call(fn, *args)``, ``await aclose()``.

    ``what`` names the user in errors ("SQLite config store '/x.db' is not open");
    ``busy_timeout`` bounds a wait for another process's write lock.
    """

    __slots__ = ("_conn", "_group", "_limiter", "busy_timeout", "path", "what")

    def __init__(self, path: str | Path, *, what: str, busy_timeout: float = 5.0) -> None:
        self.path = Path(path)
        self.what = what
        self.busy_timeout = busy_timeout
        self._conn: Connection | None = None
        self._limiter = anyio.CapacityLimiter(1)
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
        self._conn = await anyio.to_thread.run_sync(
            self._connect, setup, args, limiter=self._limiter
        )

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
                await anyio.to_thread.run_sync(conn.close, limiter=self._limiter)

    async def call(self, fn: Callable[[Connection, *Ts], T], *args: *Ts) -> T:
        """``fn(conn, *args)`` in a worker thread: one hop, however much it does.
        Errors come back as raised; a closed connection is a ``StorageError``."""
        conn = self._conn
        if conn is None:
            raise StorageError(f"{self.what} {str(self.path)!r} is not open")
        return await anyio.to_thread.run_sync(fn, conn, *args, limiter=self._limiter)

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
