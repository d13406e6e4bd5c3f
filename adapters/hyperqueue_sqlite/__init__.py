"""hyperqueue_sqlite: jobs in one SQLite file, for one host and several processes.

``SQLiteStorage(path)`` implements :class:`hyperqueue.abc.Storage` over apsw (which
bundles a current SQLite), each connection in a thread of its own: it runs on asyncio
and trio.
Install it with ``pip install 'hyperqueue-jobs[sqlite]'``.
"""

from __future__ import annotations

try:
    import apsw  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "hyperqueue_sqlite needs apsw: pip install 'hyperqueue-jobs[sqlite]'"
    ) from exc

from ._config_store import ConfigStore
from ._health import SQLiteHealth, wal_reset_bug
from ._maintenance import maintenance_service
from ._retention import (
    DiskUsage,
    PruneReport,
    RetentionPolicy,
    RetentionReport,
    read_archive,
)
from ._schema import SCHEMA_VERSION
from ._storage import SQLiteStorage
from ._thread_db import ThreadConnection

__all__ = [
    "ConfigStore",
    "DiskUsage",
    "PruneReport",
    "RetentionPolicy",
    "RetentionReport",
    "SCHEMA_VERSION",
    "SQLiteHealth",
    "SQLiteStorage",
    "ThreadConnection",
    "maintenance_service",
    "read_archive",
    "wal_reset_bug",
]
