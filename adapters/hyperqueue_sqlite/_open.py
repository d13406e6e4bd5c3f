"""Opening a database file: refuse what cannot work before writing a single byte.

A file that is not a database, one written by a newer hyperqueue, one that another
process holds locked, and one that is read-only each raise a :class:`StorageError`
naming the path and the problem. Every check that can refuse runs before the first
write (switching to WAL, migrating), so a refused file is left exactly as it was.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Literal

from hyperqueue import StorageError

from ._driver import (
    BusyError,
    Connection,
    CorruptError,
    DatabaseError,
    FullError,
    LockedError,
    NotADBError,
    ReadOnlyError,
)
from ._schema import MIGRATIONS, SCHEMA_VERSION

__all__ = ["check_path", "prepare", "storage_error"]

Synchronous = Literal["NORMAL", "FULL"]


def storage_error(path: Path, exc: BaseException, doing: str = "") -> StorageError:
    """A StorageError that names the file and says what the SQLite error means.

    The driver's error class says it; for other exceptions (a ``ValueError`` from a
    row that does not decode) the words of the message do."""
    text = str(exc)
    lowered = "" if isinstance(exc, DatabaseError) else text.lower()
    if isinstance(exc, BusyError | LockedError) or "locked" in lowered or "busy" in lowered:
        problem = (
            f"the database is locked by another connection ({text}); another process holds "
            "a write lock longer than the busy timeout: find it, or raise busy_timeout"
        )
    elif (
        isinstance(exc, NotADBError | CorruptError)
        or "not a database" in lowered
        or "malformed" in lowered
        or "corrupt" in lowered
    ):
        problem = (
            f"the file is not a valid SQLite database ({text}); restore it from a backup, "
            "or move it aside to start with a new one"
        )
    elif isinstance(exc, ReadOnlyError) or "readonly" in lowered or "read-only" in lowered:
        problem = (
            f"the database is read-only ({text}); make the file and its folder writable "
            "by this user"
        )
    elif isinstance(exc, FullError) or ("disk" in lowered and "full" in lowered):
        problem = f"the disk is full ({text}); free space on its file system, or prune old jobs"
    else:
        problem = text
    where = f" while {doing}" if doing else ""
    error = StorageError(f"SQLite storage {str(path)!r}{where}: {problem}")
    error.__cause__ = exc
    return error


def check_path(path: Path) -> None:
    """Refuse paths that SQLite would fail on later with a vaguer message."""
    if path.is_dir():
        raise StorageError(f"SQLite storage {str(path)!r}: is a directory, not a database file")
    folder = path.parent
    if not folder.is_dir():
        raise StorageError(f"SQLite storage {str(path)!r}: the folder {str(folder)!r} is missing")
    if path.exists():
        mode = path.stat().st_mode
        # the write bits, not only access(): root may write anything, but a file someone
        # marked read-only is not ours to change
        if not os.access(path, os.R_OK | os.W_OK) or not mode & (stat.S_IWUSR | stat.S_IWGRP):
            raise StorageError(
                f"SQLite storage {str(path)!r}: the file is read-only; hyperqueue needs to write "
                "jobs (make it writable, or open a copy)"
            )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise StorageError(
            f"SQLite storage {str(path)!r}: the folder {str(folder)!r} is read-only; SQLite "
            "needs to create the -wal and -shm files beside the database"
        )


def prepare(conn: Connection, path: Path, synchronous: Synchronous) -> None:
    """Check, then switch to WAL and migrate. Runs in the connection's thread."""
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    except DatabaseError as exc:
        raise storage_error(path, exc, "reading the schema version") from exc
    if version > SCHEMA_VERSION:
        raise StorageError(
            f"SQLite storage {str(path)!r}: schema version {version} was written by a newer "
            f"hyperqueue; this one knows versions up to {SCHEMA_VERSION}. Upgrade hyperqueue "
            "to open it (the file was not changed)."
        )
    if version == 0 and tables:
        raise StorageError(
            f"SQLite storage {str(path)!r}: an SQLite database that hyperqueue did not create "
            f"({tables} objects, schema version 0); refusing to add tables to it"
        )
    try:
        mode = _switch_to_wal(conn)
        if mode.lower() != "wal":
            raise StorageError(
                f"SQLite storage {str(path)!r}: cannot switch to WAL (journal mode stays "
                f"{mode!r}); WAL needs a local file system with shared memory"
            )
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("PRAGMA temp_store = MEMORY")
        # after a checkpoint, cut a WAL that a burst grew back to 64 MiB
        conn.execute(f"PRAGMA journal_size_limit = {64 << 20}")
        if version < SCHEMA_VERSION:
            migrate(conn)
    except DatabaseError as exc:
        raise storage_error(path, exc, "preparing the database") from exc


def _switch_to_wal(conn: Connection) -> str:
    """``PRAGMA journal_mode = WAL``, waiting up to the connection's busy timeout for
    another connection's write lock: SQLite answers this pragma "database is locked" at
    once, without its busy handler, so two processes opening a new file together would
    otherwise fail one of them."""
    deadline = time.monotonic() + conn.busy_timeout
    while True:
        try:
            mode: str = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            return mode
        except BusyError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def migrate(conn: Connection) -> None:
    """Apply the missing migrations in one transaction; the version is read again under
    the write lock, since another process may have migrated meanwhile."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StorageError(f"schema version {version} is newer than {SCHEMA_VERSION}")
        for statements in MIGRATIONS[version:]:
            for statement in statements:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
