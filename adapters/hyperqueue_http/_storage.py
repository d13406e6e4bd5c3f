"""``HttpStorage``: a :class:`hyperqueue.abc.Storage` over a running hyperqueue server.

``hq.Queue(HttpStorage(url, api_key=...))`` is the Python client: the same job API as
any queue (enqueue, get, wait, cancel, retry, stats, workflows, schedules), and its
``.worker()`` takes jobs over the worker protocol (``/api/v1/worker``: claim, extend,
finish, with the leases and fencing tokens of in-process workers). The server's clock
decides every ``now`` that a lease depends on: the ``now`` a queue passes to
:meth:`claim`, :meth:`extend`, :meth:`finish` or :meth:`rescue` is not sent. Times the
client makes itself (a job's ``created_at`` and ``run_at``, a retry's ``run_at``, a
start's ``at``) are stored as given, so keep the clocks of clients in sync (NTP) for
delays to be exact.

Events: :attr:`origin` is the origin of the server's storage (read when opening), since
that storage writes the events of every call made through it; a client queue's event
relay therefore skips them (it published its own calls' events itself) and
``queue.wait`` notices jobs finished by others by re-reading them (10 ms backing off to
1 s). :meth:`listen` is a long poll on ``/worker/listen``, held by one background task
for as long as the listener is open.
"""

from __future__ import annotations

import builtins
import logging
import secrets
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from urllib.parse import quote

import anyio
import httpx
import msgspec

import hyperqueue as hq

from ._errors import Forbidden, HttpError, ServerUnavailable
from ._transport import Transport

__all__ = ["HttpStorage"]

T = TypeVar("T")

_log = logging.getLogger("hyperqueue.http")

_CHUNK = 1000
"""Items per request: the server's bound (``max_items``)."""


class _Jobs(msgspec.Struct, kw_only=True):
    jobs: list[hq.Job]


class _MaybeJobs(msgspec.Struct, kw_only=True):
    jobs: list[hq.Job | None]


class _Refused(msgspec.Struct, kw_only=True):
    extra: _MaybeJobs


class _Kept(msgspec.Struct, kw_only=True):
    kept: list[bool]


class _Started(msgspec.Struct, kw_only=True):
    started: list[bool]


class _Recorded(msgspec.Struct, kw_only=True):
    recorded: bool


class _RunAt(msgspec.Struct, kw_only=True):
    run_at: float | None


class _Listened(msgspec.Struct, kw_only=True):
    event_id: int
    changed: bool = False
    paused: list[str] | None = None  # None from a server older than this field


class _Count(msgspec.Struct, kw_only=True):
    count: int


class _Fired(msgspec.Struct, kw_only=True):
    fired: bool


class _Info(msgspec.Struct, kw_only=True):
    origin: str
    max_wait: float = 30.0


class _Workflow(msgspec.Struct, kw_only=True):
    workflow: hq.WorkflowRecord
    jobs: list[hq.Job]


_encode = msgspec.json.Encoder().encode
_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}


def _decode(kind: type[T], content: bytes) -> T:
    decoder = _decoders.get(kind)
    if decoder is None:
        decoder = _decoders[kind] = msgspec.json.Decoder(kind)
    return decoder.decode(content)  # type: ignore[no-any-return]


def _path(value: str) -> str:
    return quote(value, safe="")


def _chunks(items: Sequence[T]) -> list[Sequence[T]]:
    return [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)] if items else []


