"""A full disk, for real: a small tmpfs that the test fills. Health says so while writes
fail, and a shutdown in the middle of it cannot make the next start fail."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import hyperqueue as hq
from hyperqueue._ids import IdFactory
from hyperqueue_sqlite import SQLiteStorage

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0
new_id = IdFactory()
BIG = "x" * 100_000


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB file system of its own (needs the right to mount, as root has)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill: {done.stderr.strip() or 'not root'}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def job(payload: str = "") -> hq.Job:
    return hq.Job(id=new_id(T0), task="t", args=(payload,), created_at=T0, run_at=T0)


def fill(folder: Path) -> Path:
    """Take every free byte of ``folder``'s file system with one file."""
    filler = folder / "filler"
    with filler.open("wb") as out:
        chunk = b"\0" * (64 << 10)
        try:
            while True:
                out.write(chunk)
                out.flush()
        except OSError:
            pass
    return filler


async def enqueue_until_full(storage: SQLiteStorage) -> int:
    """Enqueue big jobs until the disk is full; how many were stored."""
    for stored in range(1000):
        try:
            await storage.enqueue([job(BIG)], now=T0, key_ttl=None)
        except hq.StorageError as exc:
            if "the disk is full" not in str(exc):
                raise
            return stored
    raise AssertionError("the disk never filled up")


async def test_health_says_unhealthy_while_writes_fail_on_a_full_disk(small_disk: Path) -> None:
    storage = SQLiteStorage(small_disk / "jobs.db")
    await storage.open()
    try:
        low = await storage.health()
        assert low.status == "degraded" and "low disk" in low.message  # 8 MiB in all
        filler = fill(small_disk)
        await enqueue_until_full(storage)
        full = await storage.health()
        assert full.status == "unhealthy", full
        assert "the disk is full" in full.message and full.free_bytes is not None
        os.truncate(filler, max(filler.stat().st_size - (2 << 20), 0))
        await storage.enqueue([job()], now=T0, key_ttl=None)  # room again: it goes through
        after = await storage.health()
        assert after.status == "degraded", after
    finally:
        await storage.aclose()


async def test_a_shutdown_during_a_full_disk_cannot_break_the_next_start(
    small_disk: Path,
) -> None:
    path = small_disk / "jobs.db"
    storage = SQLiteStorage(path)
    await storage.open()
    for _ in range(25):  # about 2.5 MB in the WAL, not checkpointed yet
        await storage.enqueue([job(BIG)], now=T0, key_ttl=None)
    filler = fill(small_disk)
    stored = 25 + await enqueue_until_full(storage)
    wal = path.with_name("jobs.db-wal").stat().st_size
    os.truncate(filler, filler.stat().st_size - (1 << 20))  # less room than the WAL
    assert wal > 1 << 20
    await storage.aclose()  # a checkpoint here would fill the disk again

    again = SQLiteStorage(path)
    await again.open()
    try:
        counts = await again.counts()
        assert counts["default"][hq.JobStatus.PENDING] == stored, "every acknowledged job"
        await again.enqueue([job()], now=T0, key_ttl=None)
        assert (await again.health()).status == "degraded"
    finally:
        await again.aclose()
