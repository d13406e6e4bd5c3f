"""Limits on a request's head: how many headers, and how many bytes with the request line.

The servers ``hyperqueue serve`` runs refuse an oversized head before it reaches the app
(uvicorn and hypercorn, set up by the command line from ``server.max_header_bytes``);
:class:`HeaderLimitsMiddleware` counts the headers, which neither server bounds, and
checks the size again for apps served some other way. Over a limit the answer is ``431``
with the API's JSON error body.
"""

from __future__ import annotations

import hyperqueue as hq

from ._audit import publish_refusal
from ._config import Config
from ._pipeline import ANSWERED, Call, Entry, Layer
from ._security import SecurityEvent, actor_of, client_ip, send_json

__all__ = [
    "DEFAULT_MAX_HEADERS",
    "DEFAULT_MAX_HEADER_BYTES",
    "HeaderLimitsMiddleware",
    "HeadersRefused",
]


class HeadersRefused(SecurityEvent, frozen=True, kw_only=True, tag="security.header_limit"):
    """A request whose head was over the limits was refused (431)."""


DEFAULT_MAX_HEADERS = 100
"""Request headers allowed by default (a browser sends about 20)."""
DEFAULT_MAX_HEADER_BYTES = 65_536
"""Bytes of request line and headers allowed by default (64 KiB)."""


class HeaderLimitsMiddleware(Layer):
    """431 for more than ``max_headers`` headers (default 100), or for a request line and
    headers over ``max_header_bytes`` (default 65,536) together; :meth:`apply` takes both
    from ``config.server``."""

    def __init__(
        self,
        queue: hq.Queue,
        *,
        max_headers: int = DEFAULT_MAX_HEADERS,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
    ) -> None:
        if max_headers < 1 or max_header_bytes < 1:
            raise ValueError("max_headers and max_header_bytes must be at least 1")
        self.queue = queue
        self.max_headers = max_headers
        self.max_header_bytes = max_header_bytes

    def apply(self, config: Config) -> None:
        self.max_headers = config.server.max_headers
        self.max_header_bytes = config.server.max_header_bytes

    async def enter(self, call: Call) -> Entry:
        scope = call.scope
        headers = scope["headers"]
        if not isinstance(headers, list):
            headers = list(headers)
        if len(headers) > self.max_headers:
            self._refused(call, f"{len(headers)} headers")
            await send_json(
                call.send,
                431,
                f"{len(headers)} request headers: the limit is {self.max_headers}",
                extra={"max_headers": self.max_headers},
            )
            return ANSWERED
        size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"") + 16
        size += 4 * len(headers)
        for name, value in headers:
            size += len(name) + len(value)
        if size > self.max_header_bytes:
            self._refused(call, f"a head of about {size} bytes")
            await send_json(
                call.send,
                431,
                f"request line and headers of about {size} bytes: the limit is "
                f"{self.max_header_bytes}",
                extra={"max_header_bytes": self.max_header_bytes},
            )
            return ANSWERED
        return None

    def _refused(self, call: Call, what: str) -> None:
        scope = call.scope
        publish_refusal(
            self.queue,
            HeadersRefused(
                at=self.queue.clock.now(),
                client=client_ip(scope),
                actor=actor_of(scope),
                method=call.method,
                route=call.route,
                detail=f"{what}: over the limits (431)",
            ),
            scope,
        )
