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
from functools import lru_cache
from urllib.parse import urlsplit

from litestar.types import Receive, ReceiveMessage, Scope

import hyperqueue as hq

from ._audit import publish_refusal
from ._config_safety import is_loopback
from ._pipeline import ANSWERED, Call, Entry, Layer
from ._security import SecurityEvent, actor_of, client_ip, header, send_json

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


@lru_cache(maxsize=64)
def _is_json(content_type: str) -> bool:
    """:func:`is_json`, remembered for the few content types clients send."""
    return is_json(content_type)


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


class CsrfMiddleware(Layer):
    """415 for a body that is not JSON; 403 for a cross-site change to an open server.

    ``is_open`` says whether no API key is configured right now (asked per request, so a
    configuration change counts at once); ``accept`` maps ``"METHOD /route/template"``
    to media types that route accepts besides JSON (a handler may also name them in its
    ``opt["hyperqueue_accept"]``).
    """

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

    async def enter(self, call: Call) -> Entry:
        scope, method = call.scope, call.method
        is_open = self.is_open()
        rebound = _rebound(scope) if is_open else None
        if rebound is not None:
            self._publish(CrossSiteRefused, call, rebound)
            await send_json(
                call.send,
                403,
                f"refused: {rebound}; an open server answers only loopback host names "
                "(localhost, 127.0.0.1, [::1]), which keeps other sites out (DNS rebinding)",
            )
            return ANSWERED
        if is_open and method in _CHANGES:
            why = self._cross_site(scope)
            if why is not None:
                self._publish(CrossSiteRefused, call, why)
                await send_json(
                    call.send,
                    403,
                    f"cross-site request refused ({why}): this server has no API key, so "
                    "it takes changes only from its own pages and from clients that are "
                    "not browsers (curl, scripts); configure API keys to call it from "
                    "other sites",
                )
                return ANSWERED
        content_type = header(scope, b"content-type")
        if content_type is not None and self._accepted(call, content_type):
            return None
        length = header(scope, b"content-length")
        if length is not None:
            has_body = length.strip() not in ("", "0")
        else:  # chunked, or HTTP/2: look at the first part of the body
            call.receive, has_body = await _peek(call.receive)
        if has_body:
            accepted = self._types(call)
            shown = "none" if content_type is None else repr(content_type)
            self._publish(MediaTypeRefused, call, f"Content-Type {shown} (415)")
            await send_json(
                call.send,
                415,
                f"unsupported Content-Type {shown}: send the body as {accepted} "
                "(Content-Type: application/json)",
                extra={"accepted": [*_JSON_SHOWN, *self._extra(call)]},
            )
            return ANSWERED
        return None

    def _extra(self, call: Call) -> tuple[str, ...]:
        handler = call.scope.get("route_handler")
        opt = getattr(handler, "opt", None) or {}
        return (*self.accept.get(f"{call.method} {call.route}", ()), *opt.get(ACCEPT_OPT, ()))

    def _types(self, call: Call) -> str:
        extra = self._extra(call)
        return JSON_TYPES + "".join(f" or {t}" for t in extra)

    def _accepted(self, call: Call, content_type: str) -> bool:
        return _is_json(content_type) or _media(content_type) in self._extra(call)

    @staticmethod
    def _cross_site(scope: Scope) -> str | None:
        site = (header(scope, b"sec-fetch-site") or "").strip().lower()
        if site in ("cross-site", "same-site"):
            return f"Sec-Fetch-Site: {site}"
        origin = header(scope, b"origin")
        if origin is None:
            return None
        host = header(scope, b"host") or header(scope, b":authority")
        if host is None:
            server = scope.get("server")
            host = f"{server[0]}:{server[1]}" if server else ""
        if same_origin(origin.strip(), host, str(scope.get("scheme", "http"))):
            return None
        return f"Origin {origin!r} is not this server ({host})"

    def _publish(self, kind: type[SecurityEvent], call: Call, why: str) -> None:
        queue, scope = self.queue, call.scope
        event = kind(
            at=queue.clock.now(),
            client=client_ip(scope),
            actor=actor_of(scope),
            method=call.method,
            route=call.route,
            detail=why,
        )
        publish_refusal(queue, event, scope)


def _rebound(scope: Scope) -> str | None:
    """Why a request to a loopback address names another host, or None."""
    server = scope.get("server")
    if not server or not _loopback_address(str(server[0])):
        return None
    host = header(scope, b"host") or header(scope, b":authority")
    if host is None:
        return None
    if _loopback_host(host):
        return None
    return f"Host {host!r} is not a loopback name"


@lru_cache(maxsize=16)
def _loopback_address(address: str) -> bool:
    """:func:`is_loopback` of the address a request came in on (a server listens on a
    few: remembered, not parsed again for every request)."""
    return is_loopback(address)


@lru_cache(maxsize=64)
def _loopback_host(host: str) -> bool:
    """Whether a ``Host`` header names a loopback host (the few a client sends are
    remembered, and any other is refused whatever it is)."""
    try:
        name = urlsplit(f"//{host}").hostname
    except ValueError:
        return False
    return name is not None and is_loopback(name)


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
