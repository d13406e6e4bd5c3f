"""JSON bodies only, and no cross-site changes to an open server (issue 9).

A web page can make its visitor's browser send a ``POST`` to any address, the server's
loopback one included, without asking the server first, as long as the body is one a
plain HTML form could send: ``text/plain``, ``application/x-www-form-urlencoded`` or
``multipart/form-data``. A JSON content type is not one of those: the browser must ask
first (a CORS preflight), which this server never grants. So :class:`CsrfMiddleware`:

- answers ``415`` to any request with a body whose ``Content-Type`` is not
  ``application/json`` or ``application/*+json`` (parameters such as
  ``; charset=utf-8`` allowed), or that has no ``Content-Type``; a route may accept
  more types (the configuration import takes ``application/toml``). A request without
  a body (``POST /api/v1/jobs/{id}/cancel``) needs no ``Content-Type``;
- when no API key is configured (the server is open, on loopback), refuses with ``403``
  a change (``POST``, ``PUT``, ``PATCH``, ``DELETE``) that a browser marks as coming
  from another site (``Sec-Fetch-Site: cross-site`` or ``same-site``) or whose
  ``Origin`` is not the server's own ``Host``. Clients that send neither header (curl,
  scripts, the Python client) pass. With keys configured the check is left out: a
  browser cannot add the key's header to a cross-site request without a preflight.

An open server is also guarded against DNS rebinding: a page on an attacker's domain,
whose name the attacker then points at 127.0.0.1, is "same origin" to the browser and
could read the API. So a request that reaches an open server on a loopback address
must name a loopback host (``localhost``, ``127.0.0.1``, ``[::1]``) in its ``Host``
header; any other name gets ``403``, reads included.

Each refusal is published as a security event (:class:`CrossSiteRefused`,
:class:`MediaTypeRefused`), so the audit log records it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from urllib.parse import urlsplit

from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, ReceiveMessage, Scope, Send

import hyperqueue as hq

from ._audit import publish_refusal
from ._config_safety import is_loopback
from ._security import SecurityEvent, actor_of, client_ip, route_of, send_json

__all__ = ["ACCEPT_OPT", "CrossSiteRefused", "CsrfMiddleware", "MediaTypeRefused", "is_json"]

ACCEPT_OPT = "hyperqueue_accept"
"""A handler's ``opt`` key: media types it accepts besides JSON (``("application/toml",)``)."""

_CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
JSON_TYPES = "application/json or application/*+json"


class CrossSiteRefused(SecurityEvent, frozen=True, kw_only=True, tag="security.cross_site"):
    """A browser's cross-site change to an open server was refused (403)."""


class MediaTypeRefused(SecurityEvent, frozen=True, kw_only=True, tag="security.media_type"):
    """A body in a type the route does not take was refused (415)."""


