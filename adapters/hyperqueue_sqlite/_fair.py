"""Fair share between tenants in a claim: which due jobs it takes, in which order.

The claim order is (priority, k, run_at, seq), where k is the tenant's running jobs
(over the whole file) plus the job's place among the due jobs of its tenant and
priority; jobs without a tenant are one tenant, whose running jobs are those no tenant
counts. So a claim of one job takes the oldest due job of the tenant with the fewest
running, and the turns go on from there. A tenant's line is read where it is one range
of the jobs_ready index (queue, task, priority, tenant, run_at, seq), and the tenants
themselves are found by loose index scans (one seek each), so the cost of a claim grows
with the tenants and its size, never with the jobs a tenant has waiting.

How many jobs a claim of n takes from each line follows from the lines' starting k
(their running jobs) when the lines are long: it fills the lines up to the lowest level
where they hold n jobs. So a claim first reads that many from each line plus one, the
witness that the line may go on; if no witness comes up among the jobs it takes, they
are exactly the first n (a line's unread jobs all come after its witness). Else it reads
n from each line, which is always enough (no line gives a claim of n more than n jobs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from itertools import groupby
from operator import itemgetter
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


# The running jobs of every tenant with pending or running jobs (a loose scan of the
# jobs_tenant index, then a count of one range per tenant: both grow with the tenants
# and their running jobs, not with their backlog), and (tenant NULL) all running jobs,
# from task_counts. The repeated status terms let SQLite see that the partial index's
# condition holds.
RUNNING_SQL = (
    "WITH RECURSIVE names(tenant) AS ("
    "SELECT (SELECT tenant FROM jobs WHERE tenant IS NOT NULL "
    "AND status IN ('pending', 'running') ORDER BY tenant LIMIT 1) "
    "UNION ALL "
    "SELECT (SELECT j.tenant FROM jobs AS j WHERE j.tenant > names.tenant "
    "AND j.status IN ('pending', 'running') ORDER BY j.tenant LIMIT 1) "
    "FROM names WHERE names.tenant IS NOT NULL) "
    "SELECT tenant, (SELECT count(*) FROM jobs AS j WHERE j.tenant = names.tenant "
    "AND j.status IN ('pending', 'running') AND j.status = 'running') FROM names "
    "WHERE tenant IS NOT NULL "
    "UNION ALL "
    "SELECT NULL, (SELECT coalesce(sum(n), 0) FROM task_counts WHERE status = 'running')"
)


@lru_cache(maxsize=128)
def read_sql(groups: int) -> str:
    """The first ``:size{g}`` due jobs of each pair's part of the lines in
    ``:lines{g}`` (a JSON array of [queue, task, priority, tenant]), for ``groups``
    groups of lines (a LIMIT cannot name a column, so the lines are grouped by how many
    jobs to read from them). Rows: (queue, task, priority, tenant, seq, run_at, size),
    each pair's together, in (run_at, seq) order."""
    ctes = ", ".join(
        f"w{g} AS MATERIALIZED (SELECT value ->> 0 AS q, value ->> 1 AS t, value ->> 2 AS r, "
        f"value ->> 3 AS tenant FROM json_each(:lines{g}))"
        for g in range(groups)
    )
    parts = [
        f"SELECT l.q, l.t, l.r, l.tenant, j.seq, j.run_at, :size{g} FROM w{g} AS l "
        "JOIN jobs AS j ON j.seq IN (SELECT d.seq FROM jobs AS d WHERE d.status = 'pending' "
        "AND d.queue = l.q AND d.task = l.t AND d.priority = l.r AND d.tenant IS l.tenant "
        f"AND d.run_at <= :now ORDER BY d.run_at, d.seq LIMIT :size{g})"
        for g in range(groups)
    ]
    return f"WITH {ctes} {' UNION ALL '.join(parts)} ORDER BY 3, 4, 1, 2, 6, 5"


_Line = tuple[int, str | None]  # (priority, tenant): a tenant's line over every pair
# (priority, k, run_at, seq, tenant, witness): a candidate in claim order
_Candidate = tuple[int, int, float, int, str | None, bool]
_LINE = itemgetter(2, 3)  # a read_sql row's line
_PAIR = itemgetter(0, 1)  # and its pair


