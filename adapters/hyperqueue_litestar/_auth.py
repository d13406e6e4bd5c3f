"""API keys, roles and tenants (MISSION D4).

Keys are configured as the SHA-256 of the key (:meth:`ApiKey.hash_key`), never the key:
a presented key is hashed and compared with every configured hash by
:func:`hmac.compare_digest`, all of them every time, so neither the answer's timing nor
an early exit tells an attacker how close a guess came. Keys are never logged; usage
figures name a key by its configured ``name``.

Three pieces plug into Litestar:

- :meth:`Auth.guard` (a Litestar guard, for the API routes): 401 for a missing or
  unknown key, 403 for a role that may not. The role a route needs comes from the
  handler's ``opt["hyperqueue_role"]`` when set, else from the method and route: reads
  need ``viewer``, job and dead-letter mutations ``operator``, anything else ``admin``.
  The worker protocol's routes (``/worker/...``) need ``worker``, a role that does
  nothing else and that operator and admin keys also have (:meth:`Principal.may`).
- :attr:`Auth.middleware`: resolves the caller once per request (cached in the scope for
  the rate limits and the audit log) and confines a tenant-bound key to its tenant: a
  submission is forced to the key's tenant, a listing filtered to it, another tenant's
  job answers 404 (not 403: its existence is not revealed), and the tenant's quotas
  ``max_queued`` refuses a submission over it with 429; ``max_running`` caps how many of
  the tenant's jobs the workers run at once (the rest wait, see ``Queue.tenant_limits``).
  Each refusal of confinement (another tenant's job, a route a tenant may not use) is
  published as :class:`AccessDenied` like the guard's 401 and 403, so every refusal is
  one audit record (:func:`~._audit.publish_refusal`).
- :attr:`Auth.open`: True when no key is configured; the server then lets everyone in
  (the CLI says so at start-up).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import msgspec
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.types import ReceiveMessage, Scope

import hyperqueue as hq
from hyperqueue import Clock, SystemClock

from ._audit import publish_refusal
from ._config import ApiKey, Config, TenantQuota
from ._pipeline import ANSWERED, Call, Entry, Layer
from ._security import (
    PRINCIPAL,
    ROLE_RANK,
    AccessDenied,
    AuthenticationFailed,
    Principal,
    Role,
    actor_of,
    client_ip,
    header,
    route_of,
    send_json,
)

__all__ = ["Auth", "KeyRing", "KeyUsage", "presented_key", "required_role"]

ROLE_OPT = "hyperqueue_role"
"""A handler's ``opt`` key naming the role it needs, overriding the default rule."""

_INVALID = object()  # a key was presented and matched nothing
_MISSING = object()
_READS = frozenset({"GET", "HEAD", "OPTIONS"})


class KeyUsage(msgspec.Struct, frozen=True, kw_only=True):
    """How one key has been used since the server started (kept in memory only).

    ``requests`` counts requests it authenticated, ``denied`` those its role did not
    allow (403), ``last_used`` when it last authenticated (seconds since the epoch on
    the server's clock; ``None`` if never)."""

    name: str
    tenant: str | None
    roles: tuple[str, ...]
    requests: int
    denied: int
    last_used: float | None


class _Entry:
    __slots__ = ("denied", "digest", "last_used", "principal", "requests")

    def __init__(self, key: ApiKey) -> None:
        roles: tuple[Role, ...] = tuple(key.roles)
        self.principal = Principal(
            name=key.name,
            roles=roles,
            tenant=key.tenant,
            rank=max(ROLE_RANK[r] for r in roles),
        )
        self.digest = bytes.fromhex(key.key_hash)
        self.requests = 0
        self.denied = 0
        self.last_used: float | None = None