class _Listener:
    """Sticky wake-ups fed by the long poll (see :class:`hyperqueue.abc.WorkListener`)."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def clear(self) -> None:
        if self._event.is_set():
            self._event = anyio.Event()

    def signal(self) -> None:
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()


class HttpStorage:
    """A storage over a hyperqueue server at ``url`` (``http://host:port``).

    ``api_key`` is sent as ``Authorization: Bearer``: a ``worker`` key is enough for a
    worker (claim, extend, finish, read a job by id), a queue that enqueues needs an
    ``operator`` key. ``timeout`` (10 s) bounds each request (a long poll gets its wait
    on top). ``retry`` (3 attempts, 50 ms doubling to 1 s, on
    :class:`~hyperqueue_http.ServerUnavailable`) and ``breaker`` (open 5 s after 5
    failures in a row) guard every call; see :mod:`hyperqueue_http._transport` for what
    is retried. ``http2``: ``None`` uses HTTP/2 when ``h2`` is installed (over TLS);
    ``max_connections`` (100) bounds the pool. ``poll_wait`` (20 s) is how long one
    long poll of :meth:`listen` is held. ``transport`` (an ``httpx`` transport) and
    ``headers`` are passed to the ``httpx.AsyncClient``.
    """

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        timeout: float = 10.0,
        retry: hq.Retry | None = None,
        breaker: hq.CircuitBreaker | None = None,
        http2: bool | None = None,
        max_connections: int = 100,
        poll_wait: float = 20.0,
        transport: httpx.AsyncBaseTransport | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        if not poll_wait > 0:
            raise ValueError("poll_wait must be > 0 seconds")
        self.url = url.rstrip("/")
        self.origin = f"http-{secrets.token_hex(8)}"
        self.poll_wait = poll_wait
        self._http = Transport(
            self.url,
            api_key=api_key,
            timeout=timeout,
            retry=retry,
            breaker=breaker,
            http2=http2,
            max_connections=max_connections,
            transport=transport,
            headers=headers,
        )
        self._api = "/api/v1"
        self._opened = False
        self._log_forbidden = False
        self._listeners: set[_Listener] = set()

    @property
    def breaker(self) -> hq.CircuitBreaker:
        """The circuit breaker every call goes through."""
        return self._http.breaker

    def __repr__(self) -> str:
        return f"HttpStorage({self.url!r})"

    # -- plumbing -------------------------------------------------------------------

    async def _call(
        self,
        kind: type[T],
        method: str,
        path: str,
        body: Any = None,
        *,
        params: dict[str, Any] | None = None,
        idempotent: bool = True,
        timeout: float | None = None,
    ) -> T:
        _, content = await self._http.request(
            method,
            self._api + path,
            body=None if body is None else _encode(body),
            params=params,
            idempotent=idempotent,
            timeout=timeout,
        )
        return _decode(kind, content)

    async def _void(self, path: str, body: Any, *, idempotent: bool = True) -> None:
        await self._http.request(
            "POST", self._api + path, body=_encode(body), idempotent=idempotent
        )

    # -- lifecycle ------------------------------------------------------------------

    async def open(self) -> None:
        """Connect and read the server storage's origin; harmless twice."""
        if not self._opened:
            info = await self._call(_Info, "GET", "/storage/info")
            self.origin = info.origin
            self._opened = True

    async def aclose(self) -> None:
        self._opened = False
        await self._http.aclose()

    # -- jobs -----------------------------------------------------------------------

    async def enqueue(
        self,
        jobs: Sequence[hq.Job],
        *,
        now: float,
        key_ttl: float | None,
        max_queued: Mapping[str, int] | None = None,
    ) -> list[hq.Job]:
        out: list[hq.Job] = []
        for chunk in _chunks(jobs):
            body = {"jobs": chunk, "key_ttl": key_ttl, "max_queued": max_queued}
            stored = await self._call(_Jobs, "POST", "/storage/enqueue", body, idempotent=False)
            out += stored.jobs
        return out

    async def claim(
        self,
        queues: Sequence[str] | None,
        *,
        limit: int,
        now: float,
        lease: float,
        worker: str,
        tasks: Sequence[str] | None = None,
        max_running: Mapping[str, int] | None = None,
    ) -> list[hq.Job]:
        body = {
            "worker": worker,
            "queues": queues,
            "tasks": tasks,
            "limit": max(1, min(limit, _CHUNK)),
            "lease": lease,
            "max_running": max_running,
        }
        return (await self._call(_Jobs, "POST", "/worker/claim", body, idempotent=False)).jobs

    async def mark_started(self, starts: Sequence[tuple[str, int, float]]) -> list[bool]:
        out: list[bool] = []
        for chunk in _chunks(starts):
            body = {"starts": [{"id": i, "token": t, "at": at} for i, t, at in chunk]}
            out += (await self._call(_Started, "POST", "/worker/started", body)).started
        return out

    async def finish(self, outcomes: Sequence[hq.Outcome], *, now: float) -> list[hq.Job | None]:
        out: list[hq.Job | None] = []
        for chunk in _chunks(outcomes):
            status, content = await self._http.request(
                "POST",
                self._api + "/worker/finish",
                body=_encode({"outcomes": chunk}),
                idempotent=False,
                accept=(409,),
            )
            if status == 409:  # some refused (stale claims): the others were applied
                out += _decode(_Refused, content).extra.jobs
            else:
                out += _decode(_MaybeJobs, content).jobs
        return out

    async def extend(
        self, leases: Sequence[tuple[str, int]], *, now: float, lease: float
    ) -> list[bool]:
        out: list[bool] = []
        for chunk in _chunks(leases):
            body = {"leases": [{"id": i, "token": t} for i, t in chunk], "lease": lease}
            out += (await self._call(_Kept, "POST", "/worker/extend", body)).kept
        return out

    async def rescue(self, *, now: float) -> list[hq.Job]:
        return (await self._call(_Jobs, "POST", "/worker/rescue", {})).jobs

    async def cancel(self, job_id: str, *, now: float) -> hq.Job:
        return await self._call(hq.Job, "POST", f"/jobs/{_path(job_id)}/cancel")

    async def retry(self, job_id: str, *, now: float) -> hq.Job:
        return await self._call(hq.Job, "POST", f"/jobs/{_path(job_id)}/retry", idempotent=False)

    async def set_progress(
        self, job_id: str, token: int, progress: object, *, now: float = 0.0
    ) -> bool:
        body = {"id": job_id, "token": token, "progress": progress}
        return (await self._call(_Recorded, "POST", "/worker/progress", body)).recorded

    async def get(self, job_id: str) -> hq.Job | None:
        try:
            return await self._call(hq.Job, "GET", f"/worker/jobs/{_path(job_id)}")
        except hq.JobNotFound:
            return None

    async def list(
        self,
        *,
        status: hq.JobStatus | None = None,
        queue: str | None = None,
        task: str | None = None,
        tenant: str | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> hq.Page:
        filters = {"status": status, "queue": queue, "task": task, "tenant": tenant}
        params: dict[str, Any] = {k: str(v) for k, v in filters.items() if v is not None}
        if cursor is not None:
            params["cursor"] = cursor
        params["limit"] = max(1, min(limit, _CHUNK))
        return await self._call(hq.Page, "GET", "/storage/jobs", params=params)

    async def counts(self) -> dict[str, dict[hq.JobStatus, int]]:
        return await self._call(dict[str, dict[hq.JobStatus, int]], "GET", "/storage/counts")

    async def next_run_at(
        self, queues: Sequence[str] | None, tasks: Sequence[str] | None = None
    ) -> float | None:
        body = {"queues": queues, "tasks": tasks}
        return (await self._call(_RunAt, "POST", "/worker/next-run-at", body)).run_at

    async def backlog(self) -> builtins.list[hq.TaskBacklog]:
        return await self._call(builtins.list[hq.TaskBacklog], "GET", "/storage/backlog")

    async def read_events(
        self, *, after: int, limit: int = 1000, skip_origin: str | None = None
    ) -> builtins.list[hq.StoredEvent]:
        """Entries of the server's event log. With a key that may not read it (a
        ``worker`` key) the log reads as empty, once refused: a worker queue's event
        relay then asks no more (every refusal would be an audit record).

        The server's route has no origin filter, so ``skip_origin`` is applied here,
        page after page until ``limit`` entries are kept or a page comes back short (the
        end of the log): fewer than ``limit`` then means none left, as the protocol
        says."""
        if self._log_forbidden:
            return []
        try:
            if skip_origin is None:
                return await self._events(after, max(1, min(limit, _CHUNK)))
            kept: builtins.list[hq.StoredEvent] = []
            while True:
                page = await self._events(after, _CHUNK)
                for entry in page:
                    if entry.origin != skip_origin:
                        kept.append(entry)
                        if len(kept) >= limit:
                            return kept
                if len(page) < _CHUNK:
                    return kept
                after = page[-1].id
        except Forbidden:
            self._forbid_log()
            return []

    async def _events(self, after: int, limit: int) -> builtins.list[hq.StoredEvent]:
        params = {"after": after, "limit": limit}
        return await self._call(
            builtins.list[hq.StoredEvent], "GET", "/storage/events", params=params
        )

    async def last_event_id(self) -> int:
        if self._log_forbidden:
            return 0
        try:
            return (await self._call(_Listened, "GET", "/storage/events/last")).event_id
        except Forbidden:
            self._forbid_log()
            return 0

    def _forbid_log(self) -> None:
        self._log_forbidden = True
        _log.warning("the API key may not read the event log (viewer role): it reads as empty")

    # -- search and bulk actions ------------------------------------------------------

    async def search(
        self, where: hq.JobFilter, *, cursor: str | None = None, limit: int = 100
    ) -> hq.Page:
        body = {"where": where, "cursor": cursor, "limit": max(1, min(limit, _CHUNK))}
        return await self._call(hq.Page, "POST", "/storage/search", body)

    async def count(self, where: hq.JobFilter) -> int:
        return (await self._call(_Count, "POST", "/storage/count", {"where": where})).count

    async def cancel_matching(
        self, where: hq.JobFilter, *, now: float, limit: int, before: str | None = None
    ) -> builtins.list[hq.Job]:
        return await self._matching("cancel", where, limit, before)

    async def retry_matching(
        self, where: hq.JobFilter, *, now: float, limit: int, before: str | None = None
    ) -> builtins.list[hq.Job]:
        return await self._matching("retry", where, limit, before)

    async def discard_matching(
        self, where: hq.JobFilter, *, limit: int, before: str | None = None
    ) -> builtins.list[hq.Job]:
        return await self._matching("discard", where, limit, before)

    async def _matching(
        self, action: str, where: hq.JobFilter, limit: int, before: str | None
    ) -> builtins.list[hq.Job]:
        """One batch (at most 1000 jobs: the caller loops with ``before`` as for any
        storage); sent once, since a batch sent again would act on the next one."""
        body = {"where": where, "limit": max(1, min(limit, _CHUNK)), "before": before}
        path = f"/storage/{action}-matching"
        return (await self._call(_Jobs, "POST", path, body, idempotent=False)).jobs

    async def error_groups(
        self, where: hq.JobFilter, *, limit: int = 100
    ) -> builtins.list[hq.ErrorGroup]:
        body = {"where": where, "limit": max(1, min(limit, _CHUNK))}
        return await self._call(builtins.list[hq.ErrorGroup], "POST", "/storage/error-groups", body)

    # -- workers --------------------------------------------------------------------

    async def register_worker(self, info: hq.WorkerInfo) -> None:
        await self._void("/worker/register", info)

    async def unregister_worker(self, name: str) -> None:
        await self._void("/worker/unregister", {"name": name})

    async def workers(self, *, now: float) -> builtins.list[hq.WorkerInfo]:
        return await self._call(builtins.list[hq.WorkerInfo], "GET", "/storage/workers")

    # -- workflows ------------------------------------------------------------------

    async def enqueue_workflow(
        self,
        workflow: hq.WorkflowRecord,
        jobs: Sequence[hq.Job],
        *,
        now: float,
        max_queued: Mapping[str, int] | None = None,
    ) -> None:
        body = {"workflow": workflow, "jobs": jobs, "max_queued": max_queued}
        await self._void("/storage/workflows", body, idempotent=False)

    async def get_workflow(
        self, workflow_id: str
    ) -> tuple[hq.WorkflowRecord, builtins.list[hq.Job]] | None:
        try:
            found = await self._call(_Workflow, "GET", f"/storage/workflows/{_path(workflow_id)}")
        except hq.WorkflowNotFound:
            return None
        return found.workflow, found.jobs

    async def cancel_workflow(self, workflow_id: str, *, now: float) -> builtins.list[hq.Job]:
        path = f"/storage/workflows/{_path(workflow_id)}/cancel"
        return (await self._call(_Jobs, "POST", path)).jobs

    async def retry_workflow(self, workflow_id: str, *, now: float) -> builtins.list[hq.Job]:
        path = f"/storage/workflows/{_path(workflow_id)}/retry"
        return (await self._call(_Jobs, "POST", path, idempotent=False)).jobs

    # -- periodic jobs --------------------------------------------------------------

    async def save_schedule(self, schedule: hq.Schedule, *, now: float) -> hq.Schedule:
        return await self._call(hq.Schedule, "POST", "/storage/schedules", {"schedule": schedule})

    async def schedules(self) -> builtins.list[hq.Schedule]:
        return await self._call(builtins.list[hq.Schedule], "GET", "/storage/schedules")

    async def fire_schedule(
        self, name: str, *, slot: float, job: hq.Job | None, missed: int, now: float
    ) -> bool:
        body = {"slot": slot, "job": job, "missed": missed}
        path = f"/storage/schedules/{_path(name)}/fire"
        return (await self._call(_Fired, "POST", path, body, idempotent=False)).fired

    async def pause_schedule(self, name: str, *, paused: bool, now: float) -> hq.Schedule:
        path = f"/storage/schedules/{_path(name)}/pause"
        return await self._call(hq.Schedule, "POST", path, {"paused": paused})

    # -- paused queues --------------------------------------------------------------

    async def pause_queue(self, name: str, *, paused: bool, now: float) -> None:
        """Pause or resume ``name`` on the server. A resume wakes this object's listeners
        at once; the server wakes the long polls waiting there, and answers at once a
        poll that arrives after it (each poll names the paused queues it last saw)."""
        await self._void(f"/storage/queues/{_path(name)}/pause", {"paused": paused})
        if not paused:
            for listener in self._listeners:
                listener.signal()

    async def paused_queues(self) -> builtins.list[str]:
        return await self._call(builtins.list[str], "GET", "/storage/paused-queues")

    # -- wake-ups -------------------------------------------------------------------

    async def _listen(
        self, after: int | None, wait: float, paused: builtins.list[str] | None = None
    ) -> _Listened:
        body: dict[str, Any] = {"after": after, "wait": wait}
        if paused is not None:
            body["paused"] = paused
        return await self._call(
            _Listened, "POST", "/worker/listen", body, timeout=wait + self._http.timeout
        )

    @asynccontextmanager
    async def listen(self) -> AsyncIterator[hq.abc.WorkListener]:
        """A listener fed by a long poll on ``/worker/listen`` from the event log's id
        at entry: any change after it, by any process on the server's storage, wakes
        the listener."""
        listener = _Listener()
        first = await self._listen(None, 0.0)
        cursor, paused = first.event_id, first.paused

        async def poll() -> None:
            nonlocal cursor, paused
            while True:
                try:
                    answer = await self._listen(cursor, self.poll_wait, paused)
                except (ServerUnavailable, HttpError, hq.CircuitOpenError):
                    await anyio.sleep(1.0)  # the worker's own calls report the outage
                    listener.signal()  # and claim again once it is over
                    continue
                if answer.changed or answer.event_id != cursor or answer.paused != paused:
                    cursor, paused = answer.event_id, answer.paused
                    listener.signal()

        self._listeners.add(listener)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(poll, name="hyperqueue_http listener")
                try:
                    yield listener
                finally:
                    tg.cancel_scope.cancel()
        finally:
            self._listeners.discard(listener)
