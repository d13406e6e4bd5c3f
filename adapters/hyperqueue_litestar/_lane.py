"""The fast lane of ``POST {api_prefix}/jobs``: a plain submission answered by the
innermost layer, without Litestar's per-request handler machinery.

Submitting is the server's hot route, and most of its cost was Litestar's work around
the handler rather than the handler's: a request object, the body read through an
async generator, a header map built to read its length, the body decoded into Python
objects and then converted into the handler's type, a response object turned into an
ASGI response. For a request that needs none of that, :class:`SubmitLane` reads the
body, decodes it straight into :class:`~._schemas.JobRequest` and answers with the
same status, headers and bytes the handler's route would.

It runs as the last of the server's layers, so the metrics, the audit log, the rate
limits, the keys, the size and cross-site checks see the request as before. It takes
only what it answers exactly as the route would, and hands anything else to the route,
body included:

- the route must be the one the plugin built, with nothing a host added around its
  handler (guards, hooks, response headers or cookies, another response class, DTOs,
  caching); checked once per handler;
- the caller must pass the auth check that the route runs before reading the body
  (the same check, without its refusal: a refused request goes to the route, which
  refuses and audits it once);
- the body must arrive whole, within the size limit, and decode strictly into a plain
  submission (the task's defaults: no option, no keyword, flat arguments);
- when the submission's work raises (a mode refusing it, an unknown task, arguments
  that do not fit, a storage fault), the route gets the request and the exception,
  which its handler raises instead of doing the work again, so Litestar answers it
  as it answers the handler's own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from litestar import MediaType, Response
from litestar.handlers import HTTPRouteHandler
from litestar.serialization import encode_json, get_serializer
from litestar.types import Receive, ReceiveMessage

from ._auth import Auth
from ._pipeline import ANSWERED, Call, Entry, Layer
from ._routes import LANE_FAILED, Submit
from ._schemas import JobRequest
from ._security import header

__all__ = ["SubmitLane"]

_decode = msgspec.json.Decoder(JobRequest).decode
_JSON = MediaType.JSON.value.encode()


class _Plan:
    """What the lane needs of one handler, worked out on its first request."""

    __slots__ = ("auth", "limit", "serializer")

    def __init__(self, auth: Auth | None, limit: int | None, serializer: Any) -> None:
        self.auth = auth
        self.limit = limit
        self.serializer = serializer


class SubmitLane(Layer):
    """Answers plain submissions to ``route`` (the innermost layer; see the module).

    ``submit`` is the route handler's work; ``check`` the before-request hook that the
    plugin gave the route in place of ``auth``'s guard (``None`` when it has none)."""

    def __init__(
        self,
        submit: Submit,
        *,
        route: str,
        handler: Callable[..., Any],
        auth: Auth | None = None,
        check: Callable[..., Any] | None = None,
    ) -> None:
        self.submit = submit
        self.route = route
        self.handler = handler
        self.auth = auth
        self.check = check
        self._plans: dict[int, tuple[Any, _Plan | None]] = {}  # by handler

    async def enter(self, call: Call) -> Entry:
        if call.route != self.route or call.method != "POST":
            return None
        scope = call.scope
        handler = scope.get("route_handler")
        known = self._plans.get(id(handler))
        if known is not None and known[0] is handler:
            plan = known[1]
        else:
            plan = self._plan(handler)
            self._plans[id(handler)] = (handler, plan)
        if plan is None or not self._allowed(plan, scope):
            return None
        length = header(scope, b"content-length")
        limit = plan.limit
        if length is None or not length.isdigit() or (limit is not None and int(length) > limit):
            return None  # the route reads it (and refuses one too large with 413)
        messages, body = await _read(call.receive, limit)
        data: JobRequest | None = None
        if body is not None:
            try:
                data = _decode(body)
            except msgspec.DecodeError:  # the route answers it (400, with its words)
                data = None
        if data is None or not Submit.plain(data):
            call.receive = _replay(messages, call.receive)
            return None
        try:
            job, status = await self.submit(data)
        except Exception as exc:  # answered by the route, as its handler's own
            scope.setdefault("state", {})[LANE_FAILED] = exc
            call.receive = _replay(messages, call.receive)
            return None
        payload = encode_json(job, plan.serializer)
        await call.send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", _JSON),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await call.send({"type": "http.response.body", "body": payload, "more_body": False})
        return ANSWERED

    def _plan(self, handler: Any) -> _Plan | None:
        """The handler's limit and encoder, or ``None`` when its route may do more than
        the lane does (a host added to it): the lane then leaves it to the route."""
        if not isinstance(handler, HTTPRouteHandler) or handler.fn is not self.handler:
            return None
        layers = handler.ownership_layers
        hooks = [layer.before_request for layer in layers if layer.before_request]
        hook = hooks[-1] if hooks else None
        if (
            handler.resolve_guards()
            or hooks not in ([], [self.check])  # a host's own hook: the route runs it
            or any(layer.after_request for layer in layers)
            or handler.resolve_after_response() is not None
            or handler.resolve_response_headers()
            or handler.resolve_response_cookies()
            or handler.resolve_response_class() is not Response
            or handler.resolve_data_dto() is not None
            or handler.resolve_return_dto() is not None
            or handler.cache
            or handler.media_type not in ("", MediaType.JSON)  # "": the Response's, JSON
        ):
            return None
        return _Plan(
            auth=self.auth if hook is not None else None,
            limit=handler.resolve_request_max_body_size(),
            serializer=get_serializer(handler.resolve_type_encoders()),
        )

    def _allowed(self, plan: _Plan, scope: Any) -> bool:
        """Whether the route's auth check would let the request through."""
        return plan.auth is None or plan.auth.permits(scope, "POST", self.route)


async def _read(receive: Receive, limit: int | None) -> tuple[list[ReceiveMessage], bytes | None]:
    """The request's messages, and its whole body (``None`` when it did not arrive
    whole within ``limit``: the route then reads it, and refuses it)."""
    messages: list[ReceiveMessage] = []
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, None
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if limit is not None and size > limit:
            return messages, None
        if not message.get("more_body", False):
            return messages, chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _replay(messages: list[ReceiveMessage], receive: Receive) -> Receive:
    """A ``receive`` that gives ``messages`` again, then what ``receive`` gives."""
    pending = list(messages)

    async def replay() -> ReceiveMessage:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay
