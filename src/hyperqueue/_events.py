"""Typed events and the bus that carries them.

The queue publishes every job transition here; metrics, the live stream, webhooks and
the audit log subscribe instead of being called by the queue. Handlers are plain
callables run inline and must not block; a consumer that needs to await reads from a
bounded stream instead, so a slow consumer loses events (counted) rather than slowing
the queue. Nothing is built when nobody listens, which keeps the job path cheap.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._models import Job

__all__ = [
    "Event",
    "EventBus",
    "JobCancelled",
    "JobCompleted",
    "JobEnqueued",
    "JobEvent",
    "JobFailed",
    "JobProgress",
    "JobRescued",
    "JobRetrying",
    "JobStarted",
]


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of every event; ``at`` is the time on the publisher's clock."""

    at: float


class JobEvent(Event, frozen=True, kw_only=True):
    """A job changed; ``job`` is the job after the change."""

    job: Job


class JobEnqueued(JobEvent, frozen=True, kw_only=True, tag="job.enqueued"):
    pass


class JobStarted(JobEvent, frozen=True, kw_only=True, tag="job.started"):
    pass


class JobProgress(JobEvent, frozen=True, kw_only=True, tag="job.progress"):
    pass


class JobCompleted(JobEvent, frozen=True, kw_only=True, tag="job.completed"):
    pass


class JobRetrying(JobEvent, frozen=True, kw_only=True, tag="job.retrying"):
    """The attempt failed and the job waits until ``job.run_at`` to run again."""


class JobFailed(JobEvent, frozen=True, kw_only=True, tag="job.failed"):
    """Attempts are used up: the job is in the dead-letter queue."""


class JobCancelled(JobEvent, frozen=True, kw_only=True, tag="job.cancelled"):
    pass


class JobRescued(JobEvent, frozen=True, kw_only=True, tag="job.rescued"):
    """A worker lost the job's lease (crash, hang); it is pending again or failed."""


E = TypeVar("E", bound=Event)
Handler = Callable[[Any], None]


class EventBus:
    """Publish typed events to handlers and bounded streams, keeping a short history.

    ``history`` is how many recent events are kept for :meth:`replay` (0 keeps none).
    """

    def __init__(self, *, history: int = 0) -> None:
        self._handlers: list[tuple[tuple[type[Event], ...], Handler]] = []
        self._history: deque[tuple[int, Event]] = deque(maxlen=history or None)
        self._keep = history > 0
        self._seq = 0
        self.dropped = 0
        self.active = self._keep

    def _refresh(self) -> None:
        self.active = self._keep or bool(self._handlers)

    def subscribe(self, handler: Callable[[E], None], *types: type[E]) -> Callable[[], None]:
        """Call ``handler`` for events of ``types`` (all events when none are given).

        Returns a function that unsubscribes. A handler that raises is logged and kept;
        it cannot break the publisher or the other handlers.
        """
        entry: tuple[tuple[type[Event], ...], Handler] = (types or (Event,), handler)
        self._handlers.append(entry)
        self._refresh()

        def unsubscribe() -> None:
            if entry in self._handlers:
                self._handlers.remove(entry)
                self._refresh()

        return unsubscribe

    @asynccontextmanager
    async def stream(
        self, *types: type[Event], buffer: int = 1000
    ) -> AsyncIterator[MemoryObjectReceiveStream[tuple[int, Event]]]:
        """Receive ``(event id, event)`` pairs; when ``buffer`` is full, newer events are
        dropped and counted in :attr:`dropped`."""
        send: MemoryObjectSendStream[tuple[int, Event]]
        send, receive = anyio.create_memory_object_stream[tuple[int, Event]](buffer)

        def forward(event: Event) -> None:
            try:
                send.send_nowait((self._seq, event))
            except anyio.WouldBlock:
                self.dropped += 1

        unsubscribe = self.subscribe(forward, *types)
        try:
            async with receive:
                yield receive
        finally:
            unsubscribe()
            send.close()

    def publish(self, event: Event) -> int:
        """Deliver ``event`` now; returns its id (increasing, for :meth:`replay`)."""
        self._seq = seq = self._seq + 1
        if self._keep:
            self._history.append((seq, event))
        for types, handler in tuple(self._handlers):
            if isinstance(event, types):
                try:
                    handler(event)
                except Exception:  # a subscriber's bug must not break the publisher
                    _log_handler_error(handler)
        return seq

    def replay(self, after: int = 0) -> Iterator[tuple[int, Event]]:
        """Events from the history with an id greater than ``after``, oldest first."""
        return ((seq, event) for seq, event in tuple(self._history) if seq > after)


def _log_handler_error(handler: Handler) -> None:
    import logging

    logging.getLogger("hyperqueue.events").exception("event handler %r failed", handler)
