"""Jobs to rows and back.

A job row comes back from asyncpg as a ``Record`` in the column order of
:data:`COLUMNS`; JSONB columns arrive as text and are decoded by typed msgspec decoders
built once. Jobs are written as one array per column (``unnest``), so a batch of any
size is one statement.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from hyperqueue import Job, JobStatus, Priority, Step

__all__ = [
    "COLUMNS",
    "INSERT",
    "SAVE",
    "encode",
    "job_from_row",
    "save_args",
    "insert_args",
    "step_json",
    "stored_status",
    "to_json",
]

# (name, array type, JSONB?) in the order of a job row
_SPEC: tuple[tuple[str, str, bool], ...] = (
    ("id", "text", False),
    ("task", "text", False),
    ("queue", "text", False),
    ("status", "text", False),
    ("priority", "smallint", False),
    ("args", "text", True),
    ("kwargs", "text", True),
    ("attempts", "integer", False),
    ("max_attempts", "integer", False),
    ("result", "text", True),
    ("error", "text", False),
    ("traceback", "text", False),
    ("progress", "text", True),
    ("key", "text", False),
    ("tenant", "text", False),
    ("timeout", "float8", False),
    ("created_at", "float8", False),
    ("run_at", "float8", False),
    ("started_at", "float8", False),
    ("finished_at", "float8", False),
    ("token", "bigint", False),
    ("lease_until", "float8", False),
    ("worker", "text", False),
    ("rescues", "integer", False),
    ("max_rescues", "integer", False),
    ("workflow", "text", False),
    ("step", "text", True),
    ("waiting", "integer", False),
    ("headers", "text", True),
)
_NAMES = [name for name, _, _ in _SPEC]

COLUMNS = ", ".join(_NAMES)
"""The job columns, in the order :func:`job_from_row` reads them."""


def prefixed(alias: str) -> str:
    return ", ".join(f"{alias}.{name}" for name in _NAMES)


def _unnest(spec: Sequence[tuple[str, str, bool]], first: int = 1) -> str:
    arrays = ", ".join(f"${first + i}::{kind}[]" for i, (_, kind, _) in enumerate(spec))
    names = ", ".join(name for name, _, _ in spec)
    return f"unnest({arrays}) WITH ORDINALITY AS u({names}, ord)"


INSERT = (
    f"INSERT INTO hq_jobs ({COLUMNS}) SELECT "
    + ", ".join(f"u.{name}::jsonb" if js else f"u.{name}" for name, _, js in _SPEC)
    + f" FROM {_unnest(_SPEC)} ORDER BY u.ord"
)
"""Insert jobs from one array per column; ``seq`` follows the order of the arrays."""

INSERT_LOGGED = (
    f"WITH inserted AS ({INSERT} RETURNING id, queue, task, seq), "
    "counted AS (INSERT INTO hq_job_counts (queue, task, status, n) "
    "SELECT queue, task, 'pending', count(*) FROM inserted GROUP BY queue, task), "
    "logged AS (INSERT INTO hq_job_events (at, type, job_id, origin) "
    f"SELECT ${len(_SPEC) + 1}, 'job.enqueued', id, ${len(_SPEC) + 2} FROM inserted ORDER BY seq) "
    f"SELECT CASE WHEN ${len(_SPEC) + 3} THEN pg_notify('hq_work', '') END"
)
"""New pending jobs with their count deltas, their ``job.enqueued`` entries and the
wake-up, as one statement: a transaction of its own and one round trip, where the general
path takes four (begin, insert, the log and counts, commit). Its arguments: those of
:data:`INSERT`, then the time, the origin and whether to notify."""

# The columns a change of an existing job may touch; ``requeue`` gives it a new seq.
_SAVE_SPEC: tuple[tuple[str, str, bool], ...] = (
    ("id", "text", False),
    ("status", "text", False),
    ("attempts", "integer", False),
    ("token", "bigint", False),
    ("run_at", "float8", False),
    ("result", "text", True),
    ("error", "text", False),
    ("traceback", "text", False),
    ("progress", "text", True),
    ("started_at", "float8", False),
    ("finished_at", "float8", False),
    ("lease_until", "float8", False),
    ("worker", "text", False),
    ("rescues", "integer", False),
    ("step", "text", True),
    ("waiting", "integer", False),
    ("requeue", "boolean", False),
)

SAVE = (
    "UPDATE hq_jobs AS j SET "
    + ", ".join(
        f"{name} = u.{name}::jsonb" if js else f"{name} = u.{name}"
        for name, _, js in _SAVE_SPEC[1:-1]
    )
    + ", seq = CASE WHEN u.requeue THEN nextval('hq_jobs_seq') ELSE j.seq END"
    + f" FROM {_unnest(_SAVE_SPEC)} WHERE j.id = u.id"
)
"""Write jobs as :mod:`hyperqueue.transitions` made them (rows locked by the caller)."""

_encode = msgspec.json.Encoder().encode
_decode_any = msgspec.json.Decoder().decode
_decode_args = msgspec.json.Decoder(tuple[Any, ...]).decode
_decode_kwargs = msgspec.json.Decoder(dict[str, Any]).decode
_decode_step = msgspec.json.Decoder(Step).decode
_decode_headers = msgspec.json.Decoder(dict[str, str]).decode

_STATUS = {status.value: status for status in JobStatus}
_STATUS["blocked"] = JobStatus.PENDING
_PRIORITY = sorted(Priority, key=lambda p: p.rank)

encode = _encode


def to_json(value: Any) -> str | None:
    """A job value as JSON text; ``None`` is stored as SQL NULL."""
    return None if value is None else _encode(value).decode()


def stored_status(job: Job) -> str:
    """The status column of a job: its status, or 'blocked' for a blocked step."""
    step = job.step
    if step is not None and step.blocked and job.status is JobStatus.PENDING:
        return "blocked"
    return job.status.value


def step_json(job: Job) -> str | None:
    return None if job.step is None else _encode(job.step).decode()


def insert_args(jobs: Sequence[Job]) -> list[list[Any]]:
    """The arrays of :data:`INSERT` for new jobs (stored pending, or blocked)."""
    columns: list[list[Any]] = [[] for _ in _SPEC]
    for job in jobs:
        step = job.step
        row = (
            job.id,
            job.task,
            job.queue,
            stored_status(job),
            job.priority.rank,
            _encode(job.args).decode() if job.args else "[]",
            _encode(job.kwargs).decode() if job.kwargs else "{}",
            job.attempts,
            job.max_attempts,
            to_json(job.result),
            job.error,
            job.traceback,
            to_json(job.progress),
            job.key,
            job.tenant,
            job.timeout,
            job.created_at,
            job.run_at,
            job.started_at,
            job.finished_at,
            job.token,
            job.lease_until,
            job.worker,
            job.rescues,
            job.max_rescues,
            None if step is None else step.workflow,
            None if step is None else _encode(step).decode(),
            0 if step is None else step.waiting,
            _encode(job.headers).decode() if job.headers else "{}",
        )
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    return columns


def save_args(jobs: Sequence[tuple[Job, bool]]) -> list[list[Any]]:
    """The arrays of :data:`SAVE` for ``(job, requeue)`` pairs."""
    columns: list[list[Any]] = [[] for _ in _SAVE_SPEC]
    for job, requeue in jobs:
        step = job.step
        row = (
            job.id,
            stored_status(job),
            job.attempts,
            job.token,
            job.run_at,
            to_json(job.result),
            job.error,
            job.traceback,
            to_json(job.progress),
            job.started_at,
            job.finished_at,
            job.lease_until,
            job.worker,
            job.rescues,
            None if step is None else _encode(step).decode(),
            0 if step is None else step.waiting,
            requeue,
        )
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    return columns


def job_from_row(row: Any, at: int = 0) -> Job:
    """A job from the row's columns starting at ``at`` (in :data:`COLUMNS` order)."""
    args = row[at + 5]
    kwargs = row[at + 6]
    result = row[at + 9]
    progress = row[at + 12]
    step = row[at + 26]
    headers = row[at + 28]
    return Job(
        id=row[at],
        task=row[at + 1],
        queue=row[at + 2],
        status=_STATUS[row[at + 3]],
        priority=_PRIORITY[row[at + 4]],
        args=() if args == "[]" else _decode_args(args),
        kwargs={} if kwargs == "{}" else _decode_kwargs(kwargs),
        attempts=row[at + 7],
        max_attempts=row[at + 8],
        result=None if result is None else _decode_any(result),
        error=row[at + 10],
        traceback=row[at + 11],
        progress=None if progress is None else _decode_any(progress),
        key=row[at + 13],
        tenant=row[at + 14],
        timeout=row[at + 15],
        created_at=row[at + 16],
        run_at=row[at + 17],
        started_at=row[at + 18],
        finished_at=row[at + 19],
        token=row[at + 20],
        lease_until=row[at + 21],
        worker=row[at + 22],
        rescues=row[at + 23],
        max_rescues=row[at + 24],
        step=None if step is None else _decode_step(step),
        headers={} if headers == "{}" else _decode_headers(headers),
    )
