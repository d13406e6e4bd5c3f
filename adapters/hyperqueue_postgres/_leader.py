"""Leader leases: work that one process on the database should do at a time.

Rescue sweeps and pruning are safe when several processes do them at once (their row
locks keep them apart), but each of them costs every process a round trip or a scan
for nothing. A lease named after the work goes to one storage object at a time: the
first to ask takes it for ``ttl`` seconds, keeps it by asking again before it ends,
and loses it to whoever asks after it ended (its process died, froze or was cut
off from the database). Each new holder gets the next ``term``, a fencing token for
work that must know it is still the leader's.

Time is the caller's clock, as for job leases: hosts need clocks in step (NTP).
The table is UNLOGGED (see the migration): a crash only hands the lease to the
next process that asks.
"""

from __future__ import annotations

from typing import Any

__all__ = ["release", "take"]

_TAKE = """
INSERT INTO hq_leaders AS l (name, holder, term, expires_at) VALUES ($1, $2, 1, $3)
ON CONFLICT (name) DO UPDATE SET
    term = CASE WHEN l.holder = EXCLUDED.holder THEN l.term ELSE l.term + 1 END,
    holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
WHERE l.holder = EXCLUDED.holder OR l.expires_at <= $4
RETURNING term
"""


async def take(conn: Any, name: str, holder: str, now: float, ttl: float) -> int | None:
    """Take or keep the lease ``name`` for ``holder`` until ``now + ttl``; its term
    while ``holder`` holds it, else ``None``."""
    term = await conn.fetchval(_TAKE, name, holder, now + ttl, now)
    return None if term is None else int(term)


async def release(conn: Any, holder: str) -> None:
    """Give up every lease ``holder`` holds, so another process takes over at once."""
    await conn.execute("DELETE FROM hq_leaders WHERE holder = $1", holder)
