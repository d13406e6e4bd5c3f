"""The audit log (MISSION D6): every mutation and every security event, kept by a sink.

A record says when (the queue's clock), what (``event``, ``action``), who (``actor``:
key name or anonymous, IP, tenant), on what (``resource``), how it ended (``result``:
the HTTP status) and ``metadata``. Mutations are recorded by a middleware that sees each
non-read API request and its answer; security events (failed authentication, forbidden
access, rate-limit hits) arrive as events on the queue's bus. A client that causes
``burst`` security events (default 10) within ``window`` seconds (default 60) is flagged:
a :class:`SuspiciousActivity` event and a ``security.suspicious`` record.

Every refusal, by any layer, is one record. A layer that refuses a request publishes a
security event with :func:`publish_refusal`, which also marks the request: the
middleware then leaves that request out, so a refused mutation is recorded once, as its
security event (``security.auth_failed``, ``security.forbidden``,
``security.rate_limited``, ``security.config_refused``), whichever of the two sees it
(the auth and rate-limit middleware answer before this one is reached; the guard and the
handlers answer inside it). A refusal nobody published (a 404, a 409, a 422 of a
handler) is recorded by the middleware with its status and the answer's ``detail``.

Sinks are a small protocol: :class:`MemoryAuditSink`, and :class:`SQLiteAuditSink`
writing the ``audit_log`` table of the job database (one connection in a worker thread,
the file opened and migrated as ``SQLiteStorage`` opens it). A sink that takes batches
(``write_taken``, as SQLite's, or ``write_many``, as PostgreSQL's) gets the records of
requests from one task of the plugin's lifespan, a batch per write, instead of a write
per request. Either way an answer's last message waits until its record is written, so
a client that got its answer knows the record is kept; reading the log through the API
first waits for the records of the requests answered so far.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Protocol

import anyio
import msgspec
from litestar import Litestar, get
from litestar.config.app import AppConfig
from litestar.params import QueryParameter
from litestar.plugins import InitPlugin
from litestar.types import Guard, Message, Scope

import hyperqueue as hq
from hyperqueue_sqlite import SQLiteStorage, ThreadConnection

from ._pipeline import Call, Layer
from ._security import Actor, SecurityEvent, SuspiciousActivity, actor_of

__all__ = [
    "AUDITED",
    "Audit",
    "AuditPage",
    "AuditRecord",
    "AuditSink",
    "MemoryAuditSink",
    "SQLiteAuditSink",
    "publish_refusal",
]

_logger = logging.getLogger("hyperqueue.audit")
_READS = frozenset({"GET", "HEAD", "OPTIONS"})
_DETAIL_CHARS = 500

AUDITED = "hyperqueue.refusal_published"
"""Key in ``scope["state"]``: the request's refusal was published as a security event
(its audit record), so the audit middleware does not record it again."""


def publish_refusal(queue: hq.Queue, event: SecurityEvent, scope: Scope | None = None) -> None:
    """Publish ``event`` for a refusal (the :class:`Audit` plugin records it) and mark
    ``scope``, the refused request's, as recorded. Never awaits: callable from middleware
    and guards."""
    if scope is not None:
        scope.setdefault("state", {})[AUDITED] = True
    bus = queue.events
    if bus.active:
        bus.publish(event)


class AuditRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One audited fact; ``seq`` is given by the sink (1, 2, 3, ...)."""

    at: float
    event: str
    actor: Actor
    resource: str | None = None
    action: str
    result: str
    metadata: dict[str, Any] = {}
    seq: int = 0


class AuditPage(msgspec.Struct, frozen=True, kw_only=True):
    """Records oldest first; pass ``next_after`` as ``after`` for the next page."""

    items: list[AuditRecord]
    next_after: int | None = None


