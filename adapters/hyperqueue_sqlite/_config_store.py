"""Configuration versions in the ``config_versions`` table of a hyperqueue SQLite file.

A plain store of documents (JSON text) that only grows: validation, diff, export and
rollback live with the schema in ``hyperqueue_litestar._config.ConfigHistory``, which
takes this store, so the storage adapter knows nothing of the server's settings.

Why ``sqlite3`` in a worker thread rather than aiosqlite: configuration changes are
rare and small, one connection serialised by a capacity limiter of one is enough, and
going through ``anyio.to_thread`` keeps the store usable on trio as well as asyncio.
The file is opened (checked, switched to WAL, migrated) exactly as ``SQLiteStorage``
opens it, so either may create it and both may use it at once.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from types import TracebackType
from typing import Self

import anyio

from hyperqueue import StorageError

from ._open import check_path, prepare, storage_error

__all__ = ["ConfigStore"]

Row = tuple[int, float, str | None, str | None, str]
_COLUMNS = "version, created_at, author, comment, document"


class ConfigStore:
    """``async with ConfigStore(path) as store``: the versions kept in ``path``.

    ``busy_timeout`` (default 5.0 s, at most 600 s) is how long a write waits for another
    process's write lock before it fails with a :class:`~hyperqueue.StorageError`.
    """

    def __init__(self, path: str | Path, *, busy_timeout: float = 5.0) -> None:
        if not 0 <= busy_timeout <= 600:
            raise ValueError("busy_timeout must be between 0 and 600 seconds")
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None
        self._limiter = anyio.CapacityLimiter(1)

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

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

    async def _call(self, doing: str, sql: str, params: tuple[object, ...] = ()) -> list[Row]:
        conn = self._conn
        if conn is None:
            raise StorageError(f"SQLite config store {str(self.path)!r} is not open")

        def run() -> list[Row]:
            try:
                return conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise storage_error(self.path, exc, doing) from exc

        return await anyio.to_thread.run_sync(run, limiter=self._limiter)

    async def append(
        self, *, created_at: float, author: str | None, comment: str | None, document: str
    ) -> int:
        """Store a new version; its number is one more than the highest stored (one
        statement, so two processes appending at once get different numbers)."""
        rows = await self._call(
            "storing a configuration version",
            "INSERT INTO config_versions (version, created_at, author, comment, document) "
            "SELECT coalesce(max(version), 0) + 1, ?, ?, ?, ? FROM config_versions "
            "RETURNING version",
            (created_at, author, comment, document),
        )
        return int(rows[0][0])

    async def fetch(self, version: int) -> Row | None:
        rows = await self._call(
            "reading a configuration version",
            f"SELECT {_COLUMNS} FROM config_versions WHERE version = ?",
            (version,),
        )
        return rows[0] if rows else None

    async def fetch_latest(self) -> Row | None:
        rows = await self.fetch_history(1)
        return rows[0] if rows else None

    async def fetch_history(self, limit: int) -> list[Row]:
        return await self._call(
            "reading the configuration history",
            f"SELECT {_COLUMNS} FROM config_versions ORDER BY version DESC LIMIT ?",
            (limit,),
        )
