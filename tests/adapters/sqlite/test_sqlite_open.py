"""Files that cannot be used are refused with a clear StorageError, and left untouched."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import apsw
import pytest

import hyperqueue as hq
from hyperqueue_sqlite import SCHEMA_VERSION, SQLiteStorage

pytestmark = pytest.mark.anyio


def fingerprint(path: Path) -> tuple[str, list[str]]:
    """The file's bytes and the names beside it (a -wal or -shm file is a change)."""
    return hashlib.sha256(path.read_bytes()).hexdigest(), sorted(os.listdir(path.parent))


async def refused(path: Path, *words: str, **options: float) -> hq.StorageError:
    before = fingerprint(path)
    storage = SQLiteStorage(path, **options)  # type: ignore[arg-type]
    with pytest.raises(hq.StorageError) as info:
        await storage.open()
    message = str(info.value)
    assert str(path) in message
    for word in words:
        assert word in message
    assert fingerprint(path) == before
    return info.value


async def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are my notes, not a database\n" * 200)
    await refused(path, "not a valid SQLite database")


async def test_a_file_from_a_newer_hyperqueue(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    conn = apsw.Connection(str(path))
    conn.execute("CREATE TABLE jobs (id TEXT)")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    await refused(path, f"schema version {SCHEMA_VERSION + 1}", "newer")


async def test_a_database_hyperqueue_did_not_create(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = apsw.Connection(str(path))
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
    conn.close()
    await refused(path, "did not create")


async def test_a_locked_file(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    holder = apsw.Connection(str(path))
    try:
        holder.execute("CREATE TABLE t (x)")
        holder.execute("PRAGMA locking_mode = EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        holder.execute("INSERT INTO t VALUES (1)")
        await refused(path, "locked", busy_timeout=0.1)
    finally:
        holder.close()


async def test_a_new_file_opened_while_another_process_writes_its_first_transaction(
    tmp_path: Path,
) -> None:
    """Two processes opening a new file together: the switch to WAL waits for the other's
    write lock (within the busy timeout) instead of failing at once, as SQLite's pragma
    does by itself."""
    import threading
    import time

    path = tmp_path / "jobs.db"
    other = apsw.Connection(str(path))  # the other process, creating the file
    other.execute("BEGIN IMMEDIATE")
    other.execute("CREATE TABLE scratch (x)")
    released = threading.Timer(0.3, lambda: other.execute("ROLLBACK"))
    released.start()
    started = time.monotonic()
    storage = SQLiteStorage(path)
    try:
        await storage.open()
        assert time.monotonic() - started >= 0.25  # it waited for the lock
        assert await storage.counts() == {}
    finally:
        released.join()
        await storage.aclose()
        other.close()


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "jobs.db"
    conn = apsw.Connection(str(path))
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    path.chmod(0o444)
    yield path
    path.chmod(0o644)


async def test_a_read_only_file(read_only: Path) -> None:
    await refused(read_only, "read-only")


async def test_a_missing_folder(tmp_path: Path) -> None:
    storage = SQLiteStorage(tmp_path / "nowhere" / "jobs.db")
    with pytest.raises(hq.StorageError, match="is missing"):
        await storage.open()
    assert not (tmp_path / "nowhere").exists()


async def test_a_new_file_is_created_in_wal_mode_with_the_current_schema(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    storage = SQLiteStorage(path, synchronous="FULL")
    await storage.open()
    await storage.open()  # harmless twice
    await storage.aclose()
    await storage.aclose()
    conn = apsw.Connection(str(path))
    try:
        assert conn.execute("PRAGMA journal_mode").fetchall() == [("wal",)]
        assert conn.execute("PRAGMA user_version").fetchall() == [(SCHEMA_VERSION,)]
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert {
            "jobs",
            "job_keys",
            "audit_log",
            "job_events",
            "hq_workers",
            "task_counts",
            "config_versions",
            "api_keys",
        } <= tables
    finally:
        conn.close()


async def test_options_are_bounded(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="synchronous"):
        SQLiteStorage(tmp_path / "a.db", synchronous="OFF")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="poll_interval"):
        SQLiteStorage(tmp_path / "a.db", poll_interval=0)
    with pytest.raises(ValueError, match="busy_timeout"):
        SQLiteStorage(tmp_path / "a.db", busy_timeout=-1)


async def test_using_a_closed_storage_is_a_storage_error(tmp_path: Path) -> None:
    storage = SQLiteStorage(tmp_path / "jobs.db")
    with pytest.raises(hq.StorageError, match="not open"):
        await storage.get("x")


def test_a_missing_file_is_created_and_opens_on_trio(tmp_path: Path) -> None:
    """Outside the anyio plugin too: ``trio.run`` as a program would call it."""
    import trio

    path = tmp_path / "jobs.db"
    assert not path.exists()

    async def main() -> hq.Job | None:
        storage = SQLiteStorage(path)
        await storage.open()
        try:
            job = hq.Job(id="j1", task="t", created_at=1.0, run_at=1.0)
            await storage.enqueue([job], now=1.0, key_ttl=None)
            return await storage.get("j1")
        finally:
            await storage.aclose()

    stored = trio.run(main)
    assert stored is not None and stored.id == "j1"
    assert path.exists()
