"""Reading a database with no server: ``--db`` (SQLite file) or ``--dsn`` (PostgreSQL).

For when the server is down, or was never run (a worker-only deployment): ``status``,
``jobs list``, ``jobs show`` and ``dlq list`` open the storage themselves, through a
:class:`hyperqueue.Queue` with no tasks, and answer the same JSON as the server would
(job JSON is :class:`hyperqueue.Job`'s fields in both). They only read: no worker runs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import click

import hyperqueue as hq

from . import _exit
from ._exit import CliError

__all__ = ["database_options", "direct", "wants_direct"]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def database_options(command: F) -> F:
    """``--db`` and ``--dsn``: read the database directly instead of asking a server."""
    command = click.option(
        "--dsn",
        default=None,
        help="Read this PostgreSQL database directly, with no server.",
    )(command)
    return click.option(
        "--db",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Read this SQLite file directly, with no server.",
    )(command)


def wants_direct(db: Path | None, dsn: str | None) -> bool:
    if db is not None and dsn is not None:
        raise click.UsageError("give --db (SQLite) or --dsn (PostgreSQL), not both")
    return db is not None or dsn is not None


def _storage(db: Path | None, dsn: str | None) -> hq.abc.Storage:
    if dsn is not None:
        try:
            from hyperqueue_postgres import PostgresStorage
        except ImportError:
            raise click.UsageError(
                "--dsn needs the postgres extra: pip install 'hyperqueue-jobs[postgres]'"
            ) from None
        return PostgresStorage(dsn)
    assert db is not None
    if not db.is_file():  # SQLite would create an empty one: a typo would show no jobs
        raise CliError(f"no database at {db}", _exit.UNREACHABLE)
    from hyperqueue_sqlite import SQLiteStorage

    return SQLiteStorage(db)


def direct(db: Path | None, dsn: str | None, read: Callable[[hq.Queue], Awaitable[T]]) -> T:
    """``read(queue)`` on a queue over the database; a storage that cannot be opened is
    exit status 3, a missing job 5, a bad option 2."""
    storage = _storage(db, dsn)

    async def run() -> T:
        queue = hq.Queue(storage)  # opened alone: no event relay, no worker
        await queue.open()
        try:
            return await read(queue)
        finally:
            await queue.aclose()

    try:
        return anyio.run(run)
    except hq.StorageError as exc:
        raise CliError(f"cannot open the database: {exc}", _exit.UNREACHABLE) from None
    except hq.JobNotFound as exc:
        raise CliError(str(exc), _exit.NOT_FOUND) from None
    except (hq.OptionError, ValueError) as exc:
        raise CliError(str(exc), _exit.USAGE) from None
