"""hyperqueue_postgres: jobs in PostgreSQL, for processes on many hosts.

``PostgresStorage(dsn)`` implements :class:`hyperqueue.abc.Storage` over asyncpg. It
runs on asyncio only (asyncpg is asyncio-only): a queue on it cannot run under trio.
Install it with ``pip install 'hyperqueue-jobs[postgres]'``.
"""

from __future__ import annotations

try:
    import asyncpg  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "hyperqueue_postgres needs asyncpg: pip install 'hyperqueue-jobs[postgres]'"
    ) from exc

from ._config_store import ConfigStore
from ._retention import PruneReport, read_archive, retention_service
from ._schema import SCHEMA_VERSION
from ._storage import PostgresStorage
from ._transactional import enqueue_in, enqueue_many_in

__all__ = [
    "SCHEMA_VERSION",
    "ConfigStore",
    "PostgresStorage",
    "PruneReport",
    "enqueue_in",
    "enqueue_many_in",
    "read_archive",
    "retention_service",
]
