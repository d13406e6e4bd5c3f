"""What the security parts share: who is calling, the events they publish, a JSON refusal.

Authentication (:mod:`._auth`), rate limits (:mod:`._limits`), the audit log
(:mod:`._audit`) and metrics (:mod:`._metrics`) are separate middleware and guards that
never call each other: they meet in the ASGI scope (the caller, resolved once per
request and cached there) and on the queue's :class:`~hyperqueue.EventBus` (security
events that the audit log and the metrics subscribe to).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from litestar.types import Scope, Send

from hyperqueue import Event

__all__ = [
    "AccessDenied",
    "Actor",
    "AuthenticationFailed",
    "Principal",
    "RateLimited",
    "SecurityEvent",
    "SlowRequest",
    "SuspiciousActivity",
    "client_ip",
    "header",
    "send_json",
]

Role = Literal["admin", "operator", "viewer", "worker"]
ROLE_RANK: dict[str, int] = {"worker": 0, "viewer": 1, "operator": 2, "admin": 3}
"""Each role may do what the roles below it may: viewer reads, operator also submits,
cancels and retries, admin also changes the configuration and reads the audit log.
``worker`` stands aside (rank 0): it may use the worker protocol (claim, extend, finish
and read a job by id) and nothing else; operator and admin keys may use it too."""

PRINCIPAL = "hyperqueue.principal"
"""Key of the resolved caller in ``scope["state"]`` (set by :class:`._auth.Auth`)."""


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """An authenticated API key: its configured ``name`` (never the key), its highest
    role's ``rank`` and the ``tenant`` it is bound to, if any."""

    name: str
    roles: tuple[Role, ...]
    tenant: str | None = None
    rank: int = 0

    def may(self, role: Role) -> bool:
        if role == "worker":
            return "worker" in self.roles or self.rank >= ROLE_RANK["operator"]
        return self.rank >= ROLE_RANK[role]


class Actor(msgspec.Struct, frozen=True, kw_only=True):
    """Who did something, as the audit log records it: ``type`` is ``"key"`` for an API
    key (``id`` is its name) or ``"anonymous"``; ``ip`` the client address."""

    type: Literal["key", "anonymous"]
    id: str | None = None
    ip: str | None = None
    tenant: str | None = None


class SecurityEvent(Event, frozen=True, kw_only=True):
    """A refusal worth recording: ``client`` is the key name, else the IP address."""

    client: str
    actor: Actor
    method: str
    route: str
    detail: str


class AuthenticationFailed(SecurityEvent, frozen=True, kw_only=True, tag="security.auth_failed"):
    """A request with a missing or unknown API key was refused (401)."""


class AccessDenied(SecurityEvent, frozen=True, kw_only=True, tag="security.forbidden"):
    """A key's role does not allow the route (403)."""


class RateLimited(SecurityEvent, frozen=True, kw_only=True, tag="security.rate_limited"):
    """A client went over a route's rate limit (429)."""


class SuspiciousActivity(Event, frozen=True, kw_only=True, tag="security.suspicious"):
    """One client caused ``count`` security events within ``window`` seconds."""

    client: str
    actor: Actor
    count: int
    window: float
    kinds: dict[str, int]


class SlowRequest(Event, frozen=True, kw_only=True, tag="http.slow_request"):
    """A request took ``duration_ms`` (over the configured threshold) to answer."""

    method: str
    route: str
    status_code: int
    duration_ms: float
    threshold_ms: float


def client_ip(scope: Scope) -> str:
    client = scope.get("client")
    return client[0] if client else "unknown"


def header(scope: Scope, name: bytes) -> str | None:
    """The request header ``name`` (lower case), its last value if sent more than once,
    else ``None``; read from the raw headers, with no mapping built for the request."""
    found: bytes | None = None
    for key, value in scope["headers"]:
        if key == name or (len(key) == len(name) and key.lower() == name):
            found = value
    return None if found is None else found.decode("latin-1")


def actor_of(scope: Scope) -> Actor:
    """The caller as the audit log names it (the principal cached by the auth part)."""
    state = scope.get("state") or {}
    principal = state.get(PRINCIPAL)
    ip = client_ip(scope)
    if isinstance(principal, Principal):
        return Actor(type="key", id=principal.name, ip=ip, tenant=principal.tenant)
    return Actor(type="anonymous", ip=ip)


_ROUTES: dict[str, str] = {}


def route_of(scope: Scope) -> str:
    """The route template (``/api/v1/jobs/{job_id}``), never the raw path, so figures
    and records group by route and do not grow with ids (worked out once per route of
    the app: templates come from the routes, not from clients)."""
    template = scope.get("path_template")
    if not template:
        return "unmatched"
    route = _ROUTES.get(template)
    if route is None:
        route = _ROUTES[template] = str(template).replace(":str}", "}").replace(":int}", "}")
    return route


_encode = msgspec.json.Encoder().encode


async def send_json(
    send: Send,
    status_code: int,
    detail: str,
    *,
    extra: Any = None,
    headers: dict[str, str] | None = None,
) -> None:
    """Answer with the API's error body ``{status_code, detail, extra?}`` from middleware,
    where no Litestar response object is at hand."""
    body: dict[str, Any] = {"status_code": status_code, "detail": detail}
    if extra is not None:
        body["extra"] = extra
    payload = _encode(body)
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status_code, "headers": raw})
    await send({"type": "http.response.body", "body": payload, "more_body": False})
