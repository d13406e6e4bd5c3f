"""``create_app``: a standalone Litestar app serving one queue."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from litestar import Litestar
from litestar.openapi import OpenAPIConfig
from litestar.plugins import PluginProtocol
from litestar.types import ControllerRouterHandler, Guard, Middleware

import hyperqueue as hq

from ._pipeline import FuseLayers
from ._plugin import HyperqueuePlugin

__all__ = ["create_app"]


def create_app(
    queue: hq.Queue,
    *,
    guards: Sequence[Guard] = (),
    middleware: Sequence[Middleware] = (),
    route_handlers: Sequence[ControllerRouterHandler] = (),
    plugins: Sequence[PluginProtocol] = (),
    debug: bool = False,
    **options: Any,
) -> Litestar:
    """A Litestar app with a :class:`HyperqueuePlugin` for ``queue``.

    ``options`` go to the plugin (``workers``, ``concurrency``, ``max_body_size``, ...);
    ``guards`` protect the API routes, ``middleware``, ``route_handlers`` and
    ``plugins`` are added to the app. The OpenAPI document is at
    ``/schema/openapi.json``. The plugin is ``app.plugins.get(HyperqueuePlugin)``.

    Once every plugin has added its middleware, consecutive layers of the server's own
    (limits, checks, keys, rate limits, audit, metrics) run as one middleware: one call
    and one ``send`` wrapper per request instead of one each; the last of them answers
    plain submissions itself (see :mod:`._lane`).
    """
    plugin = HyperqueuePlugin(
        queue, guards=guards, middleware=middleware, route_handlers=route_handlers, **options
    )
    return Litestar(
        plugins=[plugin, *plugins, FuseLayers(plugin.innermost)],
        openapi_config=OpenAPIConfig(
            title="hyperqueue",
            version=hq.__version__,
            description="Jobs, queues, dead letters, health and live events.",
            path="/schema",
        ),
        debug=debug,
    )
