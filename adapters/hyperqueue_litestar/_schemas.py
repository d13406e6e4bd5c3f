"""The JSON shapes of the HTTP API: request bodies and responses, as msgspec Structs.

Job JSON is :class:`hyperqueue.Job` itself, so a client reads the same field names as
the Python API. Bodies forbid unknown fields: a misspelt option is an error the caller
sees, not a default it silently gets.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from hyperqueue import CheckResult, ErrorGroup, HealthStatus, Job, Priority

__all__ = [
    "BatchItem",
    "BatchRequest",
    "BatchResponse",
    "BulkRequest",
    "BulkResponse",
    "CountResponse",
    "ErrorBody",
    "GroupsResponse",
    "HealthBody",
    "JobRequest",
    "JobTemplate",
    "QueueFigures",
    "QueuesResponse",
]

MAX_BATCH = 1000
"""Items one ``POST /jobs/batch`` may carry."""


MAX_ATTEMPTS = 1_000_000
"""The most attempts a submission may ask for (a bound that storage can hold)."""

_Attempts = Annotated[int, msgspec.Meta(le=MAX_ATTEMPTS)]


class JobTemplate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Named defaults a submission refers to with ``template``: the submission's own
    fields win over the template's."""

    queue: str | None = None
    priority: Priority | None = None
    delay: float | None = None
    timeout: float | None = None
    max_attempts: _Attempts | None = None
    max_rescues: _Attempts | None = None
    tenant: str | None = None


class JobRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The body of ``POST /jobs``: :class:`hyperqueue.Submission`'s fields plus
    ``template``. ``delay`` is seconds from now; ``run_at`` seconds since the epoch."""

    task: str
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    queue: str | None = None
    priority: Priority | None = None
    delay: float | None = None
    run_at: float | None = None
    key: str | None = None
    tenant: str | None = None
    timeout: float | None = None
    max_attempts: _Attempts | None = None
    max_rescues: _Attempts | None = None
    template: str | None = None


class BatchRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The body of ``POST /jobs/batch``: up to 1000 submissions."""

    jobs: Annotated[list[JobRequest], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]


class BatchItem(msgspec.Struct, frozen=True, kw_only=True):
    """One submission's result: ``job`` on success (``status_code`` 201, or 200 when
    its key was seen), else ``detail`` (and ``extra``) with a 4xx ``status_code``."""

    status_code: int
    job: Job | None = None
    detail: str | None = None
    extra: dict[str, Any] | None = None


class BatchResponse(msgspec.Struct, frozen=True, kw_only=True):
    """One item per submission, in order; ``created`` and ``failed`` count them."""

    items: list[BatchItem]
    created: int
    existing: int
    failed: int


class QueueFigures(msgspec.Struct, frozen=True, kw_only=True):
    """Jobs by status in one named queue; ``unserved`` counts pending jobs whose task no
    live worker has registered (they wait for one); ``paused`` says no worker claims its
    jobs until it is resumed (``POST /queues/{name}/resume``)."""

    queue: str
    pending: int
    running: int
    completed: int
    failed: int
    cancelled: int
    total: int
    unserved: int = 0
    paused: bool = False


class QueuesResponse(msgspec.Struct, frozen=True, kw_only=True):
    queues: list[QueueFigures]


class HealthBody(msgspec.Struct, frozen=True, kw_only=True):
    """The ``/health`` body; ``mode`` is the degradation mode in force."""

    status: HealthStatus
    version: str
    uptime_seconds: float
    checks: dict[str, CheckResult]
    mode: str


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    """Every error response: the HTTP status, what went wrong, and details if any."""

    status_code: int
    detail: str
    extra: Any = None


# -- search, counts and bulk actions (see _search_routes) -------------------------------


class CountResponse(msgspec.Struct, frozen=True, kw_only=True):
    """The exact number of jobs a query takes."""

    count: int


class BulkRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The body of ``POST /jobs/cancel|retry|discard``: the query (``q``, the search
    language); ``dry_run`` counts what would change and changes nothing; ``expected``,
    the count the caller confirmed: a different count at the start answers 409."""

    q: Annotated[str, msgspec.Meta(max_length=2000)]
    dry_run: bool = False
    expected: Annotated[int, msgspec.Meta(ge=0)] | None = None


class BulkResponse(msgspec.Struct, frozen=True, kw_only=True):
    """How many jobs the bulk action changed (or, with ``dry_run``, would change)."""

    count: int
    dry_run: bool


class GroupsResponse(msgspec.Struct, frozen=True, kw_only=True):
    """Dead letters grouped by error fingerprint, newest group first."""

    groups: list[ErrorGroup]
