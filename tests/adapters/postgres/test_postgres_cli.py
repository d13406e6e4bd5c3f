"""``hyperqueue status|jobs list|jobs show|dlq list --dsn``: the operator commands read a
PostgreSQL database directly, with no server."""

from __future__ import annotations

import json
import os
from typing import Any

import anyio
import pytest
from click.testing import CliRunner

import hyperqueue as hq
from hyperqueue_cli import main
from hyperqueue_postgres import PostgresStorage


async def _fill(dsn: str) -> tuple[str, str]:
    """One completed job and one dead letter on ``dsn``; their ids."""
    queue = hq.Queue(PostgresStorage(dsn))

    @queue.task
    async def add(a: int, b: int) -> int:
        return a + b

    @queue.task
    async def boom() -> None:
        raise ValueError("disk 93% full")

    async with queue:
        good = await add.options(queue="math").enqueue(1, 2)
        bad = await boom.enqueue()
        with anyio.fail_after(20):
            async with queue.worker(concurrency=2):
                await queue.wait(good.id)
                await queue.wait(bad.id)
    return good.id, bad.id


def test_reads_the_database_with_no_server(pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("HYPERQUEUE_"):
            monkeypatch.delenv(name)
    good, bad = anyio.run(_fill, pg_dsn)
    runner = CliRunner()

    def read(*args: str) -> Any:
        result = runner.invoke(main, [*args, "--dsn", pg_dsn, "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    status = read("status")
    figures = {q["queue"]: (q["completed"], q["failed"]) for q in status["queues"]}
    assert figures == {"math": (1, 0), "default": (0, 1)}
    listed = read("jobs", "list", "status:completed")
    assert [job["id"] for job in listed] == [good]
    shown = read("jobs", "show", bad)
    assert shown["status"] == "failed" and "disk 93% full" in shown["error"]
    [group] = read("dlq", "list")
    assert (group["count"], group["task"], group["sample_job_id"]) == (1, "boom", bad)
    missing = runner.invoke(main, ["jobs", "show", "nope", "--dsn", pg_dsn])
    assert missing.exit_code == 5
