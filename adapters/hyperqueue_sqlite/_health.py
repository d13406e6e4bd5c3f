"""Health of a SQLite storage, and the SQLite versions with the WAL-reset bug.

SQLite 3.7.0 up to 3.51.2 can corrupt a WAL database, rarely, when two connections in
different processes (or threads) write or checkpoint at the same moment just after a
checkpoint emptied the WAL (the "WAL-reset bug", fixed in 3.51.3). A single process
with one writing connection, as one SQLiteStorage has, is not exposed; several
processes writing one file are. The check reports the version of the library in use
(``apsw.sqlite_lib_version()``) and flags the combination. apsw>=3.51.3.0 bundles a
fixed SQLite; the check still catches an apsw built against an older system library.
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = ["FIXED_IN", "SQLiteHealth", "wal_reset_bug"]

FIXED_IN = (3, 51, 3)
_INTRODUCED_IN = (3, 7, 0)


def wal_reset_bug(version: str) -> bool:
    """Whether this SQLite library version has the WAL-reset bug."""
    parts = tuple(int(p) for p in version.split(".")[:3] if p.isdigit())
    return _INTRODUCED_IN <= parts < FIXED_IN


class SQLiteHealth(msgspec.Struct, frozen=True, kw_only=True):
    """One health reading of a SQLite storage.

    ``status`` is ``unhealthy`` when the database cannot be read or writes fail on a
    full disk; ``degraded`` when space runs low (under 256 MiB free, or over 90% of the
    database's size limit), or the library has the WAL-reset bug and more than one
    process has the file open. ``free_bytes`` is the free space of the file system the
    database is on.
    ``processes`` counts the live processes that opened this file (on this host).
    """

    status: Literal["healthy", "degraded", "unhealthy"]
    latency_ms: float
    message: str
    sqlite_version: str
    wal_reset_bug: bool
    processes: int
    path: str
    free_bytes: int | None = None
    wal_bytes: int | None = None
    database_bytes: int | None = None