class KeyRing:
    """The configured keys and their usage figures."""

    __slots__ = ("_by_name", "_entries", "clock")

    def __init__(self, keys: Sequence[ApiKey] = (), *, clock: Clock | None = None) -> None:
        self._entries = tuple(_Entry(key) for key in keys)
        self._by_name = {e.principal.name: e for e in self._entries}
        self.clock = clock if clock is not None else SystemClock()

    @property
    def open(self) -> bool:
        """No key is configured: every request is let in."""
        return not self._entries

    def authenticate(self, key: str) -> Principal | None:
        """The principal whose hash matches ``key``, else ``None``; every configured hash
        is compared (in constant time) whatever the outcome."""
        digest = hashlib.sha256(key.encode()).digest()
        found: _Entry | None = None
        for entry in self._entries:
            if hmac.compare_digest(entry.digest, digest):
                found = entry
        if found is None:
            return None
        found.requests += 1
        found.last_used = self.clock.now()
        return found.principal

    def carry_usage(self, old: KeyRing) -> None:
        """Keep ``old``'s figures for the keys both rings name, so a reload that leaves a
        key in place does not reset its usage."""
        for name, entry in self._by_name.items():
            before = old._by_name.get(name)
            if before is not None:
                entry.requests = before.requests
                entry.denied = before.denied
                entry.last_used = before.last_used

    def note_denied(self, name: str) -> None:
        entry = self._by_name.get(name)
        if entry is not None:
            entry.denied += 1

    def usage(self) -> list[KeyUsage]:
        """Usage figures of every key, in configuration order."""
        return [
            KeyUsage(
                name=e.principal.name,
                tenant=e.principal.tenant,
                roles=e.principal.roles,
                requests=e.requests,
                denied=e.denied,
                last_used=e.last_used,
            )
            for e in self._entries
        ]


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key from ``Authorization: Bearer <key>``, else from ``X-API-Key``."""
    return _key_of(headers.get("authorization"), headers.get("x-api-key"))


def _key_of(authorization: str | None, api_key: str | None) -> str | None:
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return api_key.strip() if api_key and api_key.strip() else None


def required_role(method: str, route: str, opt: Mapping[str, Any], api_prefix: str) -> Role:
    """The role a request needs: the handler's ``opt["hyperqueue_role"]`` if set; else
    ``viewer`` to read, ``operator`` to change jobs or dead letters (submit, batch,
    cancel, retry, replay), ``admin`` for every other change (configuration first)."""
    role = opt.get(ROLE_OPT)
    if role is not None:
        if role not in ROLE_RANK:
            raise ValueError(f"{ROLE_OPT} must be one of {sorted(ROLE_RANK)}, not {role!r}")
        return role  # type: ignore[no-any-return]
    if method in _READS:
        return "viewer"
    if method == "POST" and route.startswith((f"{api_prefix}/jobs", f"{api_prefix}/dead-letters")):
        return "operator"
    return "admin"


class _TenantRoutes:
    """The API routes a tenant-bound key may use, by route template."""

    def __init__(self, prefix: str) -> None:
        self.submit = f"{prefix}/jobs"
        self.batch = f"{prefix}/jobs/batch"
        self.listing = f"{prefix}/jobs"
        self.one = re.compile(rf"^{re.escape(prefix)}/jobs/\{{job_id\}}(/cancel|/retry)?$")
        # routes that confine a tenant's key themselves: workflows (its steps, its
        # runs), and search, counts, bulk actions and dead-letter groups (the key's
        # tenant is ANDed with the caller's query)
        p = re.escape(prefix)
        self.self_confined = re.compile(
            rf"^{p}/workflows(/\{{workflow_id\}}(/cancel|/retry)?)?$"
            rf"|^{p}/jobs/(count|cancel|retry|discard)$|^{p}/dead-letters/groups$"
        )
        self.prefix = prefix


class Auth:
    """API keys, roles and tenant confinement for one app.

    ``keys`` are the configured :class:`ApiKey` (or a :class:`KeyRing`); ``tenants``
    their quotas, which the storage enforces (see :meth:`_cap_running`). ``queue`` is the
    served queue (its clock times key usage, its event bus carries
    :class:`AuthenticationFailed` and :class:`AccessDenied`). ``max_body_size``
    (10 MiB) bounds how much of a submission is read to set its tenant; a
    larger body goes on untouched to get its 413.
    """

    def __init__(
        self,
        queue: hq.Queue,
        *,
        keys: Sequence[ApiKey] | KeyRing = (),
        tenants: Mapping[str, TenantQuota] | None = None,
        api_prefix: str = "/api/v1",
        max_body_size: int = 10 * 1024 * 1024,
    ) -> None:
        self.queue = queue
        # the host app's own caps: the server's tenant quotas add to them, never replace
        self._host_running = dict(queue.tenant_limits)
        self._host_queued = dict(queue.tenant_quotas)
        self.clock = queue.clock
        self.keys = keys if isinstance(keys, KeyRing) else KeyRing(keys, clock=queue.clock)
        self.tenants: dict[str, TenantQuota] = dict(tenants or {})
        self._cap_running()
        self.api_prefix = "/" + api_prefix.strip("/")
        self.max_body_size = max_body_size
        self._routes = _TenantRoutes(self.api_prefix)
        # the role each (handler's own role, method, route) needs, worked out once
        self._roles: dict[tuple[Any, str, str], Role] = {}
        self.middleware = _AuthMiddleware(self)
        # A plain function, not a bound method: Litestar deep-copies the guards it is
        # given, and a copied bound method would carry a copy of this object (and of
        # the queue) that no figure or event of the real one would reach.
        self.guard = _guard_of(self)

    @classmethod
    def from_config(cls, queue: hq.Queue, config: Config, **options: Any) -> Auth:
        return cls(queue, keys=config.keys, tenants=config.tenants, **options)

    @property
    def open(self) -> bool:
        """No API key is configured: the API is open to everyone."""
        return self.keys.open

    def apply(self, config: Config) -> None:
        """Take ``config``'s keys, roles and tenant quotas from the next request on.

        Synchronous on purpose: the new key ring and quotas replace the old ones between
        two awaits, so no request sees half of a change. A request already past its
        authentication finishes as the old keys allowed; usage figures stay with the
        keys that remain (by name), and cached tenant counts are dropped.
        """
        ring = KeyRing(config.keys, clock=self.clock)
        ring.carry_usage(self.keys)
        self.keys = ring
        self.tenants = dict(config.tenants)
        self._cap_running()

    def _cap_running(self) -> None:
        """Both quotas are enforced by the storage, across every process: ``max_running``
        where jobs are claimed (``Queue.tenant_limits``), ``max_queued`` where they are
        enqueued (``Queue.tenant_quotas``, a :class:`hyperqueue.QuotaExceeded` answers
        429). Where the host app set its own cap for a tenant, the lower one holds."""
        self.queue.tenant_limits = _tighter(
            self._host_running, {name: q.max_running for name, q in self.tenants.items()}
        )
        self.queue.tenant_quotas = _tighter(
            self._host_queued, {name: q.max_queued for name, q in self.tenants.items()}
        )

    def usage(self) -> list[KeyUsage]:
        return self.keys.usage()

    # -- who is calling ---------------------------------------------------------------

    def resolve(self, scope: Scope) -> Any:
        """The caller's :class:`Principal`, ``None`` when no key was presented, or the
        invalid marker; computed once per request and cached in the scope."""
        state = scope.setdefault("state", {})
        found = state.get(PRINCIPAL, _MISSING)
        if found is _MISSING:
            key = _key_of(header(scope, b"authorization"), header(scope, b"x-api-key"))
            found = None if key is None else (self.keys.authenticate(key) or _INVALID)
            state[PRINCIPAL] = found
        return found

    # -- the guard ----------------------------------------------------------------------

    def permits(self, scope: Scope, method: str, route: str) -> bool:
        """Whether :meth:`check` would let this request through (worked out as it does,
        with no refusal published): for a layer that answers before the route does."""
        if self.open:
            return True
        found = self.resolve(scope)
        return isinstance(found, Principal) and found.may(
            self._role(scope.get("route_handler"), method, route)
        )

    async def check(
        self, connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
    ) -> None:
        """What :attr:`guard` does: 401 without a valid key, 403 when the role may not."""
        if self.keys.open:
            return
        scope = connection.scope
        found = self.resolve(scope)
        method = str(scope.get("method", "GET"))
        route = route_of(scope)
        if not isinstance(found, Principal):
            detail = "an API key is required" if found is None else "unknown API key"
            self._publish(AuthenticationFailed, scope, method, route, detail)
            raise NotAuthorizedException(
                detail=f"{detail}: send it as 'Authorization: Bearer <key>' or 'X-API-Key'"
            )
        role = self._role(handler, method, route)
        if not found.may(role):
            self.keys.note_denied(found.name)
            detail = f"key {found.name!r} may not {method} {route}: it needs the {role} role"
            self._publish(AccessDenied, scope, method, route, detail)
            raise PermissionDeniedException(detail=detail)

    def _role(self, handler: BaseRouteHandler, method: str, route: str) -> Role:
        """:func:`required_role`, remembered per method, route and role the handler
        names (all it depends on)."""
        named = handler.opt.get(ROLE_OPT)
        if named is not None and not isinstance(named, str):  # refused by required_role
            return required_role(method, route, handler.opt, self.api_prefix)
        key = (named, method, route)
        role = self._roles.get(key)
        if role is None:
            role = required_role(method, route, handler.opt, self.api_prefix)
            if len(self._roles) < 4096:  # methods come from clients: keep it bounded
                self._roles[key] = role
        return role

    def _publish(self, kind: type[Any], scope: Scope, method: str, route: str, detail: str) -> None:
        """Publish the refusal of this request (its one audit record)."""
        actor = actor_of(scope)
        publish_refusal(
            self.queue,
            kind(
                at=self.clock.now(),
                client=actor.id or actor.ip or client_ip(scope),
                actor=actor,
                method=method,
                route=route,
                detail=detail,
            ),
            scope,
        )


Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]


def _guard_of(auth: Auth) -> Guard:
    async def guard(
        connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
    ) -> None:
        """Litestar guard: 401 without a valid key, 403 when the key's role may not."""
        await auth.check(connection, handler)

    return guard


