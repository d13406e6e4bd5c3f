from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hyperqueue.testing import StorageContract
from hyperqueue_sqlite import SQLiteStorage


class TestSQLiteStorage(StorageContract):
    @pytest.fixture
    async def storage(self, anyio_backend: object, tmp_path: Path) -> AsyncIterator[SQLiteStorage]:
        storage = SQLiteStorage(tmp_path / "jobs.db")
        await storage.open()
        yield storage
        await storage.aclose()
