"""``hyperqueue jobs submit --file jobs.jsonl``: many jobs, in batches, with a progress
bar and a summary.

Each line is one job as ``POST /api/v1/jobs`` takes it (``{"task": "add", "args": [1,
2], "queue": "q"}``); blank lines and lines starting with ``#`` are skipped. Every line is
checked here first with the server's own schema (:class:`hyperqueue_litestar.JobRequest`),
so a bad line is reported with its number and left out instead of failing its whole
batch; ``--strict`` submits nothing when any line is bad. The good lines go through
``POST /api/v1/jobs/batch``; an item the server refuses (unknown task, arguments that do
not fit) is reported with its line number too. Exit status 0 when every line made a job,
1 when some did not, 2 with ``--strict`` and a bad line.
"""

from __future__ import annotations

import json
from typing import IO, Any

import click
import msgspec
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from . import _exit
from ._client import Client
from ._exit import CliError
from ._output import err_console, print_json

__all__ = ["submit_file"]


def _read_lines(file: IO[str]) -> tuple[list[tuple[int, dict[str, Any]]], list[dict[str, Any]]]:
    """The good lines (number, body) and the bad ones (number, error)."""
    from hyperqueue_litestar import JobRequest

    good: list[tuple[int, dict[str, Any]]] = []
    bad: list[dict[str, Any]] = []
    for number, line in enumerate(file, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            body = json.loads(text)
            msgspec.convert(body, JobRequest)
        except msgspec.ValidationError as exc:
            bad.append({"line": number, "error": str(exc)})
            continue
        except ValueError as exc:
            bad.append({"line": number, "error": f"not JSON: {exc}"})
            continue
        good.append((number, body))
    return good, bad


def submit_file(
    client: Client, file: IO[str], *, batch_size: int, strict: bool, as_json: bool
) -> None:
    good, bad = _read_lines(file)
    if bad and strict:
        for item in bad:
            click.echo(f"line {item['line']}: {item['error']}", err=True)
        raise CliError(f"{len(bad)} bad lines (--strict): nothing was submitted", _exit.USAGE)
    created = existing = 0
    refused: list[dict[str, Any]] = []
    ids: list[str] = []
    progress = Progress(
        TextColumn("submitting"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console(),
        transient=False,
    )
    with progress:
        bar = progress.add_task("submit", total=len(good))
        for start in range(0, len(good), batch_size):
            chunk = good[start : start + batch_size]
            try:
                answer = client.post("/api/v1/jobs/batch", {"jobs": [body for _, body in chunk]})
            except CliError as exc:
                if not created + existing:
                    raise
                raise CliError(
                    f"{exc.message} ({created + existing:,} jobs of the lines before line "
                    f"{chunk[0][0]} were submitted)",
                    exc.exit_code,
                ) from None
            for (number, _), item in zip(chunk, answer["items"], strict=True):
                if item["status_code"] in (200, 201):
                    ids.append(item["job"]["id"])
                    if item["status_code"] == 201:
                        created += 1
                    else:
                        existing += 1
                else:
                    refused.append({"line": number, "error": item.get("detail")})
            progress.update(bar, advance=len(chunk))
    problems = sorted(bad + refused, key=lambda item: int(item["line"]))
    summary = {
        "submitted": created + existing,
        "created": created,
        "existing": existing,
        "refused": len(refused),
        "bad_lines": len(bad),
        "errors": problems,
        "ids": ids,
    }
    if as_json:
        print_json(summary)
    else:
        for item in problems:
            click.echo(f"line {item['line']}: {item['error']}", err=True)
        click.echo(
            f"submitted {created + existing:,} jobs ({created:,} new, {existing:,} existing); "
            f"{len(refused):,} refused by the server; {len(bad):,} bad lines",
            err=True,
        )
    if problems:
        raise SystemExit(_exit.FAILED)
