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
the file opened and migrated as ``SQLiteStorage`` opens it).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Protocol

import anyio
import msgspec
from litestar import Litestar, get
from litestar.config.app import AppConfig
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.params import QueryParameter
from litestar.plugins import InitPlugin
from litestar.types import ASGIApp, Guard, Message, Receive, Scope, Send

import hyperqueue as hq
from hyperqueue_sqlite import SQLiteStorage, ThreadConnection

from ._security import Actor, SecurityEvent, SuspiciousActivity, actor_of, route_of

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
    """Where records are kept."""

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
    the sink's own connection.
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
        sql = (
            "INSERT INTO audit_log (at, event, actor, tenant, resource, action, result, metadata)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq"
        )
        params = (
            record.at,
            record.event,
            _encode(record.actor).decode(),
            record.actor.tenant,
            record.resource,
            record.action,
            record.result,
            _encode(record.metadata).decode(),
        )
        if self._storage is not None:
            rows = await self._storage.execute_write(sql, params)
        else:
            rows = await self._db.write("writing an audit record", sql, params)
        return int(rows[0][0])

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
        """Security events the sink failed to record."""
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
        try:
            async with AsyncExitStack() as stack, anyio.create_task_group() as tg:
                if isinstance(self.sink, AbstractAsyncContextManager):  # e.g. SQLite's
                    await stack.enter_async_context(self.sink)
                tg.start_soon(write_all)
                try:
                    yield
                finally:
                    unsubscribe()
                    send.close()
        finally:
            unsubscribe()

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


class _AuditMiddleware(ASGIMiddleware):
    scopes = (ScopeType.HTTP,)

    def __init__(self, audit: Audit) -> None:
        self.audit = audit

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        method = str(scope.get("method", "GET"))
        route = route_of(scope)
        audit = self.audit
        if method in _READS or not route.startswith(audit.api_prefix):
            await next_app(scope, receive, send)
            return
        status = 500
        chunks: list[bytes] = []

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and len(chunks) < 64:
                chunks.append(message.get("body", b""))
            await send(message)

        started = audit.clock.now()
        try:
            await next_app(scope, receive, watch)
        finally:
            # a refusal published as a security event is recorded once already
            if not (scope.get("state") or {}).get(AUDITED):
                with anyio.CancelScope(shield=True):
                    await self._record(scope, method, route, status, chunks, started)

    async def _record(
        self,
        scope: Scope,
        method: str,
        route: str,
        status: int,
        chunks: list[bytes],
        started: float,
    ) -> None:
        audit = self.audit
        event, action = _action(method, route, audit.api_prefix)
        params = scope.get("path_params") or {}
        kind = event.split(".", 1)[0]
        resource: str | None = None
        for name, prefix in (("job_id", "job"), ("workflow_id", "workflow"), ("name", kind)):
            if name in params:
                resource = f"{prefix}:{params[name]}"
                break
        metadata: dict[str, Any] = {"method": method, "route": route, "status": status}
        body: Any = None
        if 200 <= status < 500 and chunks:
            try:
                body = msgspec.json.decode(b"".join(chunks))
            except msgspec.DecodeError:
                body = None
        if isinstance(body, dict):
            if status >= 400 and isinstance(body.get("detail"), str):
                metadata["detail"] = body["detail"][:_DETAIL_CHARS]  # why it was refused
            elif status < 300:
                if resource is None and isinstance(body.get("id"), str):
                    resource = f"{'workflow' if kind == 'workflow' else 'job'}:{body['id']}"
                if isinstance(body.get("items"), list):
                    metadata["ids"] = [
                        i["job"]["id"]
                        for i in body["items"]
                        if isinstance(i, dict) and isinstance(i.get("job"), dict)
                    ]
                for name in ("created", "existing", "failed"):
                    if isinstance(body.get(name), int):
                        metadata[name] = body[name]
        await audit.record(
            AuditRecord(
                at=started,
                event=event,
                actor=actor_of(scope),
                resource=resource,
                action=action,
                result="success" if 200 <= status < 400 else f"error {status}",
                metadata=metadata,
            )
        )
