"""Finding the user's queue from ``module:attribute``, with errors that say what to fix."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

import hyperqueue as hq
import hyperqueue.abc

if TYPE_CHECKING:
    from hyperqueue_litestar import StorageSettings

__all__ = ["MEMORY_WARNING", "STORAGE_EXIT", "check_storage", "load_queue", "use_storage"]

STORAGE_EXIT = 3
"""Exit status of ``serve`` and ``worker`` when the storage cannot be opened."""


def load_queue(spec: str) -> hq.Queue:
    """Import ``module:attribute`` (the current directory is importable) and check that
    it names a :class:`hyperqueue.Queue`."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise click.BadParameter(
            f"{spec!r} is not of the form module:attribute (for example myapp.jobs:queue)",
            param_hint="APP",
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise click.BadParameter(
                f"cannot import module {module_name!r}: no such module (run from the folder "
                "that contains it, or install it)",
                param_hint="APP",
            ) from None
        raise
    value = module
    for part in attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise click.BadParameter(
                f"module {module_name!r} has no attribute {attribute!r}", param_hint="APP"
            ) from None
    if not isinstance(value, hq.Queue):
        raise click.BadParameter(
            f"{spec} is a {type(value).__name__}, not a hyperqueue.Queue", param_hint="APP"
        )
    return value


MEMORY_WARNING = (
    "storage.kind = 'memory': jobs live in this process only; nothing survives a restart "
    "and no other process (hyperqueue worker, another server) can reach them"
)


def use_storage(
    queue: hq.Queue, settings: StorageSettings, db: Path | None, dsn: str | None = None
) -> tuple[str, str | None]:
    """Put the queue on the configured storage; returns where the state lives (for
    people) and a warning to show, if any.

    ``--db`` (SQLite at that file) or ``--dsn`` (PostgreSQL) wins. A queue built with its
    own storage keeps it unless the configuration's ``storage`` differs from the
    defaults. Otherwise ``storage.kind`` decides: ``sqlite`` puts the queue on
    ``SQLiteStorage(storage.path)`` (``./hyperqueue.db`` by default), ``postgres`` on
    ``PostgresStorage(storage.dsn)``, ``memory`` keeps it in this process.
    """
    from hyperqueue_litestar import StorageSettings

    if db is not None and dsn is not None:
        raise click.UsageError("give --db (SQLite) or --dsn (PostgreSQL), not both")
    own = not isinstance(queue.storage, hq.MemoryStorage)
    if db is None and dsn is None and own and settings == StorageSettings():
        return repr(queue.storage), None
    if dsn is None and db is None and settings.kind == "postgres":
        dsn = settings.dsn
    if dsn is not None:
        try:
            from hyperqueue_postgres import PostgresStorage
        except ImportError:
            raise click.UsageError(
                "PostgreSQL needs the postgres extra: pip install 'hyperqueue-jobs[postgres]'"
            ) from None
        queue.storage = PostgresStorage(dsn)
        return f"PostgreSQL {queue.storage!r}", None
    if db is None and settings.kind == "memory":
        if own:
            queue.storage = hq.MemoryStorage()
        return "memory (this process only)", MEMORY_WARNING
    from hyperqueue_sqlite import SQLiteStorage

    path = db if db is not None else Path(settings.path or "hyperqueue.db")
    queue.storage = SQLiteStorage(path)
    return f"SQLite file {path.resolve()}", None


def check_storage(storage: hq.abc.Storage, command: str) -> None:
    """Open ``storage`` once and close it, before anything listens or prints that it
    serves: a storage that cannot work (read-only, corrupt, locked, a full disk) ends
    the command with one line (what, the path, the problem, what to do) and exit
    status :data:`STORAGE_EXIT`, instead of a traceback after "serving on"."""
    import anyio

    async def probe() -> None:
        await storage.open()
        await storage.aclose()

    try:
        anyio.run(probe)
    except hq.StorageError as exc:
        click.echo(f"hyperqueue {command}: cannot open the storage: {exc}", err=True)
        raise SystemExit(STORAGE_EXIT) from None
