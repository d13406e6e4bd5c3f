"""The audit log in PostgreSQL, for servers whose jobs live there (``serve --dsn``).

Its own small asyncpg pool and one table, ``hq_audit_log``, created on first open under
an advisory lock (several servers may start at once); ``seq`` is an identity column,
so every server on the database appends to one log. asyncio only, as asyncpg.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

import hyperqueue as hq

from ._audit import AuditPage, AuditRecord, record_row
from ._security import Actor

__all__ = ["PostgresAuditSink"]

_encode = msgspec.json.Encoder().encode
_actor = msgspec.json.Decoder(Actor)
_meta = msgspec.json.Decoder(dict[str, Any])

_INSERT = "INSERT INTO hq_audit_log (at, event, actor, tenant, resource, action, result, metadata)"
_INSERT_MANY = (  # seq given in the batch's order
    f"{_INSERT} SELECT a, b, c, d, e, f, g, h FROM unnest($1::float8[], $2::text[],"
    " $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[])"
    " WITH ORDINALITY AS r(a, b, c, d, e, f, g, h, n) ORDER BY n"
)
_LOCK = 0x68715F61  # "hq_a": serializes the table's creation across servers
_SCHEMA = """
CREATE TABLE IF NOT EXISTS hq_audit_log (
    seq      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at       DOUBLE PRECISION NOT NULL,
    event    TEXT NOT NULL,
    actor    TEXT,
    tenant   TEXT,
    resource TEXT,
    action   TEXT NOT NULL,
    result   TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS hq_audit_log_at ON hq_audit_log (at);
"""


class PostgresAuditSink:
    """``async with PostgresAuditSink(dsn) as sink``: records in ``hq_audit_log``."""

    def __init__(self, dsn: str, *, pool_size: int = 2) -> None:
        self.dsn = dsn
        self.pool_size = pool_size
        self._pool: Any = None

    async def __aenter__(self) -> PostgresAuditSink:
        import asyncpg

        try:
            self._pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=self.pool_size)
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
                await conn.execute(_SCHEMA)
        except (OSError, asyncpg.PostgresError) as exc:
            if self._pool is not None:
                await self._pool.close()
                self._pool = None
            raise hq.StorageError(f"PostgreSQL audit log at {_where(self.dsn)}: {exc}") from exc
        return self

    async def __aexit__(self, *exc: object) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    def _require(self) -> Any:
        if self._pool is None:
            raise hq.StorageError("the PostgreSQL audit log is not open")
        return self._pool

    async def write(self, record: AuditRecord) -> int:
        seq = await self._require().fetchval(
            f"{_INSERT} VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING seq", *record_row(record)
        )
        return int(seq)

    async def write_many(self, records: Sequence[AuditRecord]) -> None:
        """Keep ``records``, in order, with one statement (a column array each)."""
        columns = list(zip(*map(record_row, records), strict=True))
        await self._require().execute(_INSERT_MANY, *columns)

    async def read(self, *, after: int = 0, limit: int = 100) -> AuditPage:
        rows = await self._require().fetch(
            "SELECT seq, at, event, actor, resource, action, result, metadata "
            "FROM hq_audit_log WHERE seq > $1 ORDER BY seq LIMIT $2",
            after,
            limit + 1,
        )
        items = [
            AuditRecord(
                seq=row["seq"],
                at=row["at"],
                event=row["event"],
                actor=_actor.decode(row["actor"]) if row["actor"] else Actor(type="anonymous"),
                resource=row["resource"],
                action=row["action"],
                result=row["result"],
                metadata=_meta.decode(row["metadata"]),
            )
            for row in rows[:limit]
        ]
        return AuditPage(items=items, next_after=items[-1].seq if len(rows) > limit else None)


def _where(dsn: str) -> str:
    """The DSN without its password, for messages."""
    head, sep, tail = dsn.rpartition("@")
    if not sep:
        return dsn
    scheme, _, user = head.partition("://")
    return f"{scheme}://{user.split(':', 1)[0]}@{tail}"