class AuditSink(Protocol):
    """Where records are kept.

    A sink may also take batches: the :class:`Audit` plugin then writes the records of
    requests in batches, by a task of its lifespan, instead of one write per request.
    Either ``async def write_many(records)``, which keeps ``records`` in one write, or
    ``async def write_taken(take)``, which keeps the records that ``take()`` returns and
    calls it (once, from any thread) only as its write runs, so that records added
    until then join the batch (SQLite's, whose transaction may first wait for the one
    in flight)."""

    async def write(self, record: AuditRecord) -> int:
        """Keep ``record``; returns its ``seq``."""
        ...

    async def read(self, *, after: int = 0, limit: int = 100) -> AuditPage:
        """Records with ``seq`` above ``after``, oldest first, at most ``limit``."""
        ...


class MemoryAuditSink:
    """Records in a list; nothing survives the process (tests, the memory backend)."""

    def __init__(self) -> None:
        self.records: list[AuditRecord] = []

    async def write(self, record: AuditRecord) -> int:
        seq = len(self.records) + 1
        self.records.append(msgspec.structs.replace(record, seq=seq))
        return seq

    async def read(self, *, after: int = 0, limit: int = 100) -> AuditPage:
        items = self.records[after : after + limit]
        more = after + limit < len(self.records)
        return AuditPage(items=items, next_after=items[-1].seq if more and items else None)


