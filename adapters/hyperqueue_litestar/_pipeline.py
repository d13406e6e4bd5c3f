"""The server's ASGI layers, run in one pass: one middleware instead of one per layer.

Headers limits, the JSON and cross-site checks, route access, authentication, rate
limits, the audit log and the metrics are each a :class:`Layer`: a middleware usable on
its own, whose work is split into hooks. :func:`run` takes a request through a sequence
of layers with one ``send`` wrapper and one ``finally``, as their nested middleware would:

- :meth:`Layer.enter` runs before the app, outermost layer first. It may answer the
  request itself (a refusal: it returns :data:`ANSWERED`, and the layers inside it and
  the app never see the request), change the scope or ``receive`` on the :class:`Call`,
  or return a :class:`Watcher` that sees every message sent by the layers inside it and
  by the app, and is closed once the request is over (the metrics time it, the audit
  log records it);
- messages go through the watchers innermost first, as through nested ``send``
  wrappers (a watcher may hold a message until something is done); an answer by a
  layer is seen only by the watchers of the layers outside it;
- watchers are closed innermost first, whatever happened inside (an exception included,
  which then goes on to Litestar's exception handling, as from nested middleware).

:func:`fuse` replaces each run of consecutive layers in an app's middleware with one
:class:`Layers` (``create_app`` does it once every plugin has added its own): a request
then costs one middleware call and one ``send`` wrapper, whatever the number of layers,
and each layer finds the request's method and route template computed once on the
:class:`Call`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Protocol, final

from litestar.config.app import AppConfig
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.plugins import InitPlugin
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from ._security import route_of

__all__ = ["ANSWERED", "Call", "FuseLayers", "Layer", "Layers", "Watcher", "fuse", "run"]


class Watcher(Protocol):
    """A layer's view of one request: the messages the layers inside it and the app send,
    then :meth:`close` once the request is over."""

    def seen(self, message: Message) -> Awaitable[None] | None:
        """Look at (or add headers to) ``message`` before it goes on; returns what to
        await before it goes on, if anything (the audit log holds the end of an answer
        until its record is written)."""

    def close(self) -> Awaitable[None] | None:
        """The request is over (answered, refused inside, or failed): returns what
        is left to await, if anything (most watchers have nothing to wait for)."""


@final
class _Answered:
    """The type of :data:`ANSWERED`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ANSWERED"


ANSWERED: Final = _Answered()
"""What :meth:`Layer.enter` returns when it has answered the request itself."""

Entry = Watcher | _Answered | None


class Call:
    """One HTTP request on its way through the layers.

    ``method`` and ``route`` (the route template, ``/api/v1/jobs/{job_id}``, never the
    raw path, so figures group by route) are read once; ``receive`` may be replaced by a
    layer that read the body (the layers inside it and the app get the replacement);
    ``send`` answers through the watchers of the layers entered so far.
    """

    __slots__ = ("_send", "_watchers", "method", "receive", "route", "scope")

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope = scope
        self.receive = receive
        self.method = str(scope.get("method", "GET"))
        self.route = route_of(scope)
        self._send = send
        self._watchers: list[Watcher] = []  # innermost first

    async def send(self, message: Message) -> None:
        for watcher in self._watchers:
            pending = watcher.seen(message)
            if pending is not None:
                await pending
        await self._send(message)


class Layer(ASGIMiddleware):
    """A middleware made of hooks (see the module's docstring), HTTP only; used alone it
    runs as any middleware, among others :func:`fuse` runs it with them in one pass."""

    scopes = (ScopeType.HTTP,)

    async def enter(self, call: Call) -> Entry:
        """Before the app: ``None`` to go on, a :class:`Watcher` to go on and watch the
        answer, or :data:`ANSWERED` after answering through ``call.send``."""
        return None

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        await run((self,), scope, receive, send, next_app)


async def run(
    layers: Sequence[Layer], scope: Scope, receive: Receive, send: Send, next_app: ASGIApp
) -> None:
    """Take one HTTP request through ``layers`` (outermost first), then ``next_app``."""
    call = Call(scope, receive, send)
    watchers = call._watchers
    try:
        for layer in layers:
            entry = await layer.enter(call)
            if entry is None:
                continue
            if entry is ANSWERED:
                return
            watchers.insert(0, entry)  # type: ignore[arg-type]
        await next_app(scope, call.receive, call.send if watchers else send)
    finally:
        if watchers:
            try:
                await _close(watchers)
            finally:
                # watchers hold the call that holds them: drop the cycle now, or every
                # request leaves garbage for the cyclic collector to find
                watchers.clear()


async def _close(watchers: list[Watcher]) -> None:
    """Close ``watchers`` in order, each even when one before it raised (the first
    error is raised once all are closed)."""
    error: BaseException | None = None
    for watcher in watchers:
        try:
            pending = watcher.close()
            if pending is not None:
                await pending
        except BaseException as exc:  # closed on, raised below
            if error is None:
                error = exc
    if error is not None:
        raise error


class Layers(ASGIMiddleware):
    """Several layers as one middleware: one call per request, one ``send`` wrapper."""

    scopes = (ScopeType.HTTP,)

    def __init__(self, layers: Sequence[Layer]) -> None:
        self.layers = tuple(layers)

    def __call__(self, app: ASGIApp) -> ASGIApp:
        layers = self.layers

        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == ScopeType.HTTP:
                await run(layers, scope, receive, send, app)
            else:
                await app(scope, receive, send)

        return middleware

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        await run(self.layers, scope, receive, send, next_app)


def _fusable(middleware: Any) -> bool:
    """A :class:`Layer` that runs for every HTTP request (no exclusion set on it)."""
    return (
        isinstance(middleware, Layer)
        and tuple(middleware.scopes) == (ScopeType.HTTP,)
        and middleware.exclude_path_pattern is None
        and middleware.exclude_opt_key is None
        and middleware.should_bypass_for_scope is None
    )


def fuse(middleware: Sequence[Any]) -> list[Any]:
    """``middleware`` with each run of two or more consecutive layers as one
    :class:`Layers`, in the same order; anything else stays where it is."""
    fused: list[Any] = []
    run_of: list[Layer] = []

    def flush() -> None:
        if len(run_of) > 1:
            fused.append(Layers(run_of))
        else:
            fused.extend(run_of)
        run_of.clear()

    for each in middleware:
        if _fusable(each):
            run_of.append(each)
        else:
            flush()
            fused.append(each)
    flush()
    return fused


class FuseLayers(InitPlugin):
    """Fuses the app's middleware (see :func:`fuse`); the last plugin of an app, so that
    it finds the layers every other plugin added. ``innermost`` gives layers to run
    after all of them (asked when the app is built)."""

    def __init__(self, innermost: Callable[[], Sequence[Layer]] = tuple) -> None:
        self.innermost = innermost

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        app_config.middleware = fuse([*app_config.middleware, *self.innermost()])
        return app_config
