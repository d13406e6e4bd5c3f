from __future__ import annotations

from pathlib import Path

import apsw
import pytest

from hyperqueue_sqlite import SQLiteStorage, wal_reset_bug

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("version", "affected"),
    [
        ("3.6.23", False),
        ("3.7.0", True),
        ("3.40.1", True),
        ("3.51.2", True),
        ("3.51.3", False),
        ("3.52.0", False),
        ("4.0.0", False),
    ],
)
def test_wal_reset_bug_versions(version: str, affected: bool) -> None:
    assert wal_reset_bug(version) is affected


async def test_health_of_a_single_process(tmp_path: Path) -> None:
    storage = SQLiteStorage(tmp_path / "jobs.db")
    await storage.open()
    try:
        health = await storage.health()
    finally:
        await storage.aclose()
    assert health.status == "healthy"
    # the library in use is apsw's; the sqlite extra asks for one without the bug
    assert health.sqlite_version == apsw.sqlite_lib_version()
    assert health.wal_reset_bug is False
    assert health.processes == 1
    assert 0 <= health.latency_ms < 5000
    assert health.path == str(tmp_path / "jobs.db")
    assert health.message == f"SQLite {apsw.sqlite_lib_version()}"


async def test_a_process_that_died_is_not_counted(tmp_path: Path) -> None:
    storage = SQLiteStorage(tmp_path / "jobs.db")
    await storage.open()
    try:
        conn = apsw.Connection(str(storage.path))
        # a process that crashed without closing (pid 2**22+1 does not exist)
        conn.execute("INSERT INTO hq_processes VALUES (?, ?, 0)", (storage._host, 2**22 + 1))
        conn.close()
        assert (await storage.health()).processes == 1
    finally:
        await storage.aclose()
