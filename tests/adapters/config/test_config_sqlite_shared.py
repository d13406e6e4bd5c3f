"""The config store and the job storage open the same SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest

from hyperqueue.testing._clock import FakeClock
from hyperqueue_litestar._config import Config, ConfigHistory, WorkerSettings
from hyperqueue_sqlite._config_store import ConfigStore
from hyperqueue_sqlite._storage import SQLiteStorage

pytestmark = pytest.mark.anyio


async def test_config_versions_live_beside_the_jobs(tmp_path: Path) -> None:
    path = tmp_path / "hq.db"
    storage = SQLiteStorage(path)
    await storage.open()  # creates and migrates the file
    try:
        async with ConfigStore(path) as store:  # while the job storage has it open
            history = ConfigHistory(store, clock=FakeClock())
            config = Config(workers=WorkerSettings(concurrency=3))
            assert (await history.record(config)).version == 1
    finally:
        await storage.aclose()
    reopened = SQLiteStorage(path)
    await reopened.open()  # same schema version: the store changed nothing else
    await reopened.aclose()
    async with ConfigStore(path) as store:
        latest = await ConfigHistory(store).latest()
        assert latest is not None and latest.config.workers.concurrency == 3


async def test_a_config_store_refuses_a_foreign_database(tmp_path: Path) -> None:
    import apsw

    from hyperqueue import StorageError

    path = tmp_path / "other.db"
    conn = apsw.Connection(str(path))
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    with pytest.raises(StorageError, match="did not create"):
        async with ConfigStore(path):
            pass  # pragma: no cover
