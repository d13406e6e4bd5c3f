"""Live events as Server-Sent Events, read from the storage's event log.

Each SSE message is one entry of the log that every process on the storage writes to
(:meth:`hyperqueue.abc.Storage.read_events`): ``id`` is the entry's id, ``event`` its
type (``job.completed``), ``data`` the event as JSON (``{"type", "at", "job"}``). Ids
only grow across processes and restarts, so a client that reconnects with the last id
it saw (``Last-Event-ID``, which browsers send by themselves; or ``?after=``) gets
every event it missed from the log, with none lost or repeated, even from a restarted
server or another replica. A connection without either starts at the live end.
Retention prunes old entries: a client that comes back after longer than that gets a
``gap`` message first, so it knows to reload.

Only job events are on the stream, the same for every role that may read it (and for
everyone on an open server): the log holds job transitions and nothing else. Security
events (refusals, key names, client addresses, ``security.suspicious``) live on the
queue's bus and in the audit log, which only admin keys may read
(``GET {api_prefix}/audit``); nothing here subscribes to them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from fnmatch import fnmatchcase
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

__all__ = ["EventStreams"]

_encode = msgspec.json.Encoder().encode


class _Wire(msgspec.Struct, frozen=True, kw_only=True):
    type: str
    at: float
    job: hq.Job


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

    def __init__(
        self,
        queue: hq.Queue,
        *,
        heartbeat: float = 15.0,
        buffer: int = 1000,
        poll: float = 0.05,
    ) -> None:
        if not heartbeat > 0:
            raise ValueError("sse_heartbeat must be > 0 seconds")
        if buffer < 1:
            raise ValueError("sse_buffer must be at least 1 event")
        if not poll > 0:
            raise ValueError("poll must be > 0 seconds")
        self.queue = queue
        self.heartbeat = heartbeat
        self.buffer = buffer
        self.poll = poll
        self._open: set[object] = set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._open)

    def close_all(self) -> None:
        """End every open stream within one ``poll`` (their clients see the response
        end) and refuse new ones until :meth:`reopen`."""
        self._closed = True

    def reopen(self) -> None:
        self._closed = False

    async def messages(
        self, patterns: tuple[str, ...], after: int | None
    ) -> AsyncIterator[ServerSentEventMessage]:
        """The log from ``after`` on (the live end when ``None``), read ``buffer``
        entries at a time and looked at again every ``poll`` seconds when idle."""
        if self._closed:
            return
        storage = self.queue.storage
        if after is None:
            after = await storage.last_event_id()
            yield ServerSentEventMessage(data=None, comment="connected")
        else:
            first = await storage.read_events(after=after, limit=1)
            if first and first[0].id > after + 1 and after > 0:
                missed = first[0].id - after - 1
                yield ServerSentEventMessage(event="gap", data=_encode({"missed": missed}).decode())
            else:
                yield ServerSentEventMessage(data=None, comment="connected")
        token = object()
        self._open.add(token)
        try:  # (no cancel scope may span a yield: streams end by the closed flag)
            idle = 0.0
            while not self._closed:
                batch = await storage.read_events(after=after, limit=self.buffer)
                for entry in batch:
                    after = entry.id
                    if patterns and not any(fnmatchcase(entry.type, p) for p in patterns):
                        continue
                    data = _encode(_Wire(type=entry.type, at=entry.at, job=entry.job))
                    yield ServerSentEventMessage(id=entry.id, event=entry.type, data=data.decode())
                if batch:
                    idle = 0.0
                    if len(batch) == self.buffer:
                        continue
                await anyio.sleep(self.poll)
                idle += self.poll
                if idle >= self.heartbeat:
                    idle = 0.0
                    yield ServerSentEventMessage(data=None, comment="keep-alive")
        finally:
            self._open.discard(token)

    def route(self, modes: hq.ModeController) -> HTTPRouteHandler:
        streams = self

        @get(
            "/events",
            operation_id="streamEvents",
            summary="Live events (Server-Sent Events)",
            description=(
                "Resumable: send `Last-Event-ID` (or `after`) with the last id seen. "
                "`type` filters by event type pattern (`job.*`, `job.failed`). "
                "Job events only, for every role: security events are in the audit log."
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
