"""The JSON shapes of the worker protocol and of the storage routes (``/api/v1/worker``,
``/api/v1/storage``), as msgspec Structs.

Jobs, outcomes, workflows and schedules travel as the core's own records
(:class:`hyperqueue.Job`, :class:`hyperqueue.Outcome`, ...), so a remote worker reads
the same field names as the Python API. Request bodies forbid unknown fields. No body
carries the caller's clock for a lease: the server's clock decides when a lease ends.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from hyperqueue import Job, JobFilter, Outcome, Schedule, WorkflowRecord

__all__ = [
    "MAX_INT",
    "MAX_ITEMS",
    "MAX_LEASE",
    "MAX_WAIT",
    "ClaimRequest",
    "ClaimResponse",
    "EnqueueRequest",
    "ExtendRequest",
    "ExtendResponse",
    "FinishRequest",
    "FinishResponse",
    "FireRequest",
    "FireResponse",
    "Lease",
    "ListenRequest",
    "MatchingRequest",
    "ListenResponse",
    "NextRunRequest",
    "NextRunResponse",
    "PauseRequest",
    "ProgressRequest",
    "RecordedResponse",
    "CountResponse",
    "SearchRequest",
    "SaveScheduleRequest",
    "Start",
    "StartedRequest",
    "StartedResponse",
    "StorageInfo",
    "UnregisterRequest",
    "WorkflowBody",
]

MAX_ITEMS = 1000
"""Jobs one claim may take, and items one extend, finish, start or enqueue may carry."""

MAX_WAIT = 30.0
"""The longest a long poll (claim, listen) is held open, in seconds; a larger ``wait``
is cut to it."""

MAX_LEASE = 3600.0
"""The longest lease a claim or an extend may ask for, in seconds."""

MAX_INT = 2**63 - 1
"""The largest token, count or id a storage holds (a signed 64-bit integer)."""

_Token = Annotated[int, msgspec.Meta(ge=0, le=MAX_INT)]
_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
_Names = Annotated[list[_Name], msgspec.Meta(max_length=MAX_ITEMS)]
_LeaseSeconds = Annotated[float, msgspec.Meta(gt=0, le=MAX_LEASE)]
_Wait = Annotated[float, msgspec.Meta(ge=0)]
_Caps = dict[str, Annotated[int, msgspec.Meta(ge=0, le=MAX_INT)]]


class ClaimRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /worker/claim``: take up to ``limit`` due jobs of ``queues`` (all when
    absent) and ``tasks`` (the tasks this worker can run; any when absent) under a
    ``lease`` of that many seconds. With ``wait`` > 0 the server holds the request until
    a job is claimed or ``wait`` seconds (at most 30) pass: a long poll."""

    worker: _Name
    queues: _Names | None = None
    tasks: _Names | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_ITEMS)] = 1
    lease: _LeaseSeconds = 30.0
    wait: _Wait = 0.0
    max_running: _Caps | None = None


class ClaimResponse(msgspec.Struct, frozen=True, kw_only=True):
    """The claimed jobs (running, each with its fencing ``token`` and ``lease_until``);
    empty when nothing came within ``wait``."""

    jobs: list[Job]


