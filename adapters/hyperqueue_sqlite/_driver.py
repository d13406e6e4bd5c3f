"""The SQLite driver: apsw, behind the part of the stdlib ``sqlite3`` interface we use.

apsw bundles its own, current SQLite (``apsw>=3.51.3.0`` brings 3.51.3 or later, past
the WAL-reset bug of :mod:`._health`); Python's ``sqlite3`` uses whatever library the
interpreter was built with. Every module that opens a hyperqueue file goes through this
one, so a process has a single SQLite library on the file: two copies in one process
do not share POSIX locks (closing one copy's descriptor drops the other's locks), and
that can corrupt a database.

:class:`Connection` offers ``execute`` (``?`` with a sequence, ``:name`` with a dict),
``executemany``, ``in_transaction`` and ``close``, so the transaction functions in
:mod:`._sql` read as they would with ``sqlite3``. It is in autocommit mode (apsw's
default): transactions are explicit ``BEGIN IMMEDIATE`` ... ``COMMIT``. A statement runs
to completion inside ``execute`` and its rows are read at once, so no statement is
left half-stepped when the next one runs, the transaction commits, or the connection
moves to another thread. Use a connection from one thread at a time.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import lru_cache
from typing import Any

import apsw

__all__ = [
    "BusyError",
    "CantOpenError",
    "Connection",
    "CorruptError",
    "DatabaseError",
    "FullError",
    "LockedError",
    "NotADBError",
    "ReadOnlyError",
    "Result",
    "sqlite_version",
]

# What ``except`` clauses and ``_open.storage_error`` need: the base of every error
# SQLite reports (constraint, busy, corrupt, I/O, bad bindings ...), and the ones
# that get a sentence of their own.
DatabaseError = apsw.Error
BusyError = apsw.BusyError  # another connection holds the write lock past the timeout
LockedError = apsw.LockedError  # a conflict inside this connection's own process
CorruptError = apsw.CorruptError
NotADBError = apsw.NotADBError
ReadOnlyError = apsw.ReadOnlyError
FullError = apsw.FullError
CantOpenError = apsw.CantOpenError

# Read and write, create a missing file. No SQLITE_OPEN_URI: a path is a path. A file
# that only allows reading would be opened read-only; _open.check_path refuses it first.
_FLAGS = apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE


_MULTI_ROWS = 512  # rows in one multi-row INSERT at most
_MAX_PARAMS = 32766  # SQLite's default limit of parameters in one statement


@lru_cache(maxsize=256)
def _multi_row(sql: str, rows: int) -> str:
    """``sql`` (a statement with one ``VALUES (...)`` row) with ``rows`` rows."""
    at = sql.upper().rindex("VALUES") + len("VALUES")
    start = sql.index("(", at)
    end = sql.index(")", start) + 1
    group = sql[start:end]
    return f"{sql[:start]}{', '.join([group] * rows)}{sql[end:]}"


def sqlite_version() -> str:
    """The version of the SQLite library in use ("3.51.3")."""
    return apsw.sqlite_lib_version()


class Result:
    """The rows of one statement, all read, and ``rowcount``: the rows an INSERT,
    UPDATE, DELETE or REPLACE changed (with or without RETURNING), -1 for any other
    statement, as in ``sqlite3``."""

    __slots__ = ("_at", "_rows", "rowcount")

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self._at = 0
        self.rowcount = rowcount

    def fetchone(self) -> Any:
        rows, at = self._rows, self._at
        if at < len(rows):
            self._at = at + 1
            return rows[at]
        return None

    def fetchall(self) -> list[Any]:
        rows, at = self._rows, self._at
        self._at = len(rows)
        return rows[at:] if at else rows

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


class Connection:
    """``Connection(path, busy_timeout=5.0)``: one apsw connection to ``path``, created
    if missing; a write waits up to ``busy_timeout`` seconds for another connection's
    write lock before :data:`BusyError`. Raises :data:`DatabaseError` subclasses."""

    __slots__ = ("_conn", "_cursor", "busy_timeout")

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 5.0) -> None:
        conn = apsw.Connection(os.fspath(path), flags=_FLAGS)
        conn.set_busy_timeout(round(busy_timeout * 1000))
        self.busy_timeout = busy_timeout
        self._conn = conn
        # one cursor, reused: every statement is read to the end before the next
        self._cursor = conn.cursor()

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open (after ``BEGIN``, before ``COMMIT``/``ROLLBACK``)."""
        return self._conn.in_transaction

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> Result:
        """Run one statement with its parameters; its rows are read at once."""
        rows = self._cursor.execute(sql, params).fetchall()
        return Result(rows, self._conn.changes() if _changes_rows(sql) else -1)

    def executemany(
        self, sql: str, seq_of_params: Iterable[Sequence[Any] | Mapping[str, Any]]
    ) -> Result:
        """Run one statement once per item of ``seq_of_params``; ``rowcount`` is the
        rows all of them changed."""
        before = self._conn.total_changes()
        rows = self._cursor.executemany(sql, seq_of_params).fetchall()
        changed = self._conn.total_changes() - before
        return Result(rows, changed if _changes_rows(sql) else -1)

    def execute_values(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        """Run ``sql``, a statement with one ``VALUES (?, ...)`` row (an INSERT, with an
        ``ON CONFLICT`` clause or not, or an ``UPDATE ... FROM (VALUES (...)) AS v``),
        for every row of ``rows``, as multi-row statements of 1, 2, 4 ... 512 rows (so
        a few prepared forms serve every count); returns the rows they changed.

        ``executemany`` steps once per row, and every step lets go of the GIL: a writer
        thread then waits for the event loop's thread to give it back, once per row,
        up to the interpreter's switch interval (5 ms) each time the loop is busy. A
        multi-row statement is one step, and one statement's overhead for all rows."""
        if not rows:
            return 0
        width = len(rows[0])
        most = _MULTI_ROWS
        while most > 1 and most * width > _MAX_PARAMS:
            most //= 2
        at, count = 0, len(rows)
        before = self._conn.total_changes()
        while at < count:
            size = min(most, 1 << ((count - at).bit_length() - 1))
            chunk = rows[at : at + size]
            self._cursor.execute(_multi_row(sql, size), [v for row in chunk for v in row])
            at += size
        return self._conn.total_changes() - before

    def keep_wal_on_close(self) -> None:
        """Do not checkpoint the WAL into the database when this connection closes (the
        last one to close would): the WAL stays, whole, for the next open to read."""
        self._conn.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1)

    def close(self) -> None:
        """Close the connection (and its cursor); harmless twice."""
        self._conn.close()


@lru_cache(maxsize=256)
def _changes_rows(sql: str) -> bool:
    return sql.lstrip()[:7].upper().startswith(("INSERT", "UPDATE", "DELETE", "REPLACE"))
