"""Configuration versions in PostgreSQL (``hq_config_versions``), for ``serve --dsn``.

The same plain store of documents as ``hyperqueue_sqlite.ConfigStore`` (validation,
diff, export and rollback live with the schema in ``hyperqueue_litestar``), shared by
every server on the database. asyncio only, as asyncpg.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

import hyperqueue as hq

__all__ = ["ConfigStore"]

Row = tuple[int, float, str | None, str | None, str]
_COLUMNS = "version, created_at, author, comment, document"
_LOCK = 0x68715F63  # "hq_c": serializes the table's creation and each append
_SCHEMA = """
CREATE TABLE IF NOT EXISTS hq_config_versions (
    version    BIGINT PRIMARY KEY,
    created_at DOUBLE PRECISION NOT NULL,
    author     TEXT,
    comment    TEXT,
    document   TEXT NOT NULL
)
"""


class ConfigStore:
    """``async with ConfigStore(dsn) as store``: the versions kept in the database."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._pool: Any = None

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
        if self._pool is not None:
            return
        import asyncpg

        try:
            self._pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=2)
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
                await conn.execute(_SCHEMA)
        except (OSError, asyncpg.PostgresError) as exc:
            await self.aclose()
            raise hq.StorageError(f"PostgreSQL config store: {exc}") from exc

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    def _require(self) -> Any:
        if self._pool is None:
            raise hq.StorageError("the PostgreSQL config store is not open")
        return self._pool

    async def append(
        self, *, created_at: float, author: str | None, comment: str | None, document: str
    ) -> int:
        """Store a new version, one more than the highest (appends are serialized by an
        advisory lock, so two servers appending at once get different numbers)."""
        async with self._require().acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
            version = await conn.fetchval(
                "INSERT INTO hq_config_versions (version, created_at, author, comment, document) "
                "SELECT coalesce(max(version), 0) + 1, $1, $2, $3, $4 FROM hq_config_versions "
                "RETURNING version",
                created_at,
                author,
                comment,
                document,
            )
        return int(version)

    async def fetch(self, version: int) -> Row | None:
        row = await self._require().fetchrow(
            f"SELECT {_COLUMNS} FROM hq_config_versions WHERE version = $1", version
        )
        return None if row is None else (row[0], row[1], row[2], row[3], row[4])

    async def fetch_latest(self) -> Row | None:
        rows = await self.fetch_history(1)
        return rows[0] if rows else None

    async def fetch_history(self, limit: int) -> list[Row]:
        rows = await self._require().fetch(
            f"SELECT {_COLUMNS} FROM hq_config_versions ORDER BY version DESC LIMIT $1", limit
        )
        return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]
