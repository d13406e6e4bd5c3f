from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """aiosqlite is asyncio-only, so the SQLite adapter's tests run on asyncio alone."""
    return "asyncio"
