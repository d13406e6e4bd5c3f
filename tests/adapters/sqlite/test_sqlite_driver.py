"""The driver: apsw behind the part of the ``sqlite3`` interface the transactions use."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import apsw
import pytest

from hyperqueue_sqlite import _driver
from hyperqueue_sqlite._health import wal_reset_bug


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[_driver.Connection]:
    conn = _driver.Connection(tmp_path / "t.db", busy_timeout=0.1)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)")
    yield conn
    conn.close()
    conn.close()  # harmless twice


def test_the_library_in_use_is_apsws_and_has_no_wal_reset_bug() -> None:
    assert _driver.sqlite_version() == apsw.sqlite_lib_version()
    assert not wal_reset_bug(_driver.sqlite_version())


def test_parameters_rows_and_rowcount(conn: _driver.Connection) -> None:
    assert conn.execute("INSERT INTO t (name) VALUES (?)", ("a",)).rowcount == 1
    conn.executemany("INSERT INTO t (name) VALUES (:name)", [{"name": "b"}, {"name": "c"}])
    result = conn.execute("SELECT id, name FROM t WHERE id > :after ORDER BY id", {"after": 0})
    assert result.rowcount == -1  # not a change, as in sqlite3
    assert result.fetchone() == (1, "a")
    assert result.fetchall() == [(2, "b"), (3, "c")]
    assert result.fetchone() is None
    assert list(conn.execute("SELECT count(*) FROM t")) == [(3,)]
    assert conn.execute("UPDATE t SET name = 'x' WHERE id > 1").rowcount == 2
    assert conn.execute("UPDATE t SET name = 'x' WHERE id > 9").rowcount == 0
    returning = conn.execute("DELETE FROM t WHERE id < 3 RETURNING id")
    assert returning.fetchall() == [(1,), (2,)] and returning.rowcount == 2
    many = conn.executemany("UPDATE t SET name = ? WHERE id = ?", [("y", 3), ("z", 4)])
    assert many.rowcount == 1


def test_transactions_are_explicit(conn: _driver.Connection) -> None:
    assert not conn.in_transaction  # autocommit, as sqlite3 with isolation_level=None
    conn.execute("BEGIN IMMEDIATE")
    assert conn.in_transaction
    conn.execute("INSERT INTO t (name) VALUES ('a')")
    conn.execute("ROLLBACK")
    assert not conn.in_transaction
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_errors_are_database_errors(conn: _driver.Connection, tmp_path: Path) -> None:
    conn.execute("INSERT INTO t (id) VALUES (1)")
    with pytest.raises(_driver.DatabaseError, match="UNIQUE"):
        conn.execute("INSERT INTO t (id) VALUES (1)")
    # the connection (and its reused cursor) goes on after an error
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (1,)
    other = _driver.Connection(tmp_path / "t.db", busy_timeout=0.05)
    try:
        conn.execute("BEGIN IMMEDIATE")
        with pytest.raises(_driver.BusyError):
            other.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
    finally:
        other.close()


def test_a_missing_file_is_created(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    conn = _driver.Connection(path)
    try:
        conn.execute("CREATE TABLE t (x)")
    finally:
        conn.close()
    assert path.exists()


@pytest.mark.parametrize("count", [1, 3, 64, 513, 1100])
def test_execute_values_inserts_every_row_in_order(conn: _driver.Connection, count: int) -> None:
    rows = [(n, f"name {n}") for n in range(count)]
    conn.execute_values("INSERT INTO t (id, name) VALUES (?, ?)", rows)
    assert conn.execute("SELECT id, name FROM t ORDER BY rowid").fetchall() == rows


def test_execute_values_keeps_a_conflict_clause_and_the_parameter_limit(
    conn: _driver.Connection,
) -> None:
    conn.execute("CREATE TABLE counts (k TEXT PRIMARY KEY, n INTEGER)")
    upsert = (
        "INSERT INTO counts (k, n) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET n = n + excluded.n"
    )
    conn.execute_values(upsert, [("a", 1), ("b", 2)])
    conn.execute_values(upsert, [("a", 10), ("c", 3)])
    assert conn.execute("SELECT k, n FROM counts ORDER BY k").fetchall() == [
        ("a", 11), ("b", 2), ("c", 3)
    ]  # fmt: skip
    # 100 columns: 327 rows fit in SQLite's 32,766 parameters, so 1,000 take several
    columns = ", ".join(f"c{i}" for i in range(100))
    conn.execute(f"CREATE TABLE wide ({columns})")
    marks = ", ".join("?" * 100)
    wide = [tuple(range(n, n + 100)) for n in range(1000)]
    conn.execute_values(f"INSERT INTO wide ({columns}) VALUES ({marks})", wide)
    assert conn.execute(f"SELECT {columns} FROM wide ORDER BY rowid").fetchall() == wide
