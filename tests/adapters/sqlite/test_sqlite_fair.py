"""Fair share in SQLite claims (the order itself is pinned by the storage contract):
the statements read the claim index by seeks, never the jobs table end to end."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import apsw
import pytest

import hyperqueue as hq
from hyperqueue._ids import IdFactory
from hyperqueue_sqlite import SQLiteStorage, _fair, _sql

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0
new_id = IdFactory()
# a step that reads the jobs table (under any of the statements' aliases) without an index
FULL_SCAN = re.compile(r"^SCAN (jobs|j|d)\b")


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[SQLiteStorage]:
    storage = SQLiteStorage(tmp_path / "jobs.db")
    await storage.open()
    yield storage
    await storage.aclose()


def plan(path: Path, sql: str, params: dict[str, object]) -> list[str]:
    conn = apsw.Connection(str(path))
    try:
        return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]
    finally:
        conn.close()


@pytest.mark.parametrize("pairs", [1, 3, 12])
async def test_fair_statements_seek_the_claim_index(storage: SQLiteStorage, pairs: int) -> None:
    jobs = [
        hq.Job(id=new_id(T0), task="t", tenant=f"tenant-{n % 5}", created_at=T0, run_at=T0)
        for n in range(50)
    ]
    await storage.enqueue(jobs, now=T0, key_ttl=None)
    params: dict[str, object] = {f"q{i}": "default" for i in range(pairs)}
    params.update({f"t{i}": f"t{i}" for i in range(pairs)})
    claim = {**params, "now": T0, "limit": 10, "size": None, "shut": "[]"}
    for sql, values in (
        (_fair._candidates_sql(pairs), claim),
        (_sql._next_run_sql(pairs, True), params),
    ):
        steps = plan(storage.path, sql, values)
        assert not [step for step in steps if FULL_SCAN.match(step)], steps
        assert any("jobs_ready" in step for step in steps), steps


async def test_the_fifo_claim_reads_the_untenanted_range_in_order(
    storage: SQLiteStorage,
) -> None:
    """With no job of a tenant pending, a claim is the plain FIFO of before: one range
    of jobs_ready per queue, task and priority, read in order (no sort per range)."""
    params = {"q0": "default", "t0": "t", "now": T0, "until": T0, "worker": "w", "limit": 10}
    steps = plan(storage.path, _sql._claim_sql(1), params)
    ranges = [step for step in steps if "jobs_ready" in step]
    assert len(ranges) == 4 and all("tenant=?" in step for step in ranges), steps
    assert sum("TEMP B-TREE" in step for step in steps) == 1, steps  # the merge of ranges
