"""How the CLI shows things: rich tables for people, plain JSON for scripts.

Tables go to stdout through :func:`console`; with ``--json`` a command prints exactly one
JSON document on stdout (and nothing else), so ``| jq`` always works. Messages for the
user (progress, summaries of an action) go to stderr.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

__all__ = [
    "STATUS_COLOURS",
    "ago",
    "console",
    "duration",
    "err_console",
    "jobs_table",
    "print_json",
    "show_job",
]

STATUS_COLOURS = {
    "pending": "cyan",
    "running": "blue",
    "completed": "green",
    "failed": "red",
    "cancelled": "yellow",
    "blocked": "magenta",
}


def console() -> Console:
    return Console(soft_wrap=False)


def err_console() -> Console:
    return Console(stderr=True)


def print_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2, default=str))


def ago(at: float | None, now: float | None = None) -> str:
    """``12s ago``, ``3m ago``, ``2h ago``, ``4d ago``; ``-`` for none, ``in 5s`` ahead."""
    if at is None:
        return "-"
    delta = (time.time() if now is None else now) - at
    text = duration(abs(delta))
    return f"{text} ago" if delta >= 0 else f"in {text}"


def duration(seconds: float | None) -> str:
    """A short human duration: ``850ms``, ``12.5s``, ``3m``, ``2h``, ``4d``."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _status(value: str) -> str:
    return f"[{STATUS_COLOURS.get(value, 'white')}]{value}[/]"


def jobs_table(
    jobs: Iterable[Mapping[str, Any]], *, title: str | None = None, width: int = 80
) -> Table:
    """Jobs a row each; under 110 columns only id, task, status and age (ids are long,
    and whole ids are what people copy)."""
    wide = width >= 110
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    columns: tuple[str, ...] = ("id", "task", "queue", "status", "tries", "created", "error")
    if not wide:
        columns = ("id", "task", "status", "created")
    for column in columns:
        table.add_column(
            column,
            no_wrap=column in ("id", "status", "created", "error"),
            overflow="ellipsis",
            max_width=40 if column == "error" else None,
        )
    now = time.time()
    for job in jobs:
        error = (job.get("error") or "").splitlines()
        cells = {
            "id": str(job["id"]),
            "task": escape(str(job["task"])),
            "queue": escape(str(job.get("queue", ""))),
            "status": _status(str(job["status"])),
            "tries": f"{job.get('attempts', 0)}/{job.get('max_attempts', 1)}",
            "created": ago(job.get("created_at"), now),
            "error": escape(error[0]) if error else "",
        }
        table.add_row(*(cells[c] for c in columns))
    return table


def show_job(job: Mapping[str, Any]) -> None:
    """One job, field by field, then its error and traceback."""
    out = console()
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    now = time.time()
    rows: list[tuple[str, str]] = [
        ("id", str(job["id"])),
        ("task", escape(str(job["task"]))),
        ("queue", escape(str(job.get("queue")))),
        ("status", _status(str(job["status"]))),
        ("priority", str(job.get("priority"))),
        ("attempts", f"{job.get('attempts')}/{job.get('max_attempts')}"),
        ("args", escape(json.dumps(job.get("args", [])))),
        ("kwargs", escape(json.dumps(job.get("kwargs", {})))),
        ("created", ago(job.get("created_at"), now)),
        ("run at", ago(job.get("run_at"), now)),
        ("started", ago(job.get("started_at"), now)),
        ("finished", ago(job.get("finished_at"), now)),
    ]
    rows.extend(
        (name, escape(str(job[name])))
        for name in ("tenant", "key", "worker", "progress")
        if job.get(name) is not None
    )
    if job.get("status") == "completed":
        rows.append(("result", escape(json.dumps(job.get("result"), default=str))))
    if job.get("error"):
        rows.append(("error", f"[red]{escape(str(job['error']))}[/]"))
    for name, value in rows:
        table.add_row(name, value)
    out.print(table)
    if job.get("traceback"):
        out.print(escape(str(job["traceback"])), style="dim", highlight=False)
