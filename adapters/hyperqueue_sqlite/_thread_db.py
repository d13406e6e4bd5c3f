"""One ``sqlite3`` connection used from a worker thread, for small side tables.

Configuration versions and audit records are written rarely next to the jobs; one
connection serialised by a capacity limiter of one is enough for them, and going
through ``anyio.to_thread`` keeps them usable on trio as well as asyncio. The file is
opened (checked, switched to WAL, migrated) exactly as ``SQLiteStorage`` opens it, so
either may create it and all may use it at once.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import anyio

from hyperqueue import StorageError

from ._open import check_path, prepare, storage_error

__all__ = ["ThreadConnection"]


class ThreadConnection:
    """``await open()``, ``await call(doing, sql, params)``, ``await aclose()``.

    ``what`` names the user in errors ("SQLite config store '/x.db' is not open");
    ``busy_timeout`` bounds a wait for another process's write lock.
    """

    __slots__ = ("_conn", "_limiter", "busy_timeout", "path", "what")

    def __init__(self, path: str | Path, *, what: str, busy_timeout: float = 5.0) -> None:
        self.path = Path(path)
        self.what = what
        self.busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None
        self._limiter = anyio.CapacityLimiter(1)

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    async def open(self) -> None:
        if self._conn is not None:
            return
        check_path(self.path)
        self._conn = await anyio.to_thread.run_sync(self._connect, limiter=self._limiter)

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise storage_error(self.path, exc, "opening") from exc
        try:
            prepare(conn, self.path, "NORMAL")
        except BaseException:
            conn.close()
            raise
        return conn

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(conn.close, limiter=self._limiter)

    async def call(self, doing: str, sql: str, params: tuple[object, ...] = ()) -> list[Any]:
        """Run one statement in the thread; sqlite3 errors become ``StorageError``."""
        conn = self._conn
        if conn is None:
            raise StorageError(f"{self.what} {str(self.path)!r} is not open")

        def run() -> list[Any]:
            try:
                return conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise storage_error(self.path, exc, doing) from exc

        return await anyio.to_thread.run_sync(run, limiter=self._limiter)
