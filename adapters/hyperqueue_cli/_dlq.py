"""``hyperqueue dlq``: the dead-letter queue (failed jobs whose attempts are used up).

``dlq list`` groups them by error fingerprint by default (the task, the error's type and
its first line with the varying parts taken out), so thousands of dead letters read as
the few kinds of failure they are; ``--flat`` lists the jobs. ``dlq replay`` runs the
matching ones again, as ``jobs retry --where`` does (the count confirmed first).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import msgspec
from rich import box
from rich.markup import escape
from rich.table import Table

import hyperqueue as hq

from ._bulk import bulk_action
from ._client import Client, server_options
from ._direct import database_options, direct, wants_direct
from ._output import ago, console, jobs_table, print_json

__all__ = ["dlq"]


@click.group()
def dlq() -> None:
    """The dead-letter queue: failed jobs, grouped by kind of failure; replay them."""


def _dead_query(query: str) -> str:
    return f"status:failed {query}".strip()


@dlq.command("list")
@click.option("--where", "query", default="", help="Only dead letters matching this query.")
@click.option("--flat", is_flag=True, help="List the jobs instead of their groups.")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@server_options
@database_options
def dlq_list(
    query: str,
    flat: bool,
    limit: int,
    as_json: bool,
    url: str,
    api_key: str | None,
    db: Path | None,
    dsn: str | None,
) -> None:
    """Failed jobs grouped by error fingerprint (count, task, error, first and last
    seen); `dlq replay --fingerprint FP` runs a group again."""
    rows: list[Any]
    if wants_direct(db, dsn):

        async def read(queue: hq.Queue) -> list[Any]:
            now = queue.clock.now()
            if flat:
                where = hq.JobFilter.parse(_dead_query(query), now=now)
                page = await queue.list_jobs(where=where, limit=limit)
                return [msgspec.to_builtins(job) for job in page.items]
            group_filter = hq.JobFilter.parse(query, now=now) if query else None
            groups = await queue.dead_letter_groups(group_filter, limit=limit)
            return [msgspec.to_builtins(group) for group in groups]

        rows = direct(db, dsn, read)
    else:
        with Client(url, api_key) as client:
            if flat:
                rows = client.get("/api/v1/jobs", q=_dead_query(query), limit=limit)["items"]
            else:
                rows = client.get("/api/v1/dead-letters/groups", q=query or None)["groups"]
                rows = rows[:limit]
    if as_json:
        print_json(rows)
    elif flat:
        out = console()
        out.print(jobs_table(rows, title=f"{len(rows)} dead letters", width=out.width))
    else:
        out = console()
        out.print(_groups_table(rows, out.width))


def _groups_table(groups: list[dict[str, Any]], width: int) -> Table:
    """A group a row; under 130 columns without the first time and the sample job."""
    total = sum(int(g["count"]) for g in groups)
    table = Table(
        title=f"{total:,} dead letters in {len(groups)} groups", box=box.SIMPLE_HEAD, pad_edge=False
    )
    columns = ["fingerprint", "count", "task", "error", "last"]
    if width >= 130:
        columns[4:4] = ["first"]
        columns.append("sample job")
    for column in columns:
        table.add_column(
            column,
            justify="right" if column == "count" else "left",
            no_wrap=column != "task",
            overflow="ellipsis",
        )
    for group in groups:
        error = f"{group['error_type']}: {group['message']}" if group["error_type"] else ""
        cells = {
            "fingerprint": group["fingerprint"],
            "count": f"{group['count']:,}",
            "task": escape(group["task"]),
            "error": escape(error or group["message"]),
            "first": ago(group["first_at"]),
            "last": ago(group["last_at"]),
            "sample job": group["sample_job_id"],
        }
        table.add_row(*(cells[c] for c in columns))
    return table


@dlq.command("replay")
@click.option("--where", "query", default="", help="Only dead letters matching this query.")
@click.option("--fingerprint", default=None, help="Only this group (from `dlq list`).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask to confirm.")
@click.option("--dry-run", is_flag=True, help="Only count the jobs it would replay.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@server_options
def replay(
    query: str,
    fingerprint: str | None,
    yes: bool,
    dry_run: bool,
    as_json: bool,
    url: str,
    api_key: str | None,
) -> None:
    """Run dead letters again with fresh attempts: all of them, a --fingerprint group,
    or those --where matches. Shows the exact count and asks first (--yes skips it)."""
    terms = [_dead_query(query)]
    if fingerprint:
        terms.append(f"fingerprint:{fingerprint}")
    with Client(url, api_key) as client:
        bulk_action(client, "retry", " ".join(terms), yes=yes, as_json=as_json, dry_run=dry_run)