def _media(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def is_json(content_type: str) -> bool:
    """``application/json`` or ``application/<anything>+json``, parameters allowed."""
    media = _media(content_type)
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _host_port(netloc: str, scheme: str) -> tuple[str, int] | None:
    try:
        parts = urlsplit(f"//{netloc}")
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return parts.hostname.lower(), port if port is not None else _DEFAULT_PORTS.get(scheme, 80)


def same_origin(origin: str, host: str, scheme: str) -> bool:
    """Whether ``Origin`` names the host and port the request was sent to (``Host``);
    the schemes are not compared (a proxy may end TLS in front of the server)."""
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    if not parts.scheme or not parts.netloc:  # "null" (a sandboxed or file page)
        return False
    theirs = _host_port(parts.netloc, parts.scheme.lower())
    ours = _host_port(host, "https" if scheme in ("https", "wss") else "http")
    return theirs is not None and theirs == ours


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


class CsrfMiddleware(ASGIMiddleware):
    """415 for a body that is not JSON; 403 for a cross-site change to an open server.

    ``is_open`` says whether no API key is configured right now (asked per request, so a
    configuration change counts at once); ``accept`` maps ``"METHOD /route/template"``
    to media types that route accepts besides JSON (a handler may also name them in its
    ``opt["hyperqueue_accept"]``).
    """

    scopes = (ScopeType.HTTP,)

    def __init__(
        self,
        queue: hq.Queue,
        *,
        is_open: Callable[[], bool],
        accept: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.queue = queue
        self.is_open = is_open
        self.accept = {
            route: tuple(_media(t) for t in types) for route, types in (accept or {}).items()
        }

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        method = str(scope.get("method", "GET"))
        headers = _headers(scope)
        rebound = _rebound(scope, headers) if self.is_open() else None
        if rebound is not None:
            self._publish(CrossSiteRefused, scope, method, rebound)
            await send_json(
                send,
                403,
                f"refused: {rebound}; an open server answers only loopback host names "
                "(localhost, 127.0.0.1, [::1]), which keeps other sites out (DNS rebinding)",
            )
            return
        if method in _CHANGES and self.is_open():
            why = self._cross_site(scope, headers)
            if why is not None:
                self._publish(CrossSiteRefused, scope, method, why)
                await send_json(
                    send,
                    403,
                    f"cross-site request refused ({why}): this server has no API key, so "
                    "it takes changes only from its own pages and from clients that are "
                    "not browsers (curl, scripts); configure API keys to call it from "
                    "other sites",
                )
                return
        content_type = headers.get("content-type")
        if content_type is not None and self._accepted(scope, method, content_type):
            await next_app(scope, receive, send)
            return
        length = headers.get("content-length")
        if length is not None:
            has_body = length.strip() not in ("", "0")
        else:  # chunked, or HTTP/2: look at the first part of the body
            receive, has_body = await _peek(receive)
        if has_body:
            accepted = self._types(scope, method)
            shown = "none" if content_type is None else repr(content_type)
            self._publish(MediaTypeRefused, scope, method, f"Content-Type {shown} (415)")
            await send_json(
                send,
                415,
                f"unsupported Content-Type {shown}: send the body as {accepted} "
                "(Content-Type: application/json)",
                extra={"accepted": [*_JSON_SHOWN, *self._extra(scope, method)]},
            )
            return
        await next_app(scope, receive, send)

    def _extra(self, scope: Scope, method: str) -> tuple[str, ...]:
        handler = scope.get("route_handler")
        opt = getattr(handler, "opt", None) or {}
        return (*self.accept.get(f"{method} {route_of(scope)}", ()), *opt.get(ACCEPT_OPT, ()))

    def _types(self, scope: Scope, method: str) -> str:
        extra = self._extra(scope, method)
        return JSON_TYPES + "".join(f" or {t}" for t in extra)

    def _accepted(self, scope: Scope, method: str, content_type: str) -> bool:
        return is_json(content_type) or _media(content_type) in self._extra(scope, method)

    @staticmethod
    def _cross_site(scope: Scope, headers: Mapping[str, str]) -> str | None:
        site = headers.get("sec-fetch-site", "").strip().lower()
        if site in ("cross-site", "same-site"):
            return f"Sec-Fetch-Site: {site}"
        origin = headers.get("origin")
        if origin is None:
            return None
        host = headers.get("host") or headers.get(":authority")
        if host is None:
            server = scope.get("server")
            host = f"{server[0]}:{server[1]}" if server else ""
        if same_origin(origin.strip(), host, str(scope.get("scheme", "http"))):
            return None
        return f"Origin {origin!r} is not this server ({host})"

    def _publish(self, kind: type[SecurityEvent], scope: Scope, method: str, why: str) -> None:
        queue = self.queue
        event = kind(
            at=queue.clock.now(),
            client=client_ip(scope),
            actor=actor_of(scope),
            method=method,
            route=route_of(scope),
            detail=why,
        )
        publish_refusal(queue, event, scope)


def _rebound(scope: Scope, headers: Mapping[str, str]) -> str | None:
    """Why a request to a loopback address names another host, or None."""
    server = scope.get("server")
    if not server or not is_loopback(str(server[0])):
        return None
    host = headers.get("host") or headers.get(":authority")
    if host is None:
        return None
    try:
        name = urlsplit(f"//{host}").hostname
    except ValueError:
        name = None
    if name is not None and is_loopback(name):
        return None
    return f"Host {host!r} is not a loopback name"


_JSON_SHOWN = ("application/json", "application/*+json")


async def _peek(receive: Receive) -> tuple[Receive, bool]:
    """Whether the body has any byte, and a ``receive`` that replays what was read."""
    seen: list[ReceiveMessage] = []
    has_body = False
    while True:
        message = await receive()
        seen.append(message)
        if message["type"] != "http.request":
            break
        if message.get("body"):
            has_body = True
            break
        if not message.get("more_body", False):
            break

    async def replay() -> ReceiveMessage:
        if seen:
            return seen.pop(0)
        return await receive()

    return replay, has_body