class _AuthMiddleware(Layer):
    """Resolves the caller, and keeps a tenant-bound key inside its tenant."""

    def __init__(self, auth: Auth) -> None:
        self.auth = auth

    async def enter(self, call: Call) -> Entry:
        auth = self.auth
        if auth.keys.open:
            return None
        scope = call.scope
        found = auth.resolve(scope)
        tenant = found.tenant if isinstance(found, Principal) else None
        route = call.route
        if tenant is None or not route.startswith(auth.api_prefix):
            return None
        routes = auth._routes
        method = call.method
        if method == "GET" and route == routes.listing:
            scope["query_string"] = _force_query(scope["query_string"], tenant)
            return None
        if method == "POST" and route in (routes.submit, routes.batch):
            await self._submit(call, tenant, route == routes.batch)
            return None
        if routes.self_confined.match(route):
            return None
        if routes.one.match(route):
            job_id = str(scope["path_params"].get("job_id", ""))
            try:
                job = await auth.queue.get(job_id)
            except hq.JobNotFound:
                job = None
            if job is None or job.tenant != tenant:
                if job is not None:  # it exists: a refusal, not a miss
                    auth._publish(
                        AccessDenied,
                        scope,
                        method,
                        route,
                        f"key {found.name!r} of tenant {tenant!r} reached job {job_id!r} of "
                        "another tenant: answered 404",
                    )
                await send_json(
                    call.send, 404, f"job {job_id!r} not found", extra={"job_id": job_id}
                )
                return ANSWERED
            return None
        detail = f"{method} {route} is not available to a key bound to tenant {tenant!r}"
        auth._publish(AccessDenied, scope, method, route, f"key {found.name!r}: {detail}")
        await send_json(call.send, 403, detail)
        return ANSWERED

    async def _submit(self, call: Call, tenant: str, batch: bool) -> None:
        """Read the submission, set its tenant to the key's, and hand the app the new
        body (an unreadable or oversized one goes on untouched, to be refused there)."""
        auth, scope, receive = self.auth, call.scope, call.receive
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            more = message.get("more_body", False)
            if size > auth.max_body_size:
                break
        body = b"".join(chunks)
        if not more:
            try:
                document = msgspec.json.decode(body)
            except msgspec.DecodeError:
                document = None
            items: list[Any] = []
            if batch and isinstance(document, dict) and isinstance(document.get("jobs"), list):
                items = document["jobs"]
            elif not batch and isinstance(document, dict):
                items = [document]
            for item in items:
                if isinstance(item, dict):
                    item["tenant"] = tenant
            if items:
                body = msgspec.json.encode(document)
            scope["headers"] = [
                (k, v) for k, v in scope["headers"] if k.lower() != b"content-length"
            ] + [(b"content-length", str(len(body)).encode())]
        sent = False

        async def replay() -> ReceiveMessage:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": more}
            return await receive()

        call.receive = replay


def _tighter(*caps: Mapping[str, int]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for each in caps:
        for tenant, cap in each.items():
            merged[tenant] = min(cap, merged.get(tenant, cap))
    return merged


def _force_query(query: bytes, tenant: str) -> bytes:
    from urllib.parse import parse_qsl, urlencode

    pairs = [(k, v) for k, v in parse_qsl(query.decode("latin-1"), keep_blank_values=True)]
    pairs = [(k, v) for k, v in pairs if k != "tenant"] + [("tenant", tenant)]
    return urlencode(pairs).encode("latin-1")