class Lease(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A claim: a job's id and the fencing token its claim gave it."""

    id: _Name
    token: _Token


class ExtendRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /worker/extend``: renew these claims for ``lease`` seconds from the
    server's now (the heartbeat)."""

    leases: Annotated[list[Lease], msgspec.Meta(min_length=1, max_length=MAX_ITEMS)]
    lease: _LeaseSeconds = 30.0


class ExtendResponse(msgspec.Struct, frozen=True, kw_only=True):
    """One flag per lease, in order: ``false`` where the claim is lost (expired and
    rescued, cancelled, finished): stop working on that job."""

    kept: list[bool]


class FinishRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /worker/finish``: the outcomes of claimed jobs (``status`` completed,
    failed, or pending with ``run_at`` to retry later)."""

    outcomes: Annotated[list[Outcome], msgspec.Meta(min_length=1, max_length=MAX_ITEMS)]


class FinishResponse(msgspec.Struct, frozen=True, kw_only=True):
    """The jobs after their outcomes, in order (all accepted). When one is refused the
    answer is 409 instead, whose ``extra`` is ``{"jobs": [job or null], "refused": [ids]}``."""

    jobs: list[Job | None]


class Start(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The function of a claimed job was called at ``at`` (seconds since the epoch)."""

    id: _Name
    token: _Token
    at: float


class StartedRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    starts: Annotated[list[Start], msgspec.Meta(min_length=1, max_length=MAX_ITEMS)]


class StartedResponse(msgspec.Struct, frozen=True, kw_only=True):
    """One flag per start: ``false`` where the claim is stale."""

    started: list[bool]


class ProgressRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /worker/progress``: the progress of a running job (any JSON)."""

    id: _Name
    token: _Token
    progress: Any = None


class RecordedResponse(msgspec.Struct, frozen=True, kw_only=True):
    """``recorded`` is ``false`` where the claim is stale."""

    recorded: bool


class UnregisterRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: _Name


class NextRunRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """When the next pending job of ``queues`` and ``tasks`` is due."""

    queues: _Names | None = None
    tasks: _Names | None = None


class NextRunResponse(msgspec.Struct, frozen=True, kw_only=True):
    run_at: float | None


class ListenRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /worker/listen``: answer once the event log passes ``after`` (an event id)
    or new work may be ready, or after ``wait`` seconds (at most 30). Without
    ``after`` it answers at once with the current id. ``paused``: the paused queues of
    the previous answer; when they differ now (a queue was resumed or paused between
    two polls, which writes no event), it answers at once."""

    after: Annotated[int, msgspec.Meta(ge=0, le=MAX_INT)] | None = None
    wait: _Wait = 0.0
    paused: _Names | None = None


class ListenResponse(msgspec.Struct, frozen=True, kw_only=True):
    """``event_id`` is the newest id of the event log; ``changed`` whether anything
    happened after ``after`` (or the paused queues are not those of the request);
    ``paused`` the queues paused now, sorted."""

    event_id: int
    changed: bool
    paused: list[str] = msgspec.field(default_factory=list)


class StorageInfo(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /storage/info``: the served storage's ``origin`` (the name stored with the
    events it writes), the server's clock ``now`` and the protocol's bounds."""

    origin: str
    now: float
    max_wait: float
    max_lease: float
    max_items: int


class EnqueueRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /storage/enqueue``: store jobs built by a client's queue (new and
    pending: no attempt, no claim), as :meth:`hyperqueue.abc.Storage.enqueue`."""

    jobs: Annotated[list[Job], msgspec.Meta(min_length=1, max_length=MAX_ITEMS)]
    key_ttl: Annotated[float, msgspec.Meta(ge=0)] | None = None
    max_queued: _Caps | None = None


class WorkflowBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /storage/workflows``: a workflow and its steps' jobs, as a queue built
    them; the answer of ``GET /storage/workflows/{id}`` has the same shape."""

    workflow: WorkflowRecord
    jobs: Annotated[list[Job], msgspec.Meta(max_length=10_000)]
    max_queued: _Caps | None = None


class FireRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /storage/schedules/{name}/fire``: mark the slot handled, storing ``job``."""

    slot: float
    job: Job | None = None
    missed: Annotated[int, msgspec.Meta(ge=0, le=MAX_INT)] = 0


class FireResponse(msgspec.Struct, frozen=True, kw_only=True):
    fired: bool


class PauseRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    paused: bool


class SaveScheduleRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    schedule: Schedule


class SearchRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /storage/search`` (and ``/storage/count``, ``/storage/error-groups``, which
    read ``where`` and ``limit`` only): jobs that pass ``where``, newest first."""

    where: JobFilter
    cursor: str | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_ITEMS)] = 100


class CountResponse(msgspec.Struct, frozen=True, kw_only=True):
    count: int


class MatchingRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /storage/{cancel,retry,discard}-matching``: one batch of a bulk action, up
    to ``limit`` matches with an id below ``before``, newest first."""

    where: JobFilter
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_ITEMS)] = 500
    before: str | None = None
