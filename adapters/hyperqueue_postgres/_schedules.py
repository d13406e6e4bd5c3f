"""Periodic jobs' schedules on PostgreSQL: one row per schedule in ``hq_schedules``.

A row holds the schedule's definition and state as msgspec JSON of
:class:`hyperqueue.Schedule`, with ``paused`` and ``handled_until`` also as columns. A
fire first takes its slot with a conditional ``UPDATE ... WHERE handled_until < slot``:
of many processes on many hosts firing one slot, the first one's update matches and
the others' wait for its commit, then match nothing (PostgreSQL re-checks the condition
on the row as committed). The winner stores the job in the same transaction, its key
unique to the slot as a second guard.
"""

from __future__ import annotations

from typing import Any

import msgspec

from hyperqueue import Job, Schedule, ScheduleNotFound, transitions

from . import _sql
from ._tx import Tx

__all__ = ["fire", "pause", "read_all", "save"]

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Schedule).decode

_WRITE = "UPDATE hq_schedules SET paused = $2, handled_until = $3, info = $4 WHERE name = $1"


async def _write(conn: Any, schedule: Schedule) -> None:
    await conn.execute(
        _WRITE, schedule.name, schedule.paused, schedule.handled_until, _encode(schedule).decode()
    )


async def save(tx: Tx, schedule: Schedule, now: float) -> Schedule:
    """Create ``schedule`` or replace its definition, keeping the stored state."""
    conn = tx.conn
    new = transitions.schedule_saved(schedule, None, now=now)
    created = await conn.fetchval(
        "INSERT INTO hq_schedules (name, paused, handled_until, info) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (name) DO NOTHING RETURNING true",
        new.name,
        new.paused,
        new.handled_until,
        _encode(new).decode(),
    )
    if created:
        return new
    row = await conn.fetchrow(
        "SELECT info FROM hq_schedules WHERE name = $1 FOR UPDATE", schedule.name
    )
    saved = transitions.schedule_saved(schedule, _decode(row[0]), now=now)
    await _write(conn, saved)
    return saved


async def read_all(conn: Any) -> list[Schedule]:
    rows = await conn.fetch("SELECT info FROM hq_schedules ORDER BY name")
    return [_decode(row[0]) for row in rows]


async def fire(tx: Tx, name: str, slot: float, job: Job | None, missed: int, now: float) -> bool:
    """Handle ``name`` up to ``slot``, storing ``job`` and adding ``missed``; False (and
    nothing changed) when it is unknown, paused, or handled up to ``slot`` already."""
    conn = tx.conn
    row = await conn.fetchrow(
        "UPDATE hq_schedules SET handled_until = $2 WHERE name = $1 AND NOT paused "
        "AND (handled_until IS NULL OR handled_until < $2) RETURNING info",
        name,
        slot,
    )
    if row is None:
        return False
    schedule = _decode(row[0])
    if not transitions.schedule_fires(schedule, slot):  # the columns said otherwise
        raise AssertionError(f"schedule {name!r}: its row and its columns disagree")
    job_id = None
    if job is not None:
        [stored] = await _sql.enqueue(tx, [job], now, transitions.SLOT_KEY_TTL)
        job_id = stored.id
    fired = transitions.schedule_fired(schedule, slot=slot, job_id=job_id, missed=missed, now=now)
    await _write(conn, fired)
    return True


async def pause(tx: Tx, name: str, paused: bool, now: float) -> Schedule:
    """Pause or resume ``name`` (see :func:`hyperqueue.transitions.schedule_paused`)."""
    row = await tx.conn.fetchrow("SELECT info FROM hq_schedules WHERE name = $1 FOR UPDATE", name)
    if row is None:
        raise ScheduleNotFound(name)
    schedule = transitions.schedule_paused(_decode(row[0]), paused=paused, now=now)
    await _write(tx.conn, schedule)
    return schedule
