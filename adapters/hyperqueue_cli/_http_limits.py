"""The request-head limits of ``hyperqueue serve``, on whichever server it runs (issue 9).

``server.max_header_bytes`` (request line and headers together, default 65,536) is
enforced by the server itself, before the app sees anything:

- uvicorn with httptools (its default when installed): :func:`uvicorn_options` gives a
  protocol that counts the bytes of a request's head as they arrive and answers ``431``
  (and closes the connection) past the limit; with h11, h11's own limit on the same
  number, answered by uvicorn as ``400 Invalid HTTP request received``;
- hypercorn (:func:`limit_hypercorn`): h11's limit (answered ``431``) for HTTP/1.1 and
  ``SETTINGS_MAX_HEADER_LIST_SIZE`` for HTTP/2 (a client over it has its connection
  closed).

A request line too long is part of the same head and gets the same answer. The number of
headers (``server.max_headers``) and ``metrics.public`` / ``openapi.public`` are the
app's: :func:`apply_front_door` hands them to the plugin's middleware.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from litestar import Litestar

    from hyperqueue_litestar import Config, ServerSettings

    from ._server import ServerPlan

__all__ = ["apply_front_door", "limit_hypercorn", "uvicorn_options"]


def apply_front_door(plan: ServerPlan) -> Litestar:
    """``plan.app``, its header count limit and its private paths taken from
    ``plan.config`` (``server.max_headers``, ``metrics.public``, ``openapi.public``)."""
    config: Config = plan.config
    plan.plugin.header_limits.apply(config)
    plan.plugin.access.apply(config)
    return plan.app


def _refusal(limit: int) -> bytes:
    body = json.dumps(
        {
            "status_code": 431,
            "detail": f"request line and headers over {limit} bytes",
            "extra": {"max_header_bytes": limit},
        }
    ).encode()
    return b"".join(
        [
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
            body,
        ]
    )


def uvicorn_options(settings: ServerSettings) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.Config`` that bound a request's head to
    ``settings.max_header_bytes``."""
    limit = settings.max_header_bytes
    options: dict[str, Any] = {"h11_max_incomplete_event_size": limit}
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # no httptools: h11, with its own limit
        options["http"] = "h11"
        return options

    refusal = _refusal(limit)

    class LimitedHttpTools(HttpToolsProtocol):
        """httptools has no limit of its own: count a head's bytes as they arrive (a
        chunk that also ends the head is let through, so a head is refused within one
        read of the limit, and a body never counts)."""

        _head_bytes = 0
        _in_head = True

        def data_received(self, data: bytes) -> None:
            if self._in_head:
                self._head_bytes += len(data)
            super().data_received(data)
            transport = self.transport
            if self._in_head and self._head_bytes > limit and not transport.is_closing():
                self.logger.warning("request head over %d bytes refused (431)", limit)
                transport.write(refusal)
                transport.close()

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._head_bytes = 0
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._in_head = True

    options["http"] = LimitedHttpTools
    return options


def limit_hypercorn(config: Any, settings: ServerSettings) -> None:
    """Bound a hypercorn ``Config``'s request heads to ``settings.max_header_bytes``."""
    config.h11_max_incomplete_size = settings.max_header_bytes
    config.h2_max_header_list_size = settings.max_header_bytes
