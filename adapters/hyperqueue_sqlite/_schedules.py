"""Periodic jobs' schedules in SQLite: one row per schedule in ``schedules``.

A row holds the schedule's definition and state as msgspec JSON of
:class:`hyperqueue.Schedule` (``next_at`` is computed when listed, stored as null). Every
change runs in the writer's ``BEGIN IMMEDIATE`` transaction, so of the processes that
fire one slot, the first one's transaction moves ``handled_until`` and stores the job,
and every later one reads the moved row and is refused: one job per slot, on one host or
across its processes. Refusals are returned, not raised (see :mod:`._sql`).
"""

from __future__ import annotations

import msgspec

from hyperqueue import Job, Schedule, ScheduleNotFound, transitions

from . import _sql
from ._driver import Connection

__all__ = ["fire", "pause", "read_all", "save"]

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Schedule).decode

_SELECT = "SELECT info FROM schedules WHERE name = ?"
_UPSERT = "INSERT OR REPLACE INTO schedules (name, info) VALUES (?, ?)"


def _read(conn: Connection, name: str) -> Schedule | None:
    row = conn.execute(_SELECT, (name,)).fetchone()
    return None if row is None else _decode(row[0])


def _write(conn: Connection, schedule: Schedule) -> None:
    conn.execute(_UPSERT, (schedule.name, _encode(schedule).decode()))


def save(tx: _sql.Tx, schedule: Schedule, now: float) -> Schedule:
    """Create ``schedule`` or replace its definition, keeping the stored state."""
    schedule = transitions.schedule_saved(schedule, _read(tx.conn, schedule.name), now=now)
    _write(tx.conn, schedule)
    return schedule


def read_all(conn: Connection) -> list[Schedule]:
    rows = conn.execute("SELECT info FROM schedules ORDER BY name").fetchall()
    return [_decode(row[0]) for row in rows]


def fire(tx: _sql.Tx, name: str, slot: float, job: Job | None, missed: int, now: float) -> bool:
    """Handle ``name`` up to ``slot``, storing ``job`` and adding ``missed``; False (and
    nothing changed) when it is unknown, paused, or handled up to ``slot`` already."""
    schedule = _read(tx.conn, name)
    if schedule is None or not transitions.schedule_fires(schedule, slot):
        return False
    job_id = None
    if job is not None:
        [stored] = _sql.enqueue(tx, [job], now, transitions.SLOT_KEY_TTL)
        job_id = stored.id
    fired = transitions.schedule_fired(schedule, slot=slot, job_id=job_id, missed=missed, now=now)
    _write(tx.conn, fired)
    return True


def pause(tx: _sql.Tx, name: str, paused: bool, now: float) -> Schedule | ScheduleNotFound:
    """Pause or resume ``name`` (see :func:`hyperqueue.transitions.schedule_paused`)."""
    schedule = _read(tx.conn, name)
    if schedule is None:
        return ScheduleNotFound(name)
    schedule = transitions.schedule_paused(schedule, paused=paused, now=now)
    _write(tx.conn, schedule)
    return schedule
