"""Fair share between tenants in a claim: which due jobs it takes, in which order.

The claim order is (priority, k, run_at, seq), where k is a job's place among the due
jobs of its tenant and priority (jobs without a tenant are one tenant): a claim takes
every tenant's first job before any tenant's second. A tenant's line is read where it
is one range of the jobs_ready index (queue, task, priority, tenant, run_at, seq), and
the tenants themselves are found by a loose index scan (one seek each), so the cost of
a claim grows with the tenants and its size, never with the jobs a tenant has waiting.

With L lines, the first n jobs in claim order take about n / L from each line when the
lines are long. So a claim first reads that many from each line plus one, the witness
that the line may go on; if no witness comes up among the jobs it takes, they are
exactly the first n (a line's unread jobs all come after its witness). Else it reads n
from each line, which is always enough (a job at place n or later never makes it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from ._driver import Connection
from ._rows import encode

__all__ = ["lines_sql", "pick"]


def lines_sql(pairs: int) -> str:
    """A ``WITH`` clause naming ``lines(q, t, r, tenant)``: every tenant with pending
    jobs per (queue, task) pair and priority, one seek each, plus one row with tenant
    NULL per pair and priority for the jobs without a tenant."""
    values = ", ".join(f"(:q{i}, :t{i})" for i in range(pairs))
    pending = "j.status = 'pending' AND j.queue = {0}.q AND j.task = {0}.t AND j.priority = {0}.r"
    return (
        f"WITH RECURSIVE pairs(q, t) AS (VALUES {values}), "
        "ranks(r) AS (VALUES (0), (1), (2), (3)), "
        "pairs_ranks AS (SELECT q, t, r FROM pairs, ranks), "
        "lines(q, t, r, tenant) AS ("
        "SELECT q, t, r, (SELECT j.tenant FROM jobs AS j WHERE "
        f"{pending.format('pairs_ranks')} AND j.tenant IS NOT NULL "
        "ORDER BY j.tenant LIMIT 1) FROM pairs_ranks "
        "UNION ALL "
        "SELECT q, t, r, (SELECT j.tenant FROM jobs AS j WHERE "
        f"{pending.format('lines')} AND j.tenant > lines.tenant "
        "ORDER BY j.tenant LIMIT 1) FROM lines WHERE tenant IS NOT NULL) "
    )


@lru_cache(maxsize=128)
def _candidates_sql(pairs: int) -> str:
    """The first ``:size`` due jobs of every line (``:size`` NULL: enough for about
    ``:limit`` / L of each, plus the witness), leaving out the tenants in ``:shut``
    (at their running cap). Rows: (queue, task, priority, tenant, seq, run_at, size)."""
    return (
        f"{lines_sql(pairs)}, "
        "shut AS MATERIALIZED (SELECT value AS tenant FROM json_each(:shut)), "
        "open_lines AS MATERIALIZED (SELECT q, t, r, tenant FROM lines "
        "WHERE tenant IS NULL OR tenant NOT IN (SELECT tenant FROM shut)), "
        "counted AS (SELECT count(*) AS n FROM "
        "(SELECT DISTINCT r, tenant FROM open_lines WHERE tenant IS NOT NULL)), "
        "sizing AS MATERIALIZED (SELECT coalesce(:size, (:limit + n) / (n + 1) + 1) AS m "
        "FROM counted) "
        "SELECT l.q, l.t, l.r, l.tenant, j.seq, j.run_at, (SELECT m FROM sizing) "
        "FROM open_lines AS l JOIN jobs AS j ON j.seq IN (SELECT d.seq FROM jobs AS d "
        "WHERE d.status = 'pending' AND d.queue = l.q AND d.task = l.t AND d.priority = l.r "
        "AND d.tenant IS l.tenant AND d.run_at <= :now "
        "ORDER BY d.run_at, d.seq LIMIT (SELECT m FROM sizing))"
    )


# (priority, k, run_at, seq, tenant, witness): a candidate in claim order
_Candidate = tuple[int, int, float, int, str | None, bool]


def _in_claim_order(rows: Sequence[Any], complete: bool) -> list[_Candidate]:
    """The candidates in claim order. Unless ``complete``, a line read to its full size
    ends in its witness; a tenant's line (its lines of every queue and task merged) is
    kept up to its first witness, which is marked."""
    per_line: dict[tuple[str, str, int, str | None], int] = {}
    for q, t, r, tenant, _, _, _ in rows:
        per_line[q, t, r, tenant] = per_line.get((q, t, r, tenant), 0) + 1
    size = rows[0][6] if rows else 0
    merged: dict[tuple[int, str | None], list[tuple[float, int, bool]]] = {}
    seen: dict[tuple[str, str, int, str | None], int] = {}
    for q, t, r, tenant, seq, run_at, _ in rows:
        line = (q, t, r, tenant)
        seen[line] = seen.get(line, 0) + 1
        last = not complete and per_line[line] == size and seen[line] == size
        merged.setdefault((r, tenant), []).append((run_at, seq, last))
    out: list[_Candidate] = []
    for (r, tenant), jobs in merged.items():
        jobs.sort()
        for k, (run_at, seq, witness) in enumerate(jobs):
            out.append((r, k, run_at, seq, tenant, witness))
            if witness:
                break
    out.sort()
    return out


def _take(
    candidates: Sequence[_Candidate], limit: int, free: Mapping[str, int]
) -> list[int] | None:
    """The seqs of the first ``limit`` candidates, skipping tenants out of free slots;
    None when a witness comes up first (the jobs behind it were not read)."""
    left = dict(free)
    chosen: list[int] = []
    for _, _, _, seq, tenant, witness in candidates:
        if len(chosen) == limit:
            break
        if tenant is not None and tenant in left:
            if left[tenant] <= 0:
                continue  # at its cap: so are the jobs behind its witness
            left[tenant] -= 1
        if witness:
            return None
        chosen.append(seq)
    return chosen


def pick(
    conn: Connection, pairs: int, params: Mapping[str, Any], free: Mapping[str, int]
) -> list[int]:
    """The seqs of the jobs a claim takes, in claim order. ``params`` name the pairs,
    ``now`` and ``limit``; ``free`` gives the capped tenants' free running slots."""
    limit: int = params["limit"]
    shut = encode([tenant for tenant, n in free.items() if n <= 0]).decode()
    sql = _candidates_sql(pairs)
    rows = conn.execute(sql, {**params, "shut": shut, "size": None}).fetchall()
    chosen = _take(_in_claim_order(rows, complete=False), limit, free)
    if chosen is None:
        rows = conn.execute(sql, {**params, "shut": shut, "size": limit}).fetchall()
        chosen = _take(_in_claim_order(rows, complete=True), limit, free)
        assert chosen is not None
    return chosen
