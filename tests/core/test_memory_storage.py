from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

import hyperqueue as hq
from hyperqueue.testing import StorageContract


class TestMemoryStorage(StorageContract):
    @pytest.fixture
    async def storage(self, anyio_backend: object) -> AsyncIterator[hq.MemoryStorage]:
        storage = hq.MemoryStorage()
        await storage.open()
        yield storage
        await storage.aclose()