_encode = msgspec.json.Encoder().encode
_actor = msgspec.json.Decoder(Actor)
_meta = msgspec.json.Decoder(dict[str, Any])
_INSERT = (
    "INSERT INTO audit_log (at, event, actor, tenant, resource, action, result, metadata)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def record_row(record: AuditRecord) -> tuple[object, ...]:
    """The columns of ``record`` in a table of the log (SQLite's and PostgreSQL's):
    at, event, actor, tenant, resource, action, result, metadata."""
    return (
        record.at,
        record.event,
        _encode(record.actor).decode(),
        record.actor.tenant,
        record.resource,
        record.action,
        record.result,
        _encode(record.metadata).decode(),
    )


class SQLiteAuditSink:
    """``async with SQLiteAuditSink(path) as sink``: records in ``audit_log`` of ``path``.

    The actor is stored as JSON in ``actor`` (its tenant also in ``tenant``), the
    metadata as JSON. ``busy_timeout`` (default 5.0 s) bounds a wait for another
    process's write lock.

    ``storage``: the :class:`~hyperqueue_sqlite.SQLiteStorage` of the same file, when
    the server runs on it. Records are then written by the storage's writer, in the
    transactions it shares between concurrent writes (group commit), rather than by a
    second connection contending for the file's one write lock (whose waiter sleeps in
    SQLite's busy handler); without it, concurrent records still share transactions on
    the sink's own connection. The :class:`Audit` plugin writes the records of
    requests with :meth:`write_taken`: on the storage, they are taken as the write's
    transaction runs, so the records of answers that come in while the transaction
    before it is in flight join it. Taken when the batch task starts its write, they
    split into a batch of one and a batch of the rest, and the requests behind them fall
    into the same two groups, one transaction more per group (measured in
    docs/benchmarks.md, "Server").
    """

    def __init__(
        self, path: str | Path, *, busy_timeout: float = 5.0, storage: SQLiteStorage | None = None
    ) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self._db = ThreadConnection(self.path, what="SQLite audit sink", busy_timeout=busy_timeout)
        if storage is not None and Path(storage.path).resolve() != self.path.resolve():
            raise ValueError(f"the storage is on {storage.path}, not on {self.path}")
        self._storage = storage

    async def __aenter__(self) -> SQLiteAuditSink:
        await self._db.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._db.aclose()

    async def _call(self, doing: str, sql: str, params: tuple[object, ...]) -> list[Any]:
        return await self._db.query(doing, sql, params)

    async def write(self, record: AuditRecord) -> int:
        sql = f"{_INSERT} RETURNING seq"
        if self._storage is not None:
            rows = await self._storage.execute_write(sql, record_row(record))
        else:
            rows = await self._db.write("writing an audit record", sql, record_row(record))
        return int(rows[0][0])

    async def write_taken(self, take: Callable[[], Sequence[AuditRecord]]) -> int:
        """Keep the records ``take()`` returns, in order; returns how many. On the
        storage, ``take`` is called in its writer thread as the transaction runs."""
        if self._storage is not None:
            return await self._storage.execute_write_many(
                _INSERT, lambda: [record_row(record) for record in take()]
            )
        rows = [record_row(record) for record in take()]
        await self._db.write_values("writing audit records", _INSERT, rows)
        return len(rows)

    async def read(self, *, after: int = 0, limit: int = 100) -> AuditPage:
        rows = await self._call(
            "reading the audit log",
            "SELECT seq, at, event, actor, resource, action, result, metadata FROM audit_log"
            " WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, limit + 1),
        )
        items = [
            AuditRecord(
                seq=seq,
                at=at,
                event=event,
                actor=_actor.decode(actor) if actor else Actor(type="anonymous"),
                resource=resource,
                action=action,
                result=result,
                metadata=_meta.decode(metadata),
            )
            for seq, at, event, actor, resource, action, result, metadata in rows[:limit]
        ]
        return AuditPage(items=items, next_after=items[-1].seq if len(rows) > limit else None)


def _action(method: str, route: str, prefix: str) -> tuple[str, str]:
    """(event, action) of a mutation, from its route template."""
    tail = route[len(prefix) :] if route.startswith(prefix) else route
    if tail == "/jobs" and method == "POST":
        return "job.submit", "submit"
    if tail == "/jobs/batch":
        return "job.batch", "batch"
    for kind, plural in (
        ("workflow", "/workflows"),
        ("schedule", "/schedules"),
        ("queue", "/queues"),
    ):
        if tail == plural and method == "POST":
            return f"{kind}.submit", "submit"
        if tail.startswith(plural + "/"):
            verb = tail.rsplit("/", 1)[-1]
            return f"{kind}.{verb}", verb
    if tail.endswith("/cancel"):
        return "job.cancel", "cancel"
    if tail.endswith("/retry"):
        return "job.retry", "retry"
    if tail.startswith("/config"):
        return "config.change", method.lower()
    return "api.mutation", f"{method.lower()} {tail}"


_Facts = tuple[str, str, str | None, str]


class Audit(InitPlugin):
    """A Litestar plugin: ``create_app(queue, plugins=[Audit(queue, sink)])``.

    ``guards`` protect ``GET {api_prefix}/audit`` (pass the auth guard: the route asks
    for the admin role); ``burst`` (10) security events from one client within
    ``window`` seconds (60) flag it as suspicious, once per window.
    """

    def __init__(
        self,
        queue: hq.Queue,
        sink: AuditSink | None = None,
        *,
        guards: Sequence[Guard] = (),
        api_prefix: str = "/api/v1",
        burst: int = 10,
        window: float = 60.0,
    ) -> None:
        if burst < 1 or window <= 0:
            raise ValueError("burst must be >= 1 and window > 0 seconds")
        self.queue = queue
        self.clock = queue.clock
        self.sink: AuditSink = sink if sink is not None else MemoryAuditSink()
        self.guards = list(guards)
        self.api_prefix = "/" + api_prefix.strip("/")
        self.burst = burst
        self.window = window
        self._recent: dict[str, deque[tuple[float, str]]] = {}
        self.dropped = 0
        """Security events lost because the audit task fell 1000 behind."""
        self.failed = 0
        """Security events and records the sink failed to record."""
        self._facts: dict[tuple[str, str], _Facts] = {}
        self.batches: _Batches | None = None
        """Writes the records of requests while the app runs, when the sink takes batches."""
        self.middleware = _AuditMiddleware(self)

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        audit = self

        @get(
            f"{self.api_prefix}/audit",
            guards=self.guards,
            opt={"hyperqueue_role": "admin"},
            name="hyperqueue_audit",
            summary="The audit log, oldest first (admin only)",
        )
        async def read_audit(
            after: Annotated[int, QueryParameter(ge=0, le=2**63 - 1)] = 0,  # SQLite's int
            limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
        ) -> AuditPage:
            await audit.flush()  # the records of the requests answered so far
            return await audit.sink.read(after=after, limit=limit)

        app_config.route_handlers.append(read_audit)
        app_config.middleware.append(self.middleware)
        app_config.lifespan.append(self.lifespan)
        return app_config

    @asynccontextmanager
    async def lifespan(self, app: Litestar) -> AsyncIterator[None]:
        """Security events are taken inline into a bounded buffer (1000; beyond it they
        are dropped and counted in :attr:`dropped`) and written by a task of this
        lifespan, which drains the buffer before the app stops."""
        send, receive = anyio.create_memory_object_stream[SecurityEvent](1000)

        def take(event: SecurityEvent) -> None:
            try:
                send.send_nowait(event)
            except (anyio.WouldBlock, anyio.ClosedResourceError):
                self.dropped += 1

        async def write_all() -> None:
            async with receive:
                async for event in receive:
                    try:
                        await self._security_event(event)
                    except Exception:  # a failing sink must not stop the audit task
                        self.failed += 1
                        _logger.exception("audit: recording a security event failed")

        unsubscribe = self.queue.events.subscribe(take, SecurityEvent, name="audit")
        batched = hasattr(self.sink, "write_taken") or hasattr(self.sink, "write_many")
        try:
            async with AsyncExitStack() as stack, anyio.create_task_group() as tg:
                if isinstance(self.sink, AbstractAsyncContextManager):  # e.g. SQLite's
                    await stack.enter_async_context(self.sink)
                tg.start_soon(write_all)
                if batched:
                    self.batches = _Batches(self)
                    tg.start_soon(self.batches.run)
                try:
                    yield
                finally:
                    unsubscribe()
                    send.close()
                    if self.batches is not None:
                        self.batches.close()  # its task writes what is left, then ends
        finally:
            unsubscribe()
            self.batches = None

    def _route_facts(self, method: str, route: str) -> _Facts:
        """What a record of ``method`` on ``route`` says: event, action, and the path
        parameter naming its resource (``None``: the answer's ``id`` does) with the
        resource's prefix; worked out once per route."""
        facts = self._facts.get((method, route))
        if facts is None:
            event, action = _action(method, route, self.api_prefix)
            kind = event.split(".", 1)[0]
            param: str | None = None
            prefix = "workflow" if kind == "workflow" else "job"  # of an id in the answer
            for name, named in (("job_id", "job"), ("workflow_id", "workflow"), ("name", kind)):
                if f"{{{name}}}" in route:  # the route's path parameters
                    param, prefix = name, named
                    break
            facts = (event, action, param, prefix)
            if len(self._facts) < 4096:  # methods come from clients: keep it bounded
                self._facts[(method, route)] = facts
        return facts

    async def flush(self) -> None:
        """Return once the records of requests answered so far are written."""
        if self.batches is not None:
            await self.batches.flush()

    async def record(self, record: AuditRecord) -> None:
        """Write ``record``; a failing sink is logged and counted in :attr:`failed`,
        never turned into a failed request (the response may already be on its way)."""
        try:
            await self.sink.write(record)
        except Exception:
            self.failed += 1
            _logger.exception("audit: writing a record failed")

    async def _security_event(self, event: SecurityEvent) -> None:
        tag = type(event).__struct_config__.tag
        kind = tag if isinstance(tag, str) else type(event).__name__
        await self.record(
            AuditRecord(
                at=event.at,
                event=kind,
                actor=event.actor,
                resource=event.route,
                action=event.method,
                result="refused",
                metadata={"detail": event.detail},
            )
        )
        recent = self._recent.setdefault(event.client, deque())
        recent.append((event.at, kind))
        while recent and recent[0][0] <= event.at - self.window:
            recent.popleft()
        if len(recent) >= self.burst:
            kinds: dict[str, int] = {}
            for _, k in recent:
                kinds[k] = kinds.get(k, 0) + 1
            count = len(recent)
            recent.clear()  # flagged once per burst
            flagged = SuspiciousActivity(
                at=event.at,
                client=event.client,
                actor=event.actor,
                count=count,
                window=self.window,
                kinds=kinds,
            )
            self.queue.events.publish(flagged)
            await self.record(
                AuditRecord(
                    at=event.at,
                    event="security.suspicious",
                    actor=event.actor,
                    resource=event.client,
                    action="flag",
                    result="flagged",
                    metadata={"count": count, "window": self.window, "kinds": kinds},
                )
            )


class _Batches:
    """The records of requests, written in batches by one task of the audit's lifespan.

    A request's record is added as the end of its answer is about to go out, and the
    answer waits until the batch holding it is written: no write of its own per
    request, yet no answer completes before its record is kept. The task writes
    whatever came in while it wrote the previous batch as one batch (in order, one
    statement, within the storage's shared transactions); a sink with ``write_taken``
    takes the batch only as its write runs, so what comes in meanwhile joins it. When
    the app stops, the task writes everything left before it ends. Nothing is dropped,
    and the records waiting are at most the requests in flight. A failing write is
    logged and counted in ``Audit.failed`` (the answers then go out: an audit fault
    never fails a request).
    """

    __slots__ = (
        "_added", "_audit", "_closed", "_done", "_pending", "_progress", "_taken", "_wake",
        "_write",
    )  # fmt: skip

    def __init__(self, audit: Audit) -> None:
        self._audit = audit
        sink: Any = audit.sink
        write_taken = getattr(sink, "write_taken", None)
        if write_taken is not None:
            self._write: Callable[[], Awaitable[object]] = partial(write_taken, self._take)
        else:
            write_many = sink.write_many
            self._write = lambda: write_many(self._take())
        self._pending: deque[AuditRecord] = deque()  # added on the loop, taken anywhere
        self._wake = anyio.Event()
        self._progress: anyio.Event | None = None  # made by a flush, set after a batch
        self._added = 0
        self._taken = 0
        self._done = 0
        self._closed = False

    def add(self, record: AuditRecord) -> bool:
        """Queue ``record``; False once the task is ending (write it yourself)."""
        if self._closed:
            return False
        self._pending.append(record)
        self._added += 1
        if len(self._pending) == 1:
            self._wake.set()
        return True

    def _take(self) -> list[AuditRecord]:
        """The records added and not taken yet, oldest first; called by the sink as its
        write runs, perhaps in its writer thread (deque's append and popleft are
        thread-safe, and one write runs at a time)."""
        pending = self._pending
        batch = [pending.popleft() for _ in range(len(pending))]
        self._taken += len(batch)
        return batch

    def close(self) -> None:
        self._closed = True
        self._wake.set()

    async def flush(self) -> None:
        """Return once every record added so far is written (or failed)."""
        target = self._added
        while self._done < target:
            if self._progress is None:
                self._progress = anyio.Event()
            await self._progress.wait()

    async def run(self) -> None:
        while True:
            if not self._pending and not self._closed:
                await self._wake.wait()
                self._wake = anyio.Event()
            if self._pending:
                before = self._taken
                try:
                    await self._write()
                    lost = 0 if self._taken > before else len(self._take())  # a sink's bug
                except Exception:  # a failing sink must not stop the task
                    if self._taken == before:  # it failed before taking them
                        self._take()
                    lost = self._taken - before
                    _logger.exception("audit: writing %d records failed", lost)
                self._audit.failed += lost
                self._done = self._taken
                progress, self._progress = self._progress, None
                if progress is not None:
                    progress.set()
            if self._closed and not self._pending:
                return


class _AuditMiddleware(Layer):
    def __init__(self, audit: Audit) -> None:
        self.audit = audit

    async def enter(self, call: Call) -> _Recorded | None:
        if call.method in _READS or not call.route.startswith(self.audit.api_prefix):
            return None
        return _Recorded(self.audit, call)


class _Answer(msgspec.Struct):
    """What a record takes from an answer's JSON body (anything else in it is skipped
    unread)."""

    id: Any = None
    detail: Any = None
    items: Any = None
    created: Any = None
    existing: Any = None
    failed: Any = None


_answer = msgspec.json.Decoder(_Answer)


class _Recorded:
    """One mutation on its way: its status and the start of its answer.

    Its record is kept before the last message of the answer goes out, so a client
    holding a whole answer knows its record is kept (a process killed before then
    loses the answer too); a request that ends without that message (it failed, or its
    client left) is recorded once it is over. A refusal published as a security event
    is recorded once already, as that event."""

    __slots__ = ("audit", "call", "chunks", "recorded", "started", "status")

    def __init__(self, audit: Audit, call: Call) -> None:
        self.audit = audit
        self.call = call
        self.status = 500
        self.chunks: list[bytes] = []
        self.started = audit.clock.now()
        self.recorded = False

    def seen(self, message: Message) -> Awaitable[None] | None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        elif message["type"] == "http.response.body":
            if len(self.chunks) < 64:
                self.chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return self._keep()  # the answer's end waits for its record
        return None

    def close(self) -> Awaitable[None] | None:
        return None if self.recorded else self._keep()

    def _keep(self) -> Awaitable[None] | None:
        self.recorded = True
        if (self.call.scope.get("state") or {}).get(AUDITED):
            return None
        batches = self.audit.batches
        if batches is not None and batches.add(self._record()):
            return batches.flush()  # written in order: this one's batch is done
        return self._write()

    async def _write(self) -> None:
        """Write the record with no batch to join (a sink that takes one at a time,
        or the app stopping)."""
        with anyio.CancelScope(shield=True):
            await self.audit.record(self._record())

    def _record(self) -> AuditRecord:
        audit, call, status = self.audit, self.call, self.status
        scope: Scope = call.scope
        method, route = call.method, call.route
        event, action, param, prefix = audit._route_facts(method, route)
        resource: str | None = None
        if param is not None:
            params = scope.get("path_params") or {}
            if param in params:
                resource = f"{prefix}:{params[param]}"
        metadata: dict[str, Any] = {"method": method, "route": route, "status": status}
        body: _Answer | None = None
        if 200 <= status < 500 and self.chunks:
            try:
                body = _answer.decode(b"".join(self.chunks))
            except msgspec.DecodeError:
                body = None
        if body is not None:
            if status >= 400:
                if isinstance(body.detail, str):
                    metadata["detail"] = body.detail[:_DETAIL_CHARS]  # why it was refused
            elif status < 300:
                if resource is None and isinstance(body.id, str):
                    resource = f"{prefix}:{body.id}"
                if isinstance(body.items, list):
                    metadata["ids"] = [
                        i["job"]["id"]
                        for i in body.items
                        if isinstance(i, dict) and isinstance(i.get("job"), dict)
                    ]
                if body.created is not None or body.existing is not None or body.failed is not None:
                    counts = (
                        ("created", body.created),
                        ("existing", body.existing),
                        ("failed", body.failed),
                    )
                    metadata.update({k: v for k, v in counts if isinstance(v, int)})
        return AuditRecord(
            at=self.started,
            event=event,
            actor=actor_of(scope),
            resource=resource,
            action=action,
            result="success" if 200 <= status < 400 else f"error {status}",
            metadata=metadata,
        )
