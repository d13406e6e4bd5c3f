"""The Litestar plugin: one object that owns a queue's life inside an app.

Modelled on Litestar's ``ChannelsPlugin``: it provides the queue to handlers by
dependency injection (``hq_queue: NamedDependency[hq.Queue]``), opens the queue (which
runs its event bus) and its worker pool for the app's lifespan (draining the pool on
shutdown), and mounts the REST API, the health endpoints and the live event stream.
Hosts add their own middleware, guards and routes through the options, so
authentication, metrics and rate limits can be layered on without touching it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Literal

import msgspec
from litestar import Litestar, Request, Router
from litestar.config.app import AppConfig
from litestar.di import Provide
from litestar.handlers import HTTPRouteHandler
from litestar.plugins import InitPlugin
from litestar.types import BeforeRequestHookHandler, ControllerRouterHandler, Guard, Middleware

import hyperqueue as hq

from ._auth import Auth
from ._csrf import CsrfMiddleware
from ._dashboard import dashboard_api_routes, dashboard_page_routes
from ._errors import exception_handlers
from ._health import health_routes, standard_checks
from ._lane import SubmitLane
from ._pipeline import Layer
from ._request_limits import (
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_MAX_HEADERS,
    HeaderLimitsMiddleware,
)
from ._route_access import RouteAccessMiddleware
from ._routes import Submit, api_routes
from ._schemas import JobTemplate
from ._sse import EventStreams

__all__ = ["DEFAULT_MAX_BODY_SIZE", "HyperqueuePlugin"]

DEFAULT_MAX_BODY_SIZE = 10 * 1024 * 1024
"""Largest request body by default (10 MiB, as `server.max_body_bytes`): larger gets 413."""
"""Request bodies above this many bytes (10 MB) get 413."""

_logger = logging.getLogger("hyperqueue.server")


class HyperqueuePlugin(InitPlugin):
    """Serve ``queue`` from a Litestar app.

    Options (keyword-only):

    - ``workers`` (default True): run a worker pool in the app's process, with
      ``concurrency`` runners (default 10), ``lease`` (30 s), ``queues`` (all),
      ``drain_timeout`` (30 s: how long shutdown lets running jobs finish) and
      ``prefetch`` (``"auto"``: jobs claimed beyond ``concurrency``, see ``Queue.worker``).
    - ``api_prefix`` (``"/api/v1"``) and ``health_path`` (``"/health"``).
    - ``max_body_size``: bytes a request body may have (10 MiB: 10,485,760), else 413.
    - ``templates``: named :class:`JobTemplate` defaults a submission may refer to;
      they are defined on the queue (``queue.template``), next to the host's own.
    - ``health``: a :class:`hyperqueue.Health` registry to serve (one is made); the
      plugin adds checks named ``storage``, ``queue_depth`` and ``workers`` unless
      names are taken, and ``memory``. ``max_queue_depth`` (10,000 pending) makes
      ``queue_depth`` degraded, ``max_memory_bytes`` (2 GiB resident) makes ``memory``
      degraded; ``health_max_age`` (1 s) reuses a fresh report under load.
    - ``modes``: a :class:`hyperqueue.ModeController` that filters requests (one is
      made, normal mode): read-only refuses submissions, maintenance all but health.
    - ``sse_heartbeat`` (15 s): a comment line keeps idle event streams open through
      proxies; ``sse_buffer`` (1000 events) bounds a slow client's backlog.
    - ``dependency_key`` (``"hq_queue"``): the name handlers ask the queue by. Not
      ``"queue"``: Litestar reports an invalid body field that has a dependency's
      name as a 500, and submissions have a ``queue`` field.
    - ``dashboard`` (True): the live web dashboard at ``/dashboard`` (its shell and
      assets need no key; its data comes from the API with the caller's key), with
      ``GET {api_prefix}/workers`` and ``GET {api_prefix}/session`` under ``guards``.
    - ``guards``: Litestar guards for the API routes (not health; when the only one is an
      :class:`~._auth.Auth`'s guard, it runs as the API router's before-request hook,
      where Litestar would have called it, without a copy of the route handler per
      request);
      ``middleware`` and ``route_handlers``: added to the app.

    The front door, in front of the host's middleware, for every route of the app:

    - ``max_headers`` (100) and ``max_header_bytes`` (65,536: request line and headers):
      over either, 431 (:class:`~._request_limits.HeaderLimitsMiddleware`);
    - request bodies must be JSON (``application/json`` or ``application/*+json``), else
      415; with no API key configured, a browser's cross-site change is refused with
      403 (:class:`~._csrf.CsrfMiddleware`);
    - with keys configured, ``OPTIONS`` and the ``private`` path prefixes (say
      ``"/metrics"``, ``"/schema"``) need a key with the viewer role
      (:class:`~._route_access.RouteAccessMiddleware`).

    ``auth`` is the app's :class:`~._auth.Auth`; when not given, the one whose
    middleware is in ``middleware``; with neither, the app has no keys (it is open).
    """

    __slots__ = (
        "access",
        "api_prefix",
        "auth",
        "concurrency",
        "csrf",
        "dashboard",
        "dependency_key",
        "drain_timeout",
        "guards",
        "header_limits",
        "health",
        "health_max_age",
        "health_path",
        "lane",
        "lease",
        "max_body_size",
        "max_memory_bytes",
        "max_queue_depth",
        "middleware",
        "modes",
        "prefetch",
        "queue",
        "queues",
        "ready",
        "route_handlers",
        "started_at",
        "streams",
        "templates",
        "worker",
        "workers",
    )

    def __init__(
        self,
        queue: hq.Queue,
        *,
        workers: bool = True,
        concurrency: int = 10,
        lease: float = 30.0,
        queues: Sequence[str] | None = None,
        drain_timeout: float = 30.0,
        prefetch: int | Literal["auto"] = "auto",
        api_prefix: str = "/api/v1",
        health_path: str = "/health",
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        templates: Mapping[str, JobTemplate] | None = None,
        health: hq.Health | None = None,
        max_queue_depth: int = 10_000,
        max_memory_bytes: int = 2 << 30,
        health_max_age: float = 1.0,
        modes: hq.ModeController | None = None,
        sse_heartbeat: float = 15.0,
        sse_buffer: int = 1000,
        guards: Sequence[Guard] = (),
        middleware: Sequence[Middleware] = (),
        route_handlers: Sequence[ControllerRouterHandler] = (),
        dependency_key: str = "hq_queue",
        auth: Auth | None = None,
        max_headers: int = DEFAULT_MAX_HEADERS,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        private: Sequence[str] = (),
        dashboard: bool = True,
    ) -> None:
        if not isinstance(queue, hq.Queue):
            raise TypeError(f"HyperqueuePlugin needs a hyperqueue.Queue, not {queue!r}")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if max_body_size < 1:
            raise ValueError("max_body_size must be at least 1 byte")
        if max_queue_depth < 1:
            raise ValueError("max_queue_depth must be at least 1")
        self.queue = queue
        self.dashboard = dashboard
        self.max_memory_bytes = max_memory_bytes
        self.dependency_key = dependency_key
        self.workers = workers
        self.concurrency = concurrency
        self.lease = lease
        self.queues = tuple(queues) if queues is not None else None
        self.drain_timeout = drain_timeout
        self.prefetch = prefetch
        self.api_prefix = "/" + api_prefix.strip("/")
        self.health_path = "/" + health_path.strip("/")
        self.max_body_size = max_body_size
        self.templates: dict[str, JobTemplate] = dict(templates or {})
        for name, template in self.templates.items():
            queue.template(name, **msgspec.structs.asdict(template))
        self.health = health if health is not None else hq.Health(clock=queue.clock)
        self.max_queue_depth = max_queue_depth
        self.health_max_age = health_max_age
        self.modes = (
            modes
            if modes is not None
            else hq.ModeController(clock=queue.clock, events=queue.events)
        )
        self.streams = EventStreams(queue, heartbeat=sse_heartbeat, buffer=sse_buffer)
        self.guards = list(guards)
        self.middleware = list(middleware)
        self.route_handlers = list(route_handlers)
        self.auth = auth if auth is not None else _auth_in(self.middleware)
        self.header_limits = HeaderLimitsMiddleware(
            queue, max_headers=max_headers, max_header_bytes=max_header_bytes
        )
        self.csrf = CsrfMiddleware(
            queue,
            is_open=self._is_open,
            accept={f"PUT {self.api_prefix}/config": ("application/toml",)},
        )
        self.access = RouteAccessMiddleware(self.auth, private=private)
        self.lane: SubmitLane | None = None  # built with the routes
        self.worker: hq.Worker | None = None
        self.ready = False
        self.started_at = queue.clock.now()
        standard_checks(self)

    # -- Litestar ------------------------------------------------------------------

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        queue = self.queue

        def provide_queue() -> hq.Queue:
            return queue

        app_config.dependencies[self.dependency_key] = Provide(
            provide_queue, use_cache=True, sync_to_thread=False
        )
        app_config.signature_namespace.update({"Queue": hq.Queue, "hq": hq})
        app_config.lifespan.append(self.lifespan)
        app_config.request_max_body_size = self.max_body_size
        app_config.exception_handlers = {**exception_handlers(), **app_config.exception_handlers}
        app_config.middleware[:0] = [self.header_limits, self.csrf, self.access]
        app_config.middleware.extend(self.middleware)
        guards, before_request = self._api_checks()
        submit = Submit(queue, self.modes)
        routes = api_routes(queue, self.modes, self.streams.route(self.modes), submit)
        self.lane = SubmitLane(
            submit,
            route=f"{self.api_prefix}/jobs",
            handler=next(
                r.fn
                for r in routes
                if isinstance(r, HTTPRouteHandler) and r.operation_id == "submitJob"
            ),
            auth=self.auth,
            check=before_request,
        )
        app_config.route_handlers.extend(
            [
                Router(
                    path=self.api_prefix,
                    route_handlers=routes,
                    guards=guards,
                    before_request=before_request,
                    tags=["jobs"],
                    request_max_body_size=self.max_body_size,
                ),
                *health_routes(self),
                *self.route_handlers,
            ]
        )
        if self.dashboard:
            app_config.route_handlers.extend(
                [
                    dashboard_api_routes(
                        queue,
                        self.modes,
                        api_prefix=self.api_prefix,
                        guards=self.guards,
                        is_open=self._is_open,
                    ),
                    *dashboard_page_routes(api_prefix=self.api_prefix, is_open=self._is_open),
                ]
            )
        return app_config

    def _api_checks(self) -> tuple[list[Guard], BeforeRequestHookHandler | None]:
        """The API routes' guards, and a before-request hook that does their work when
        the only guard is the auth's: Litestar hands each guard a copy of the route
        handler (an object of some fifty attributes) on every request, which cost more
        than the check itself. The hook runs where the guard did for these routes: after
        the middleware and the app's own guards, before the body is read (a request
        without a key gets its 401 whatever its body), its refusal answered by the
        route's exception handlers. The app's own before-request hook, which the
        router's would otherwise hide, runs after it."""
        auth = self.auth
        if auth is None or not self.guards or any(g is not auth.guard for g in self.guards):
            return self.guards, None
        check = auth.check

        async def before_request(request: Request[Any, Any, Any]) -> Any:
            await check(request, request.route_handler)
            hook = request.app.before_request
            return None if hook is None else await hook(request)

        return [], before_request

    @asynccontextmanager
    async def lifespan(self, app: Litestar) -> AsyncIterator[None]:
        """Open the queue (which runs its event bus) and the pool; on the way out stop the event
        streams, drain the pool (running jobs finish within ``drain_timeout``), close."""
        queue = self.queue
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(queue)  # runs the event bus and its relay too
            if self.workers:
                self.worker = await stack.enter_async_context(
                    queue.worker(
                        concurrency=self.concurrency,
                        queues=self.queues,
                        lease=self.lease,
                        drain_timeout=self.drain_timeout,
                        prefetch=self.prefetch,
                        modes=self.modes,
                    )
                )
            self.started_at = queue.clock.now()
            self.ready = True
            try:
                yield
            finally:
                self.ready = False
                self.streams.close_all()
        self.worker = None

    def innermost(self) -> list[Layer]:
        """Layers to run after every other middleware of the app, right before the
        routes: the submission's fast lane (``create_app`` puts it there)."""
        return [] if self.lane is None else [self.lane]

    def _is_open(self) -> bool:
        return self.auth is None or self.auth.open

    def shutting_down(self) -> None:
        """Call when the server begins to stop (a signal arrived): readiness fails at
        once and open event streams end, so the server is not kept waiting on them."""
        self.ready = False
        self.streams.close_all()


def _auth_in(middleware: Sequence[Any]) -> Auth | None:
    """The :class:`Auth` whose middleware is among ``middleware`` (``auth.middleware``)."""
    for each in middleware:
        auth = getattr(each, "auth", None)
        if isinstance(auth, Auth):
            return auth
    return None
