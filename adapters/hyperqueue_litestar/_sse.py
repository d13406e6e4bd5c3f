"""Live events as Server-Sent Events, resumable with ``Last-Event-ID``.

Each SSE message is one event of the queue's :class:`hyperqueue.EventBus`: ``id`` is
the bus's event id, ``event`` its type (``job.completed``), ``data`` the event as JSON.
A client that reconnects sends the last id it saw (browsers do this by themselves) and
gets the events it missed from the bus's history, then live ones, with none lost or
repeated in between. When the history no longer holds some of them, a ``gap`` message
says how many were missed, so a dashboard knows to reload instead of trusting a
partial picture.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import anyio
import msgspec
from litestar import get
from litestar.exceptions import ValidationException
from litestar.handlers import HTTPRouteHandler
from litestar.params import HeaderParameter, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

import hyperqueue as hq
from hyperqueue import Operation
from hyperqueue._events import EventStream

__all__ = ["EventStreams"]

_encode = msgspec.json.Encoder().encode


def _tag(event: hq.Event) -> str:
    tag = event.__struct_config__.tag
    return tag if isinstance(tag, str) else type(event).__name__


def _after(last_event_id: str | None, after: int | None) -> int | None:
    if after is not None:
        return after
    if last_event_id is None or not last_event_id.strip():
        return None
    try:
        value = int(last_event_id)
    except ValueError:
        raise ValidationException(
            "invalid Last-Event-ID: expected the integer id of an event",
            extra=[{"key": "Last-Event-ID", "message": f"not an event id: {last_event_id!r}"}],
        ) from None
    if value < 0:
        raise ValidationException("invalid Last-Event-ID: must be >= 0")
    return value


class EventStreams:
    """The open event streams of one app, so shutdown can end them all at once.

    ``heartbeat`` (15 s) is how long a stream stays silent before a comment line is
    sent; ``buffer`` (1000) how many events may wait for a slow client before newer
    ones are dropped for it.
    """

    def __init__(self, queue: hq.Queue, *, heartbeat: float = 15.0, buffer: int = 1000) -> None:
        if not heartbeat > 0:
            raise ValueError("sse_heartbeat must be > 0 seconds")
        if buffer < 1:
            raise ValueError("sse_buffer must be at least 1 event")
        self.queue = queue
        self.heartbeat = heartbeat
        self.buffer = buffer
        self._open: set[EventStream] = set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._open)

    def close_all(self) -> None:
        """End every open stream (their clients see the response end) and refuse new
        ones until :meth:`reopen`."""
        self._closed = True
        for stream in tuple(self._open):
            stream.close()

    def reopen(self) -> None:
        self._closed = False

    async def messages(
        self, patterns: tuple[str, ...], after: int | None
    ) -> AsyncIterator[ServerSentEventMessage]:
        clock = self.queue.clock
        async with self.queue.events.stream(*patterns, buffer=self.buffer, after=after) as stream:
            if self._closed:
                return
            self._open.add(stream)
            try:
                if stream.gap:
                    yield ServerSentEventMessage(
                        event="gap", data=_encode({"missed": stream.gap}).decode()
                    )
                else:
                    yield ServerSentEventMessage(data=None, comment="connected")
                while True:
                    item: tuple[int, hq.Event] | None = None
                    with clock.cancel_after(self.heartbeat):
                        try:
                            item = await stream.receive()
                        except anyio.ClosedResourceError:
                            return
                    if item is None:
                        yield ServerSentEventMessage(data=None, comment="keep-alive")
                        continue
                    seq, event = item
                    yield ServerSentEventMessage(
                        id=seq, event=_tag(event), data=_encode(event).decode()
                    )
            finally:
                self._open.discard(stream)

    def route(self, modes: hq.ModeController) -> HTTPRouteHandler:
        streams = self

        @get(
            "/events",
            operation_id="streamEvents",
            summary="Live events (Server-Sent Events)",
            description=(
                "Resumable: send `Last-Event-ID` (or `after`) with the last id seen. "
                "`type` filters by event type pattern (`job.*`, `job.failed`)."
            ),
            tags=["events"],
        )
        async def stream_events(
            types: Annotated[list[str] | None, QueryParameter(name="type")] = None,
            after: Annotated[int | None, QueryParameter(ge=0)] = None,
            last_event_id: Annotated[str | None, HeaderParameter(name="Last-Event-ID")] = None,
        ) -> ServerSentEvent:
            modes.check(Operation.READ)
            start = _after(last_event_id, after)
            patterns = tuple(t for t in (types or ()) if t)
            return ServerSentEvent(
                streams.messages(patterns, start),
                retry_duration=1000,
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )

        return stream_events
