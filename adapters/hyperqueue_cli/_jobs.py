"""``hyperqueue jobs``: submit, list, show, cancel and retry jobs on a server (listing
and showing also straight from a database with ``--db`` / ``--dsn``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import msgspec

import hyperqueue as hq

from . import _exit
from ._bulk import bulk_action
from ._client import Client, server_options
from ._direct import database_options, direct, wants_direct
from ._output import console, jobs_table, print_json, show_job
from ._submit import submit_file

__all__ = ["jobs"]


@click.group()
def jobs() -> None:
    """Submit, find, inspect, cancel and retry jobs."""


def _json_option(name: str, value: str | None, kind: type) -> Any:
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint=name) from None
    if not isinstance(parsed, kind):
        raise click.BadParameter(f"must be a JSON {kind.__name__}", param_hint=name)
    return parsed


@jobs.command("submit")
@click.argument("task", required=False)
@click.option("--args", "args_json", help="Positional arguments, a JSON array: '[1, \"a\"]'.")
@click.option("--kwargs", "kwargs_json", help="Keyword arguments, a JSON object.")
@click.option("--queue", default=None, help="Named queue.  [default: the task's]")
@click.option("--priority", type=click.Choice(["critical", "high", "normal", "low"]), default=None)
@click.option("--delay", type=click.FloatRange(0), default=None, help="Seconds from now.")
@click.option("--key", default=None, help="Idempotency key: a repeated key gives the same job.")
@click.option(
    "--file",
    "file",
    type=click.File("r"),
    default=None,
    help='JSON lines, one job each ({"task": ..., "args": [...], ...}); - for stdin.',
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 1000),
    default=500,
    show_default=True,
    help="Jobs per request with --file.",
)
@click.option("--strict", is_flag=True, help="With --file: submit nothing if a line is bad.")
@click.option("--json", "as_json", is_flag=True, help="Print the job (or the summary) as JSON.")
@server_options
def submit(
    task: str | None,
    args_json: str | None,
    kwargs_json: str | None,
    queue: str | None,
    priority: str | None,
    delay: float | None,
    key: str | None,
    file: Any,
    batch_size: int,
    strict: bool,
    as_json: bool,
    url: str,
    api_key: str | None,
) -> None:
    """Submit a job of TASK, or every job of a JSON-lines --file (in batches, with a
    progress bar; a bad line is reported with its number and does not stop the others
    unless --strict). Prints the new job's id."""
    if (task is None) == (file is None):
        raise click.UsageError("give a TASK or --file, not both (and not neither)")
    with Client(url, api_key) as client:
        if file is not None:
            if args_json or kwargs_json or queue or priority or delay is not None or key:
                raise click.UsageError("--file takes each job's options from its line")
            submit_file(client, file, batch_size=batch_size, strict=strict, as_json=as_json)
            return
        options = {
            "args": _json_option("--args", args_json, list),
            "kwargs": _json_option("--kwargs", kwargs_json, dict),
            "queue": queue,
            "priority": priority,
            "delay": delay,
            "key": key,
        }
        body = {"task": task, **{k: v for k, v in options.items() if v is not None}}
        job = client.post("/api/v1/jobs", body)
    if as_json:
        print_json(job)
    else:
        click.echo(job["id"])


@jobs.command("list")
@click.argument("query", required=False, default="")
@click.option(
    "--limit",
    type=click.IntRange(1, 100_000),
    default=50,
    show_default=True,
    help="Most jobs to show (newest first).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of jobs.")
@server_options
@database_options
def list_jobs(
    query: str,
    limit: int,
    as_json: bool,
    url: str,
    api_key: str | None,
    db: Path | None,
    dsn: str | None,
) -> None:
    """Jobs matching QUERY, newest first: `status:failed queue:email task:send_*
    error:"Timeout" since:1h` (see docs/reference/cli.md)."""
    if wants_direct(db, dsn):
        items = direct(db, dsn, lambda q: _list_direct(q, query, limit))
    else:
        items = []
        cursor: str | None = None
        with Client(url, api_key) as client:
            while len(items) < limit:
                page = client.get(
                    "/api/v1/jobs",
                    q=query or None,
                    cursor=cursor,
                    limit=min(1000, limit - len(items)),
                )
                items.extend(page["items"])
                cursor = page.get("next_cursor")
                if not cursor:
                    break
    if as_json:
        print_json(items)
    else:
        title = f"{len(items)} jobs" + (f" matching {query!r}" if query else "")
        out = console()
        out.print(jobs_table(items, title=title, width=out.width))


