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
from hyperqueue_sqlite._driver import Connection

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
    await storage.claim(None, limit=7, now=T0, lease=30, worker="w")
    params: dict[str, object] = {f"q{i}": "default" for i in range(pairs)}
    params.update({f"t{i}": f"t{i}" for i in range(pairs)})
    read = {"now": T0, "size0": 2, "size1": 1}
    read["lines0"] = '[["default", "t", 2, "tenant-1"]]'
    read["lines1"] = '[["default", "t", 2, null]]'
    for sql, values, index in (
        (_fair.lines_sql(pairs) + "SELECT * FROM lines", params, "jobs_ready"),
        (_fair.read_sql(2), read, "jobs_ready"),
        (_fair.RUNNING_SQL, {}, "jobs_tenant"),
        (_sql._next_run_sql(pairs, True), params, "jobs_ready"),
    ):
        steps = plan(storage.path, sql, values)
        assert not [step for step in steps if FULL_SCAN.match(step)], steps
        assert any(index in step for step in steps), steps
        if index == "jobs_ready":  # not jobs_tenant, which would step over other tasks
            assert not any("jobs_tenant" in step for step in steps), steps


async def test_running_counts_read_each_tenant_by_seeks(storage: SQLiteStorage) -> None:
    """A tenant's running jobs are counted over its range of jobs_tenant (tenant and
    status), not by stepping over its pending backlog."""
    steps = plan(storage.path, _fair.RUNNING_SQL, {})
    counts = [step for step in steps if "jobs_tenant" in step and "status=?" in step]
    assert counts and all("tenant=?" in step for step in counts), steps


def test_sizes_fill_the_lines_from_their_running_jobs() -> None:
    """A claim reads from each line the jobs it takes if the lines are long, plus one:
    lines with more running jobs start higher and give fewer."""
    assert _fair.sizes({(2, "a"): 0, (2, "b"): 0, (2, None): 3}, 1) == {
        (2, "a"): 2,
        (2, "b"): 2,
        (2, None): 1,
    }
    # a claim of 10 over lines starting at k = 0, 2, 1: up to k = 3 they hold 4 + 2 + 3
    # = 9 jobs, up to k = 4 they hold 5 + 3 + 4 = 12: it reads those, plus a witness
    assert _fair.sizes({(2, "a"): 0, (2, "b"): 2, (2, "c"): 1}, 10) == {
        (2, "a"): 6,
        (2, "b"): 4,
        (2, "c"): 5,
    }
    assert _fair.sizes({(0, "a"): 0, (2, "a"): 0}, 3) == {(0, "a"): 4, (2, "a"): 4}


async def test_claims_in_one_transaction_count_each_others_running_jobs(
    tmp_path: Path,
) -> None:
    """Claims that share a group commit see the jobs the earlier ones claimed as
    running, untenanted ones included (task_counts is written at the commit)."""
    path = tmp_path / "jobs.db"
    storage = SQLiteStorage(path)
    await storage.open()
    first = [hq.Job(id=new_id(T0), task="t", created_at=T0, run_at=T0) for _ in range(2)]
    a = [hq.Job(id=new_id(T0), task="t", tenant="A", created_at=T0, run_at=T0) for _ in range(2)]
    await storage.enqueue([*first, *a], now=T0, key_ttl=None)
    await storage.aclose()
    conn = Connection(path)
    try:
        ops = [_sql.Op(_sql.claim, (_sql.Claimed(), None, 1, T0, 30.0, "w")) for _ in range(3)]
        _sql.apply_batch(conn, ops)
    finally:
        conn.close()
    # untenanted 0 and A 0 running: first[0] (older); then untenanted 1, A 0: a[0];
    # then both 1: first[1] (older)
    assert [op.result[0].id for op in ops] == [first[0].id, a[0].id, first[1].id]


async def test_the_fifo_claim_reads_the_untenanted_range_in_order(
    storage: SQLiteStorage,
) -> None:
    """With no job of a tenant pending, a claim is the plain FIFO of before: one range
    of jobs_ready per queue, task and priority, read in order (no sort per range)."""
    params = {"q0": "default", "t0": "t", "now": T0, "until": T0, "worker": "w", "limit": 10}
    steps = plan(storage.path, _sql._pick_json(1), params)
    ranges = [step for step in steps if "jobs_ready" in step]
    assert len(ranges) == 4 and all("tenant=?" in step for step in ranges), steps
    assert sum("TEMP B-TREE" in step for step in steps) == 1, steps  # the merge of ranges