def sizes(bases: Mapping[_Line, int], limit: int) -> dict[_Line, int]:
    """How many jobs to read from each line, witness included, for a claim of
    ``limit``: as many as it takes if every line is long, given each line's first k
    (``bases``), plus one. Per priority, the claim fills the lines up to the lowest
    level K where they hold ``limit`` jobs; a line starting at k = b holds K - b + 1 of
    them. With the i lowest bases b_1..b_i, K >= (limit + b_1 + ... + b_i) / i - 1, and
    the least of these bounds over i is K."""
    by_rank: dict[int, list[int]] = {}
    for (rank, _), base in bases.items():
        by_rank.setdefault(rank, []).append(base)
    level: dict[int, int] = {}
    for rank, values in by_rank.items():
        values.sort()
        total = 0
        for i, base in enumerate(values, 1):
            total += base
            bound = (limit + total + i - 1) // i - 1
            if rank not in level or bound < level[rank]:
                level[rank] = bound
    return {line: min(max(level[line[0]] - base + 1, 0), limit) + 1 for line, base in bases.items()}


def _in_claim_order(
    rows: Sequence[Any], bases: Mapping[_Line, int], complete: bool
) -> list[_Candidate]:
    """The candidates in claim order, from ``read_sql``'s rows. A job's k is its line's
    base plus its place in the line (its jobs of every pair). Unless ``complete``, a
    pair's last job read, when the pair gave all it was asked for, is a witness, and a
    line ends at its first witness."""
    out: list[_Candidate] = []
    for (r, tenant), group in groupby(rows, key=_LINE):
        jobs: list[tuple[float, int, bool]] = []
        pair: tuple[str, str] | None = None
        merge = False  # a line over several pairs: merge their jobs
        n = 0
        for q, t, _, _, seq, run_at, size in group:
            if pair != (q, t):
                merge = pair is not None
                pair, n = (q, t), 0
            jobs.append((run_at, seq, not complete and n == size - 1))
            n += 1
        if merge:
            jobs.sort()
        base = bases[r, tenant]
        for place, (run_at, seq, witness) in enumerate(jobs):
            out.append((r, base + place, run_at, seq, tenant, witness))
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


def _read(
    conn: Connection,
    lines: Mapping[_Line, list[tuple[str, str]]],
    bases: Mapping[_Line, int],
    want: Mapping[_Line, int],
    params: Mapping[str, Any],
    complete: bool,
) -> list[_Candidate]:
    """The candidates in claim order when reading ``want[line]`` due jobs of each
    pair's part of each line."""
    groups: dict[int, list[list[Any]]] = {}
    for line, pairs in lines.items():
        groups.setdefault(want[line], []).extend([q, t, *line] for q, t in pairs)
    values: dict[str, Any] = {"now": params["now"]}
    for g, (size, members) in enumerate(groups.items()):
        values[f"size{g}"] = size
        values[f"lines{g}"] = encode(members).decode()
    rows = conn.execute(read_sql(len(groups)), values).fetchall()
    return _in_claim_order(rows, bases, complete)


def pick(
    conn: Connection,
    pairs: int,
    params: Mapping[str, Any],
    free: Mapping[str, int],
    running_delta: int = 0,
) -> list[int]:
    """The seqs of the jobs a claim takes, in claim order. ``params`` name the pairs,
    ``now`` and ``limit``; ``free`` gives the capped tenants' free running slots;
    ``running_delta`` the running jobs this transaction added that task_counts does not
    show yet."""
    limit: int = params["limit"]
    running: dict[str | None, int] = dict(conn.execute(RUNNING_SQL).fetchall())
    everyone = running.pop(None) + running_delta
    untenanted = everyone - sum(running.values())
    lines: dict[_Line, list[tuple[str, str]]] = {}
    found = conn.execute(f"{lines_sql(pairs)}SELECT q, t, r, tenant FROM lines", params)
    for q, t, r, tenant in found:
        if tenant is None or free.get(tenant, 1) > 0:  # a tenant at its cap takes no turn
            lines.setdefault((r, tenant), []).append((q, t))
    if not lines:
        return []
    bases = {line: untenanted if line[1] is None else running.get(line[1], 0) for line in lines}
    candidates = _read(conn, lines, bases, sizes(bases, limit), params, complete=False)
    chosen = _take(candidates, limit, free)
    if chosen is None:
        candidates = _read(conn, lines, bases, dict.fromkeys(lines, limit), params, complete=True)
        chosen = _take(candidates, limit, free)
        assert chosen is not None
    return chosen
