"""Configuration versions in the ``config_versions`` table of a hyperqueue SQLite file.

A plain store of documents (JSON text) that only grows: validation, diff, export and
rollback live with the schema in ``hyperqueue_litestar._config.ConfigHistory``, which
takes this store, so the storage adapter knows nothing of the server's settings.

It uses one connection in a worker thread (:mod:`._thread_db`), usable on trio as well
as asyncio, opened exactly as ``SQLiteStorage`` opens the file.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Self

from ._thread_db import ThreadConnection

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
        self._db = ThreadConnection(
            self.path, what="SQLite config store", busy_timeout=busy_timeout
        )

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
        await self._db.open()

    async def aclose(self) -> None:
        await self._db.aclose()

    async def _call(self, doing: str, sql: str, params: tuple[object, ...] = ()) -> list[Row]:
        return await self._db.query(doing, sql, params)

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
