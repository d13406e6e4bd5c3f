"""Retention: archive finished jobs to gzip JSON-lines files, then prune them.

Each batch of pruned jobs goes to its own archive file, written to a temporary name,
fsynced and renamed before a single row is deleted: a crash between the two leaves the
jobs both archived and stored (the next run archives them again), never neither.
"""

from __future__ import annotations

import gzip
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import msgspec

from hyperqueue import Job

__all__ = [
    "DiskUsage",
    "PruneReport",
    "RetentionPolicy",
    "RetentionReport",
    "disk_usage",
    "read_archive",
    "write_archive",
]

_encode = msgspec.json.Encoder().encode
_decode_job = msgspec.json.Decoder(Job).decode


class RetentionPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How long finished jobs are kept, and what to do when the disk runs low.

    - ``keep_for``: seconds a finished job is kept (default 604,800: 7 days).
    - ``archive_dir``: folder for the gzip JSON-lines archives; ``None`` prunes without
      archiving.
    - ``min_free_bytes``: below this much free disk space (default 1 GiB) the disk is
      low, and finished jobs are kept only ``low_disk_keep_for`` seconds (default 3,600).
    """

    keep_for: float = 7 * 24 * 3600.0
    archive_dir: str | None = None
    min_free_bytes: int = 1 << 30
    low_disk_keep_for: float = 3600.0


class PruneReport(msgspec.Struct, frozen=True, kw_only=True):
    """What one prune did: jobs finished before ``cutoff`` were archived and deleted,
    and event log entries older than ``cutoff`` too."""

    cutoff: float
    pruned: int
    archived: int
    files: tuple[str, ...] = ()
    keys_forgotten: int = 0
    events_pruned: int = 0


class DiskUsage(msgspec.Struct, frozen=True, kw_only=True):
    """Sizes of the database files and the space left on their file system, in bytes.

    ``free_pages_bytes`` is space inside the database that pruning freed and new rows
    will reuse (``vacuum`` gives it back to the file system).
    """

    database_bytes: int
    wal_bytes: int
    free_pages_bytes: int
    free_bytes: int
    total_bytes: int


class RetentionReport(msgspec.Struct, frozen=True, kw_only=True):
    """One enforcement of a :class:`RetentionPolicy`."""

    low_disk: bool
    before: DiskUsage
    after: DiskUsage
    prune: PruneReport


def disk_usage(path: Path, free_pages_bytes: int) -> DiskUsage:
    """Sizes of ``path`` and its -wal file, and the free space where they live."""

    def size(p: Path) -> int:
        try:
            return p.stat().st_size
        except FileNotFoundError:
            return 0

    usage = shutil.disk_usage(path.parent)
    return DiskUsage(
        database_bytes=size(path),
        wal_bytes=size(path.with_name(path.name + "-wal")),
        free_pages_bytes=free_pages_bytes,
        free_bytes=usage.free,
        total_bytes=usage.total,
    )


def write_archive(folder: Path, jobs: Sequence[Job]) -> Path:
    """Write ``jobs`` to a new gzip JSON-lines file in ``folder``, durably; its path."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(jobs[0].finished_at or 0.0))
    final = folder / f"jobs-{stamp}-{jobs[0].id}.jsonl.gz"
    partial = final.with_name(final.name + ".partial")
    with open(partial, "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6) as zipped:
            zipped.write(b"\n".join(_encode(job) for job in jobs) + b"\n")
        raw.flush()
        os.fsync(raw.fileno())
    os.replace(partial, final)
    directory = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return final


def read_archive(path: str | os.PathLike[str]) -> Iterator[Job]:
    """The jobs in one archive file, as :class:`hyperqueue.Job` records."""
    with gzip.open(path, "rb") as lines:
        for line in lines:
            if line.strip():
                yield _decode_job(line)
