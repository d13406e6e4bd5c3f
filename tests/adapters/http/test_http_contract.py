"""The storage contract (the cases memory, SQLite and PostgreSQL pass) against
HttpStorage talking to a real server over TCP (see conftest for its clock)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from conftest import ClockedStorage, SetClock
from hyperqueue.abc import Storage
from hyperqueue.testing import StorageContract
from hyperqueue_http import HttpStorage

pytestmark = pytest.mark.anyio


class TestHttpContract(StorageContract):
    @pytest.fixture
    async def storage(self, server_url: str, clock: SetClock) -> AsyncIterator[Storage]:
        inner = HttpStorage(server_url)
        await inner.open()
        try:
            yield ClockedStorage(inner, clock)  # type: ignore[misc]
        finally:
            await inner.aclose()
