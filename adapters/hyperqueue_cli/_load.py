"""Finding the user's queue from ``module:attribute``, with errors that say what to fix."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import click

import hyperqueue as hq

__all__ = ["load_queue", "use_storage"]


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


def use_storage(queue: hq.Queue, db: Path | None) -> str:
    """Put the queue on SQLite at ``db`` (or ./hyperqueue.db when the queue only has
    memory storage); returns a description of where the state lives."""
    if db is None and not isinstance(queue.storage, hq.MemoryStorage):
        return repr(queue.storage)
    from hyperqueue_sqlite import SQLiteStorage

    path = db if db is not None else Path("hyperqueue.db")
    queue.storage = SQLiteStorage(path)
    return f"SQLite file {path.resolve()}"
