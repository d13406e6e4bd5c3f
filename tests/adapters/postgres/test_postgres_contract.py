from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from hyperqueue.testing import SharedLogContract, StorageContract
from hyperqueue_postgres import PostgresStorage


class TestPostgresStorage(StorageContract, SharedLogContract):
    @pytest.fixture
    async def storage(
        self, anyio_backend: object, pg_module_dsn: str
    ) -> AsyncIterator[PostgresStorage]:
        storage = PostgresStorage(pg_module_dsn)
        await storage.open()
        yield storage
        await storage.aclose()

    @pytest.fixture
    async def sibling(
        self, storage: PostgresStorage, pg_module_dsn: str
    ) -> AsyncIterator[PostgresStorage]:
        """A second storage object on the same database, as another process opens it."""
        other = PostgresStorage(pg_module_dsn)
        await other.open()
        yield other
        await other.aclose()
