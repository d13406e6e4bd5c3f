from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hyperqueue.testing import SharedLogContract, StorageContract
from hyperqueue_sqlite import SQLiteStorage


class TestSQLiteStorage(StorageContract, SharedLogContract):
    @pytest.fixture
    async def storage(self, anyio_backend: object, tmp_path: Path) -> AsyncIterator[SQLiteStorage]:
        storage = SQLiteStorage(tmp_path / "jobs.db")
        await storage.open()
        yield storage
        await storage.aclose()

    @pytest.fixture
    async def sibling(self, storage: SQLiteStorage, tmp_path: Path) -> AsyncIterator[SQLiteStorage]:
        """A second storage object on the same file, as another process opens it."""
        other = SQLiteStorage(tmp_path / "jobs.db")
        await other.open()
        yield other
        await other.aclose()
