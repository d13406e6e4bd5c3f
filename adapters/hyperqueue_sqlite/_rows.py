"""Jobs to rows and back.

Decoders are typed and built once; a row is a plain tuple in the column order of
:data:`COLUMNS`, so decoding a job costs one constructor call and a JSON decode only
for the values a job actually carries (empty args and kwargs skip the decoder).
"""

from __future__ import annotations

from typing import Any

import msgspec

from hyperqueue import Job, JobStatus, Priority, Step

__all__ = [
    "COLUMNS",
    "INSERT",
    "encode",
    "from_json",
    "job_from_row",
    "job_to_row",
    "step_json",
    "stored_status",
    "to_json",
]

COLUMNS = (
    "id, task, queue, status, priority, args, kwargs, attempts, max_attempts, result, "
    "error, traceback, progress, key, tenant, timeout, created_at, run_at, started_at, "
    "finished_at, token, lease_until, worker, rescues, max_rescues, workflow, step, waiting, "
    "headers"
)

INSERT = f"INSERT INTO jobs ({COLUMNS}) VALUES ({', '.join('?' * len(COLUMNS.split(',')))})"

_encode = msgspec.json.Encoder().encode
_decode_any = msgspec.json.Decoder().decode
_decode_args = msgspec.json.Decoder(tuple[Any, ...]).decode
_decode_kwargs = msgspec.json.Decoder(dict[str, Any]).decode

_decode_step = msgspec.json.Decoder(Step).decode
_decode_headers = msgspec.json.Decoder(dict[str, str]).decode

# A blocked workflow step is stored as 'blocked', out of the claim index; it is pending.
_STATUS = {status.value: status for status in JobStatus}
_STATUS["blocked"] = JobStatus.PENDING
_PRIORITY = sorted(Priority, key=lambda p: p.rank)
_PENDING = JobStatus.PENDING.value


encode = _encode
"""Any value as msgspec JSON bytes (the workers table's ``info`` column)."""


def to_json(value: Any) -> str | None:
    """A job value as JSON text; ``None`` is stored as SQL NULL."""
    return None if value is None else _encode(value).decode()


def from_json(text: str | None) -> Any:
    return None if text is None else _decode_any(text)


def stored_status(job: Job) -> str:
    """The status column of a job: its status, or 'blocked' for a blocked step."""
    step = job.step
    if step is not None and step.blocked and job.status is JobStatus.PENDING:
        return "blocked"
    return job.status.value


def step_json(job: Job) -> str | None:
    return None if job.step is None else _encode(job.step).decode()


def job_to_row(job: Job) -> tuple[Any, ...]:
    """The INSERT parameters of a new job; it is always stored as pending (or blocked)."""
    step = job.step
    return (
        job.id,
        job.task,
        job.queue,
        _PENDING if step is None or not step.blocked else "blocked",
        job.priority.rank,
        _encode(job.args).decode() if job.args else "[]",
        _encode(job.kwargs).decode() if job.kwargs else "{}",
        job.attempts,
        job.max_attempts,
        None if job.result is None else _encode(job.result).decode(),
        job.error,
        job.traceback,
        None if job.progress is None else _encode(job.progress).decode(),
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
        _encode(job.headers).decode() if job.headers else None,
    )


def job_from_row(row: tuple[Any, ...]) -> Job:
    args = row[5]
    kwargs = row[6]
    result = row[9]
    progress = row[12]
    return Job(
        id=row[0],
        task=row[1],
        queue=row[2],
        status=_STATUS[row[3]],
        priority=_PRIORITY[row[4]],
        args=() if args == "[]" else _decode_args(args),
        kwargs={} if kwargs == "{}" else _decode_kwargs(kwargs),
        attempts=row[7],
        max_attempts=row[8],
        result=None if result is None else _decode_any(result),
        error=row[10],
        traceback=row[11],
        progress=None if progress is None else _decode_any(progress),
        key=row[13],
        tenant=row[14],
        timeout=row[15],
        created_at=row[16],
        run_at=row[17],
        started_at=row[18],
        finished_at=row[19],
        token=row[20],
        lease_until=row[21],
        worker=row[22],
        rescues=row[23],
        max_rescues=row[24],
        step=None if row[26] is None else _decode_step(row[26]),
        headers={} if row[28] is None else _decode_headers(row[28]),
    )
