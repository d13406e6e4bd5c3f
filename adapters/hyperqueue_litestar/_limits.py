"""Rate limits per client and per route, with the standard headers (MISSION D5).

Counting is :class:`hyperqueue.RateLimiter`'s (on ``limits``, with the queue's clock, so
tests drive it with a fake clock). A client is its API key's name when the caller is
authenticated (see :mod:`._auth`), else its IP address; a route is its template, so
``/api/v1/jobs/{job_id}`` is one route whatever the id. Each route pattern of
:class:`RateLimits` gets its own limiter (submitting is stricter than reading by
default); every answer carries ``RateLimit-Limit``, ``RateLimit-Remaining`` and
``RateLimit-Reset``, and a refusal is a 429 with ``Retry-After`` and the API's JSON
error body, published as a :class:`RateLimited` event (its one audit record).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from litestar.types import Message

import hyperqueue as hq

from ._audit import publish_refusal
from ._config import Config, RateLimits
from ._pipeline import ANSWERED, Call, Entry, Layer
from ._security import PRINCIPAL, Principal, RateLimited, actor_of, client_ip, send_json

Strategy = Literal["fixed-window", "moving-window", "sliding-window-counter"]
"""The strategies of ``hyperqueue.RateLimiter`` (the ``limits`` library's names)."""

__all__ = ["RateLimitMiddleware"]


def _pattern(route: str) -> re.Pattern[str]:
    """``"POST /api/v1/jobs/*"``: ``*`` matches one path part, or any method."""
    return re.compile("^" + re.escape(route).replace(r"\*", "[^/ ]+") + "$")


class RateLimitMiddleware(Layer):
    """Refuse a client's requests over its route's limit; headers on every answer.

    ``limits`` (default ``RateLimits()``: 1000/second for any route, 200/second to
    submit, 20/second for a batch) come from ``Config.rate_limits``. ``exempt`` are
    path prefixes left unlimited (default ``/health`` and ``/metrics``, which
    monitoring calls). ``strategy`` is the :class:`~hyperqueue.RateLimiter`'s (default
    ``"fixed-window"``).
    """

    def __init__(
        self,
        queue: hq.Queue,
        limits: RateLimits | None = None,
        *,
        exempt: Sequence[str] = ("/health", "/metrics"),
        strategy: Strategy = "fixed-window",
    ) -> None:
        self.queue = queue
        self.clock = queue.clock
        self.exempt = tuple(exempt)
        self.strategy: Strategy = strategy
        self.limits = limits if limits is not None else RateLimits()
        self.default, self.routes = self._build(self.limits, {})
        self._chosen: dict[tuple[str, str], hq.RateLimiter] = {}

    def _build(
        self, limits: RateLimits, reuse: dict[str, hq.RateLimiter]
    ) -> tuple[hq.RateLimiter, list[tuple[re.Pattern[str], hq.RateLimiter]]]:
        def limiter(limit: str) -> hq.RateLimiter:
            found = reuse.get(limit)
            if found is None:
                found = hq.RateLimiter(limit, strategy=self.strategy, clock=self.clock)
            return found

        return limiter(limits.default), [
            (_pattern(route), limiter(limit)) for route, limit in limits.routes.items()
        ]

    def apply(self, config: Config) -> None:
        """Take ``config.rate_limits`` from the next request on.

        A limit whose text is unchanged keeps its limiter and so its clients' counts (a
        reload does not hand everyone a fresh window); a new or changed limit starts
        counting afresh. Synchronous, so no request sees half of a change.
        """
        limits = config.rate_limits
        old = [(self.limits.default, self.default)]
        routes = zip(self.limits.routes.values(), self.routes, strict=True)
        old += [(limit, lim) for limit, (_, lim) in routes]
        self.default, self.routes = self._build(limits, dict(old))
        self.limits = limits
        self._chosen = {}

    def limiter(self, method: str, route: str) -> hq.RateLimiter:
        """The limiter of ``"METHOD /route/template"``: the first matching pattern's."""
        found = self._chosen.get((method, route))
        if found is None:
            key = f"{method} {route}"
            found = next((lim for pat, lim in self.routes if pat.match(key)), self.default)
            if len(self._chosen) < 4096:  # methods come from clients: keep it bounded
                self._chosen[(method, route)] = found
        return found

    async def enter(self, call: Call) -> Entry:
        scope = call.scope
        if scope["path"].startswith(self.exempt):
            return None
        method, route = call.method, call.route
        principal = (scope.get("state") or {}).get(PRINCIPAL)
        client = principal.name if isinstance(principal, Principal) else client_ip(scope)
        limiter = self.limiter(method, route)
        result = limiter.check(f"{client}|{method} {route}")
        headers = result.headers()
        if not result.allowed:
            publish_refusal(
                self.queue,
                RateLimited(
                    at=self.clock.now(),
                    client=client,
                    actor=actor_of(scope),
                    method=method,
                    route=route,
                    detail=f"over {result.limit} per {result.window:g} s",
                ),
                scope,
            )
            await send_json(
                call.send,
                429,
                f"rate limit of {result.limit} requests per {result.window:g} s exceeded "
                f"for {method} {route}; retry in {headers.get('Retry-After', '?')} s",
                extra={"limit": result.limit, "window": result.window},
                headers=headers,
            )
            return ANSWERED
        return _WithHeaders([(_name(k), v.encode()) for k, v in headers.items()])


_NAMES: dict[str, bytes] = {}


def _name(header: str) -> bytes:
    """A header's name as sent (lower case bytes), made once per name."""
    name = _NAMES.get(header)
    if name is None:
        name = _NAMES[header] = header.lower().encode()
    return name


class _WithHeaders:
    """Adds the ``RateLimit-*`` headers to the answer."""

    __slots__ = ("raw",)

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self.raw = raw

    def seen(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()), *self.raw]

    def close(self) -> None:
        pass
