"""``hyperqueue insights``: what the queue did over a recent window, from the server's
``GET /api/v1/insights`` (throughput, failure rate, lag, wait and run latencies, the
most failing, the slowest and the most throttled tasks, breaker trips), with a small chart
per bucket. "Throttled" jobs were held back by a rate limit or an open breaker without
spending an attempt (``job.deferred`` in the event log, counted across every process)."""

from __future__ import annotations

import re
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from ._client import Client, server_options
from ._output import console, duration, print_json

__all__ = ["insights", "parse_window"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_WINDOW = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_BARS = " ▁▂▃▄▅▆▇█"


def parse_window(text: str) -> float:
    """``90s``, ``15m``, ``1h``, ``7d`` or plain seconds."""
    match = _WINDOW.match(text.strip())
    if match is None:
        raise click.BadParameter(
            f"{text!r} is not a duration (90s, 15m, 1h, 7d)", param_hint="--window"
        )
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def sparkline(values: list[int]) -> str:
    """One block character per value, scaled to the largest."""
    top = max(values, default=0)
    if top == 0:
        return _BARS[0] * len(values)
    return "".join(_BARS[round(v / top * (len(_BARS) - 1))] for v in values)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


@click.command()
@click.option("--window", default="1h", show_default=True, help="How far back: 15m, 1h, 7d.")
@click.option(
    "--buckets",
    type=click.IntRange(1, 500),
    default=60,
    show_default=True,
    help="Time slices of the chart.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the server's JSON document.")
@server_options
def insights(window: str, buckets: int, as_json: bool, url: str, api_key: str | None) -> None:
    """Throughput, failure rate, lag (age of the oldest due pending job), wait and run
    latency p50/p95, the most failing, the slowest and the most throttled tasks (held
    back by a rate limit or an open breaker), and breaker trips, over the last --window."""
    seconds = parse_window(window)
    with Client(url, api_key) as client:
        document = client.get("/api/v1/insights", window=seconds, buckets=buckets)
    if as_json:
        print_json(document)
        return
    _render(document, window)


def _render(doc: dict[str, Any], window: str) -> None:
    out = console()
    s = doc["summary"]
    head = Table.grid(padding=(0, 3))
    for _ in range(4):
        head.add_column()
    head.add_row(
        f"completed [green]{s['completed']:,}[/]",
        f"failed [red]{s['failed']:,}[/]",
        f"retried {s['retried']:,}",
        f"throughput {s['throughput_per_minute']:.1f}/min",
    )
    head.add_row(
        f"failure rate {_percent(s['failure_rate'])}",
        f"pending {s['pending']:,}",
        f"running {s['running']:,}",
        f"lag {duration(s['oldest_pending_age'])}",
    )
    head.add_row(
        f"wait p50 {duration(s['wait_p50'])}",
        f"wait p95 {duration(s['wait_p95'])}",
        f"run p50 {duration(s['run_p50'])}",
        f"run p95 {duration(s['run_p95'])}",
    )
    title = f"insights over the last {window}"
    if doc.get("truncated"):
        title += " (busiest window: newest events only)"
    out.print(f"[bold]{title}[/]")
    out.print(head)
    series = doc["series"]
    out.print(f"completed [green]{sparkline([b['completed'] for b in series])}[/]")
    out.print(f"failed    [red]{sparkline([b['failed'] for b in series])}[/]")
    # servers older than issue 13 send no deferral figures: print nothing for them
    deferred = s.get("deferred")
    if deferred is not None:
        out.print(f"throttled {sparkline([b.get('deferred', 0) for b in series])}")
        out.print(f"throttled {deferred:,}: held back by a rate limit or an open breaker")
    if doc["top_failing"]:
        table = Table(title="most failing tasks")
        for column in ("task", "failed", "completed", "failure rate", "last error"):
            table.add_column(column)
        for row in doc["top_failing"]:
            table.add_row(
                escape(row["task"]),
                f"{row['failed']:,}",
                f"{row['completed']:,}",
                _percent(row["failure_rate"]),
                escape((row.get("last_error") or "")[:60]),
            )
        out.print(table)
    if doc["slowest"]:
        table = Table(title="slowest tasks")
        for column in ("task", "runs", "p50", "p95", "max"):
            table.add_column(column)
        for row in doc["slowest"]:
            table.add_row(
                escape(row["task"]),
                f"{row['count']:,}",
                duration(row["run_p50"]),
                duration(row["run_p95"]),
                duration(row["run_max"]),
            )
        out.print(table)
    if doc.get("most_throttled"):
        table = Table(title="most throttled tasks", caption="held back; no attempt spent")
        for column in ("task", "held back", "runs", "share"):
            table.add_column(column)
        for row in doc["most_throttled"]:
            table.add_row(
                escape(row["task"]),
                f"{row['deferred']:,}",
                f"{row['runs']:,}",
                _percent(row["share"]),
            )
        out.print(table)
    if doc["breakers"]:
        table = Table(title="circuit breakers")
        for column in ("breaker", "state", "trips"):
            table.add_column(column)
        for row in doc["breakers"]:
            table.add_row(escape(row["name"]), row["state"], str(row["trips"]))
        out.print(table)
