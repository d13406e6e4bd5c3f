"""Keys for the routes outside the API's guards: automatic ``OPTIONS``, ``/metrics`` and
the OpenAPI document (issue 9).

Litestar answers ``OPTIONS`` on every path by itself (``204`` with ``Allow``), without
the guards of the route it describes; the metrics and the schema are routes of their own.
With API keys configured, :class:`RouteAccessMiddleware` puts these through the same
check as the API (:meth:`Auth.check`: ``401`` without a valid key, ``403`` for a role
that may not; all three only read, so a ``viewer`` key is enough):

- ``OPTIONS`` always, unless the app has a CORS configuration and the request is a CORS
  preflight (which browsers send without credentials);
- ``/metrics`` and the schema (``/schema``) when they are not public: ``metrics.public``
  (default ``true``: Prometheus scrapes without a key) and ``openapi.public`` (default
  ``true``) in the configuration, see :meth:`apply`.

With no key configured everything stays open, as the API itself is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from litestar.connection import ASGIConnection
from litestar.types import Scope

from ._config import Config
from ._pipeline import Call, Entry, Layer

if TYPE_CHECKING:
    from ._auth import Auth

__all__ = ["RouteAccessMiddleware"]


class RouteAccessMiddleware(Layer):
    """Auth for ``OPTIONS`` and for the path prefixes in ``private`` (``/metrics``,
    ``/schema`` when configured so), when ``auth`` has keys."""

    def __init__(
        self,
        auth: Auth | None,
        *,
        private: Sequence[str] = (),
        metrics_path: str = "/metrics",
        schema_path: str = "/schema",
    ) -> None:
        self.auth = auth
        self.private = tuple(private)
        self.metrics_path = metrics_path
        self.schema_path = schema_path

    def apply(self, config: Config) -> None:
        """Make ``/metrics`` and the schema need a key unless the configuration says
        they are public (``metrics.public``, ``openapi.public``)."""
        paths = {self.metrics_path: config.metrics.public, self.schema_path: config.openapi.public}
        self.private = tuple(path for path, public in paths.items() if not public)

    async def enter(self, call: Call) -> Entry:
        auth = self.auth
        if auth is not None and not auth.open and self._needs_key(call):
            scope = call.scope
            handler: Any = scope.get("route_handler")
            await auth.check(ASGIConnection(scope, call.receive, call.send), handler)
        return None

    def _needs_key(self, call: Call) -> bool:
        if self.private:
            path = str(call.scope.get("path", ""))
            if any(path == p or path.startswith(p.rstrip("/") + "/") for p in self.private):
                return True
        if call.method != "OPTIONS":
            return False
        scope: Scope = call.scope
        app: Any = scope.get("app")
        if getattr(app, "cors_config", None) is not None:
            preflight = any(
                k.lower() == b"access-control-request-method" for k, _ in scope["headers"]
            )
            return not preflight
        return True