async def _list_direct(queue: hq.Queue, query: str, limit: int) -> list[Any]:
    where = hq.JobFilter.parse(query, now=queue.clock.now()) if query else None
    items: list[Any] = []
    cursor: str | None = None
    while len(items) < limit:
        page = await queue.list_jobs(
            where=where, cursor=cursor, limit=min(1000, limit - len(items))
        )
        items.extend(msgspec.to_builtins(job) for job in page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    return items


@jobs.command("show")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
@server_options
@database_options
def show(
    job_id: str, as_json: bool, url: str, api_key: str | None, db: Path | None, dsn: str | None
) -> None:
    """One job with its arguments, result or error and traceback; exit 5 if none."""
    if wants_direct(db, dsn):

        async def read(queue: hq.Queue) -> Any:
            return msgspec.to_builtins(await queue.get(job_id))

        job = direct(db, dsn, read)
    else:
        with Client(url, api_key) as client:
            job = client.get(f"/api/v1/jobs/{job_id}")
    if as_json:
        print_json(job)
    else:
        show_job(job)


def _one_by_one(client: Client, action: str, ids: tuple[str, ...], as_json: bool) -> None:
    """``action`` on each id; every failure is reported and the worst exit status wins
    (409 for a job whose status does not allow it, 404 for an unknown id)."""
    done: list[Any] = []
    failures: list[dict[str, Any]] = []
    worst = _exit.OK
    for job_id in ids:
        response = client.send("POST", f"/api/v1/jobs/{job_id}/{action}")
        if response.is_success:
            done.append(response.json())
            if not as_json:
                click.echo(f"{action} {job_id}: {response.json()['status']}")
            continue
        error = client.error(response)
        if error.exit_code in (_exit.AUTH, _exit.UNREACHABLE, _exit.BUSY):
            raise error  # the same for every id: stop at the first
        worst = max(worst, error.exit_code)
        failures.append({"id": job_id, "error": error.message, "status_code": response.status_code})
        if not as_json:
            click.echo(f"{action} {job_id}: {error.message}", err=True)
    if as_json:
        print_json({"jobs": done, "errors": failures})
    if worst:
        raise SystemExit(worst)


def _mutation(action: str) -> Any:
    @click.argument("ids", nargs=-1)
    @click.option("--where", "query", default=None, help="Every job matching this query.")
    @click.option("--yes", "-y", is_flag=True, help="Do not ask to confirm a --where action.")
    @click.option("--dry-run", is_flag=True, help="With --where: only count the matching jobs.")
    @click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
    @server_options
    def command(
        ids: tuple[str, ...],
        query: str | None,
        yes: bool,
        dry_run: bool,
        as_json: bool,
        url: str,
        api_key: str | None,
    ) -> None:
        if bool(ids) == (query is not None):
            raise click.UsageError("give job IDs or --where QUERY (one of them)")
        with Client(url, api_key) as client:
            if query is not None:
                if not query.strip():
                    raise click.UsageError("--where needs a query; `status:pending` for example")
                bulk_action(client, action, query, yes=yes, as_json=as_json, dry_run=dry_run)
            else:
                _one_by_one(client, action, ids, as_json)

    return command


jobs.command(
    "cancel",
    help="Cancel pending or running jobs: by ID, or every job --where QUERY matches "
    "(the exact count is shown and confirmed first; --yes skips the question).",
)(_mutation("cancel"))
jobs.command(
    "retry",
    help="Run failed or cancelled jobs again: by ID, or every job --where QUERY matches "
    "(the exact count is shown and confirmed first; --yes skips the question).",
)(_mutation("retry"))
