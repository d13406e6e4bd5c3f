from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from hyperqueue.testing import StorageContract
from hyperqueue_postgres import PostgresStorage


class TestPostgresStorage(StorageContract):
    @pytest.fixture
    async def storage(
        self, anyio_backend: object, pg_module_dsn: str
    ) -> AsyncIterator[PostgresStorage]:
        storage = PostgresStorage(pg_module_dsn)
        await storage.open()
        yield storage
        await storage.aclose()
