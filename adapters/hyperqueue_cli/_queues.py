"""``hyperqueue queues``: the named queues, and pausing or resuming one for every worker.

``queues list`` shows each queue's jobs by status and whether it is paused; ``queues
pause NAME`` stops every worker, in every process and host on the storage, from claiming
its jobs (jobs still enqueue, running ones finish) and ``queues resume NAME`` lets them
claim again. Each asks the server (operator role to change), or with ``--db``/``--dsn``
the database itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import click
from rich import box
from rich.markup import escape
from rich.table import Table

import hyperqueue as hq

from ._client import Client, server_options
from ._direct import database_options, direct, wants_direct
from ._output import console, print_json

__all__ = ["queues"]

_STATUSES = ("pending", "running", "completed", "failed", "cancelled")


@click.group()
def queues() -> None:
    """Named queues: their jobs by status; pause and resume one everywhere."""


async def _read_rows(queue: hq.Queue) -> list[dict[str, Any]]:
    """The rows ``GET /api/v1/queues`` answers, read from the database."""
    stats = await queue.stats()
    paused = set(await queue.paused_queues())
    rows: list[dict[str, Any]] = [
        {
            "queue": name,
            **{status: getattr(s, status) for status in _STATUSES},
            "total": s.total,
            "unserved": s.unserved,
            "paused": name in paused,
        }
        for name, s in stats.items()
    ]
    rows += [
        {"queue": name, **dict.fromkeys(_STATUSES, 0), "total": 0, "unserved": 0, "paused": True}
        for name in sorted(paused - stats.keys())
    ]
    return rows


@queues.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@server_options
@database_options
def queues_list(
    as_json: bool, url: str, api_key: str | None, db: Path | None, dsn: str | None
) -> None:
    """Each queue's jobs by status, and whether it is paused."""
    rows: list[dict[str, Any]]
    if wants_direct(db, dsn):
        rows = direct(db, dsn, _read_rows)
    else:
        with Client(url, api_key) as client:
            rows = client.get("/api/v1/queues")["queues"]
    rows.sort(key=lambda row: str(row["queue"]))
    if as_json:
        print_json(rows)
        return
    table = Table(title=f"{len(rows)} queues", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("queue", overflow="fold")
    for column in _STATUSES:
        table.add_column(column, justify="right")
    table.add_column("state")
    for row in rows:
        state = "[yellow]paused[/]" if row.get("paused") else "active"
        table.add_row(escape(str(row["queue"])), *(f"{int(row[s]):,}" for s in _STATUSES), state)
    console().print(table)


def _change(
    name: str,
    *,
    paused: bool,
    url: str,
    api_key: str | None,
    db: Path | None,
    dsn: str | None,
    as_json: bool,
) -> None:
    verb = "pause" if paused else "resume"
    if wants_direct(db, dsn):

        async def change(queue: hq.Queue) -> None:
            await (queue.pause_queue(name) if paused else queue.resume_queue(name))

        direct(db, dsn, change)
    else:
        with Client(url, api_key) as client:
            client.post(f"/api/v1/queues/{quote(name, safe='')}/{verb}")
    if as_json:
        print_json({"queue": name, "paused": paused})
    else:
        click.echo(f"queue {name} {'paused' if paused else 'resumed'}")


@queues.command("pause")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@server_options
@database_options
def pause(
    name: str, as_json: bool, url: str, api_key: str | None, db: Path | None, dsn: str | None
) -> None:
    """Stop every worker, in every process, from claiming NAME's jobs (jobs still
    enqueue; running ones finish). Harmless when it is paused already."""
    _change(name, paused=True, url=url, api_key=api_key, db=db, dsn=dsn, as_json=as_json)


@queues.command("resume")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@server_options
@database_options
def resume(
    name: str, as_json: bool, url: str, api_key: str | None, db: Path | None, dsn: str | None
) -> None:
    """Let workers claim NAME's jobs again; idle ones wake at once."""
    _change(name, paused=False, url=url, api_key=api_key, db=db, dsn=dsn, as_json=as_json)
