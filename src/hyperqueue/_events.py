"""Typed events and the bus that carries them.

The queue publishes every job transition here; metrics, the live stream, webhooks and
the audit log subscribe instead of being called by the queue. Three kinds of subscriber
exist because they cost the publisher different things:

- a plain handler runs inline, so it must be quick and must not block;
- an async handler gets its own bounded buffer and its own task, so a slow or failing
  one delays nobody: when its buffer is full, newer events are dropped for it alone, and
  counted;
- a stream hands ``(id, event)`` pairs to a consumer that reads at its own pace, with the
  same bounded buffer, and can resume after a reconnect from the history.

Publishing never awaits and never raises because of a subscriber. Nothing is built when
nobody listens (``active`` is False), which keeps the job path cheap; when someone does,
``publish`` looks up the subscribers of the event's class in a cache, so its cost does
not grow with the number of subscribers that do not want the event.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from fnmatch import fnmatchcase
from types import TracebackType
from typing import Any, Literal, TypeVar, overload

import anyio
import anyio.lowlevel
import msgspec
from anyio.abc import ObjectReceiveStream, TaskGroup

from ._clock import Clock, SystemClock
from ._models import Job, StoredEvent

__all__ = [
    "Event",
    "EventBus",
    "EventBusStats",
    "EventStream",
    "JobCancelled",
    "JobCompleted",
    "JobDeferred",
    "JobEnqueued",
    "JobEvent",
    "JobFailed",
    "JobProgress",
    "JobRescued",
    "JobRetrying",
    "JobStarted",
    "QueuePaused",
    "QueueResumed",
    "ScheduleMissed",
    "SubscriberStats",
    "job_event",
]

_logger = logging.getLogger("hyperqueue.events")


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of every event; ``at`` is the time on the publisher's clock.

    A subclass sets ``tag="area.what"`` (``job.failed``): the tag is the event's ``type``
    field on the wire and what a pattern such as ``"job.*"`` matches.
    """

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


class JobDeferred(JobEvent, frozen=True, kw_only=True, tag="job.deferred"):
    """The job's circuit breaker was open or its rate limit spent: it waits until
    ``job.run_at`` without the attempt being counted."""


class JobRescued(JobEvent, frozen=True, kw_only=True, tag="job.rescued"):
    """A worker lost the job's lease (crash, hang); it is pending again or failed."""


class ScheduleMissed(Event, frozen=True, kw_only=True, tag="schedule.missed"):
    """Slots of the periodic job ``schedule`` passed with no job: every process that
    runs it was down, or it was late by more than the grace (see
    :meth:`Queue.periodic`). ``missed`` slots, the oldest at ``first_slot``, the newest
    at ``last_slot`` (seconds since the epoch). Published by the one process that
    recorded them."""

    schedule: str
    missed: int
    first_slot: float
    last_slot: float


class QueuePaused(Event, frozen=True, kw_only=True, tag="queue.paused"):
    """The queue ``queue`` was paused (see :meth:`Queue.pause_queue`): no process claims
    its jobs until it is resumed. Published by the process that paused it."""

    queue: str


class QueueResumed(Event, frozen=True, kw_only=True, tag="queue.resumed"):
    """The queue ``queue`` was resumed: its jobs are claimed again. Published by the
    process that resumed it."""

    queue: str


_JOB_EVENTS: dict[str, type[JobEvent]] = {
    cls.__struct_config__.tag: cls  # type: ignore[misc]
    for cls in (
        JobEnqueued,
        JobStarted,
        JobProgress,
        JobCompleted,
        JobRetrying,
        JobFailed,
        JobCancelled,
        JobDeferred,
        JobRescued,
    )
}


def job_event(stored: StoredEvent) -> JobEvent:
    """The typed event of one entry of a storage's event log."""
    return _JOB_EVENTS[stored.type](at=stored.at, job=stored.job)


class SubscriberStats(msgspec.Struct, frozen=True, kw_only=True):
    """Figures of one subscriber.

    ``delivered`` counts events handed to the handler (or read from the stream),
    ``failed`` the handler calls that raised, ``dropped`` the events lost because the
    buffer was full, ``pending`` the events waiting in the buffer now. ``buffer`` is the
    buffer's bound (0 for an inline handler, which has none).
    """

    name: str
    kind: Literal["handler", "async", "stream"]
    delivered: int
    failed: int
    dropped: int
    pending: int
    buffer: int


class EventBusStats(msgspec.Struct, frozen=True, kw_only=True):
    """Figures of an :class:`EventBus`.

    ``published`` is also the id of the last event. ``delivered``, ``failed`` and
    ``dropped`` add up every subscriber's, including those that have unsubscribed.
    ``history`` is how many events the history holds now, out of ``history_limit``.
    """

    published: int
    delivered: int
    failed: int
    dropped: int
    history: int
    history_limit: int
    subscribers: tuple[SubscriberStats, ...]


_FAIR_SHARE = 32
"""Events an async handler may handle in a row before its task yields to the others."""

E = TypeVar("E", bound=Event)
Selector = type[Event] | str
Item = tuple[int, Event]
_Route = tuple[tuple["_Subscription", ...], tuple["_Subscription", ...]]


class _Subscription:
    """One subscriber: what it wants, how it is fed, and its figures."""

    __slots__ = (
        "delivered",
        "dropped",
        "failed",
        "handler",
        "kind",
        "limit",
        "live",
        "name",
        "patterns",
        "pending",
        "scope",
        "types",
        "waiter",
    )

    def __init__(
        self,
        kind: Literal["handler", "async", "stream"],
        handler: Callable[[Any], Any],
        selectors: tuple[Selector, ...],
        *,
        limit: int = 0,
        name: str | None = None,
    ) -> None:
        types: list[type[Event]] = []
        patterns: list[str] = []
        for selector in selectors:
            if isinstance(selector, str):
                patterns.append(selector)
            elif isinstance(selector, type) and issubclass(selector, Event):
                types.append(selector)
            else:
                raise TypeError(
                    f"subscribe to Event subclasses or tag patterns (str), not {selector!r}"
                )
        if not selectors:
            types.append(Event)
        self.kind = kind
        self.handler = handler
        self.types = tuple(types)
        self.patterns = tuple(patterns)
        self.limit = limit
        self.name = name or getattr(handler, "__qualname__", None) or repr(handler)
        self.pending: deque[Item] = deque()
        self.waiter: anyio.Event | None = None
        self.scope: anyio.CancelScope | None = None
        self.live = True
        self.delivered = 0
        self.failed = 0
        self.dropped = 0

    def wants(self, cls: type[Event]) -> bool:
        if issubclass(cls, self.types):
            return True
        tag = cls.__struct_config__.tag
        return isinstance(tag, str) and any(fnmatchcase(tag, p) for p in self.patterns)

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            waiter.set()

    def figures(self) -> SubscriberStats:
        return SubscriberStats(
            name=self.name,
            kind=self.kind,
            delivered=self.delivered,
            failed=self.failed,
            dropped=self.dropped,
            pending=len(self.pending),
            buffer=self.limit,
        )


def _kind(event: Event) -> str:
    tag = event.__struct_config__.tag
    return tag if isinstance(tag, str) else type(event).__name__


def _read_by_consumer(event: Event) -> None:
    """A stream has no handler: its consumer reads the buffer."""


def _bounded(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a whole number of events >= 1, not {value!r}")
    return value


class EventStream(ObjectReceiveStream[Item]):
    """``(event id, event)`` pairs from :meth:`EventBus.stream`: the replayed history
    first (when resuming), then live events as they are published.

    ``gap`` is how many events published after the resume point were no longer in the
    history, so a consumer that resumed can tell it missed some (0 when nothing was
    missed, or when not resuming). Reading after the stream closed raises
    :class:`anyio.ClosedResourceError`.
    """

    def __init__(self, bus: EventBus, sub: _Subscription, backlog: deque[Item], gap: int) -> None:
        self._bus = bus
        self._sub = sub
        self._backlog = backlog
        self.gap = gap

    async def receive(self) -> Item:
        await anyio.lowlevel.checkpoint()
        sub = self._sub
        while True:
            try:
                return self.receive_nowait()
            except anyio.WouldBlock:
                if sub.waiter is None:
                    sub.waiter = anyio.Event()
                await sub.waiter.wait()

    def receive_nowait(self) -> Item:
        """The next pair if one is buffered, else :class:`anyio.WouldBlock`: a consumer
        that writes in batches (an SSE response) drains what is there without a loop
        turn per event."""
        sub = self._sub
        if not sub.live:
            raise anyio.ClosedResourceError
        if self._backlog:
            sub.delivered += 1
            return self._backlog.popleft()
        if sub.pending:
            sub.delivered += 1
            return sub.pending.popleft()
        raise anyio.WouldBlock

    def close(self) -> None:
        """Stop receiving: events still buffered are discarded."""
        if self._sub.live:
            self._bus._remove(self._sub)
            self._backlog.clear()

    async def aclose(self) -> None:
        self.close()
        await anyio.lowlevel.checkpoint()

    def statistics(self) -> SubscriberStats:
        """This stream's figures (``pending`` counts the replayed backlog too)."""
        figures = self._sub.figures()
        return msgspec.structs.replace(figures, pending=figures.pending + len(self._backlog))


class EventBus:
    """Publish typed events to handlers and bounded streams, keeping a short history.

    Options (keyword-only):

    - ``history``: how many recent events are kept for :meth:`replay` and for resuming a
      :meth:`stream` (default 0: none). Memory grows with it; 10,000 is a sane bound.
    - ``clock``: where the close deadline is measured (default the system clock).
    - ``close_timeout``: how long leaving ``async with bus:`` waits for async handlers to
      work through their buffers before they are cancelled (default 5 s).

    Async handlers (:meth:`subscribe_async`) run in tasks that belong to the
    ``async with bus:`` block; the other kinds of subscriber need no block.
    """

    def __init__(
        self, *, history: int = 0, clock: Clock | None = None, close_timeout: float = 5.0
    ) -> None:
        if history < 0:
            raise ValueError("history must be >= 0 (0 keeps no history)")
        if not close_timeout >= 0:
            raise ValueError("close_timeout must be >= 0 seconds")
        self._subs: list[_Subscription] = []
        self._routes: dict[type[Event], _Route] = {}
        self._history: deque[Item] = deque(maxlen=history or None)
        self._keep = history > 0
        self._history_limit = history
        self._seq = 0
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._close_timeout = close_timeout
        self._tg: TaskGroup | None = None
        self._closing = False
        self._abandon = False
        self._runners = 0
        self._serving: set[_Subscription] = set()
        self._idle: anyio.Event | None = None
        self._retired_delivered = 0
        self._retired_failed = 0
        self.dropped = 0
        """Events dropped because a subscriber's buffer was full, over all subscribers."""
        self.active = self._keep
        """Whether anything would see a published event; publishers skip building one
        when it is False."""

    # -- subscribing ---------------------------------------------------------------

    def _add(self, sub: _Subscription) -> Callable[[], None]:
        self._subs.append(sub)
        self._routes = {}
        self.active = True

        def unsubscribe() -> None:
            self._remove(sub)

        return unsubscribe

    def _remove(self, sub: _Subscription) -> None:
        if not sub.live:
            return
        sub.live = False
        sub.pending.clear()
        sub.wake()
        self._subs.remove(sub)
        self._routes = {}
        self._retired_delivered += sub.delivered
        self._retired_failed += sub.failed
        self.active = self._keep or bool(self._subs)

    @overload
    def subscribe(
        self, handler: Callable[[E], None], *types: type[E], name: str | None = None
    ) -> Callable[[], None]: ...

    @overload
    def subscribe(
        self, handler: Callable[[Any], None], *selectors: Selector, name: str | None = None
    ) -> Callable[[], None]: ...

    def subscribe(
        self, handler: Callable[[Any], None], *selectors: Selector, name: str | None = None
    ) -> Callable[[], None]:
        """Call ``handler`` inline for each matching event; returns a function that
        unsubscribes.

        A selector is an event class (its subclasses match too) or a tag pattern in
        shell style (``"job.*"``, ``"job.failed"``); no selector matches every event.
        A handler that raises is logged and kept; it cannot break the publisher or the
        other handlers. It must not block: use :meth:`subscribe_async` to await.

        With event classes only, type checkers hold the handler to them; with a tag
        pattern they cannot know the classes it matches, so the handler's parameter is
        the subscriber's promise.
        """
        return self._add(_Subscription("handler", handler, selectors, name=name))

    @overload
    def subscribe_async(
        self,
        handler: Callable[[E], Awaitable[None]],
        *types: type[E],
        buffer: int = 1000,
        name: str | None = None,
    ) -> Callable[[], None]: ...

    @overload
    def subscribe_async(
        self,
        handler: Callable[[Any], Awaitable[None]],
        *selectors: Selector,
        buffer: int = 1000,
        name: str | None = None,
    ) -> Callable[[], None]: ...

    def subscribe_async(
        self,
        handler: Callable[[Any], Awaitable[None]],
        *selectors: Selector,
        buffer: int = 1000,
        name: str | None = None,
    ) -> Callable[[], None]:
        """Await ``handler`` for each matching event, in its own task, in order.

        Selectors work as in :meth:`subscribe`. Each async handler has its own buffer of
        ``buffer`` events (default 1000); when it is full, newer events are dropped for
        this handler only and counted in its figures. A handler that raises is logged
        and keeps receiving. The task runs while the bus is in ``async with bus:``
        (events published before then wait in the buffer); it ends when unsubscribed
        (discarding what is buffered) or with the block. Returns a function that
        unsubscribes.
        """
        sub = _Subscription(
            "async", handler, selectors, limit=_bounded("buffer", buffer), name=name
        )
        unsubscribe = self._add(sub)
        if self._tg is not None and not self._closing:
            self._start(sub, self._tg)
        return unsubscribe

    @asynccontextmanager
    async def stream(
        self,
        *selectors: Selector,
        buffer: int = 1000,
        after: int | None = None,
        name: str | None = None,
    ) -> AsyncIterator[EventStream]:
        """Receive ``(event id, event)`` pairs of matching events.

        When ``buffer`` events (default 1000) wait unread, newer ones are dropped and
        counted. With ``after`` (the id of the last event a consumer saw, as in SSE's
        ``Last-Event-ID``) the stream first yields the events of the history after that
        id, then live ones, with none lost or repeated in between; events the history
        no longer held are counted in the stream's ``gap``. Ids are this bus's own.
        """
        sub = _Subscription(
            "stream",
            _read_by_consumer,
            selectors,
            limit=_bounded("buffer", buffer),
            name=name or "stream",
        )
        backlog: deque[Item] = deque()
        gap = 0
        if after is not None:
            # No await between the snapshot and the subscription: nothing can slip in.
            history = self._history
            oldest = history[0][0] if history else self._seq + 1
            gap = max(0, oldest - 1 - after)
            backlog.extend(item for item in history if item[0] > after and sub.wants(type(item[1])))
        self._add(sub)
        events = EventStream(self, sub, backlog, gap)
        try:
            yield events
        finally:
            events.close()

    # -- publishing ----------------------------------------------------------------

    def _route(self, cls: type[Event]) -> _Route:
        wanted = [sub for sub in self._subs if sub.wants(cls)]
        route = (
            tuple(sub for sub in wanted if sub.kind == "handler"),
            tuple(sub for sub in wanted if sub.kind != "handler"),
        )
        self._routes[cls] = route
        return route

    def publish(self, event: Event) -> int:
        """Deliver ``event`` now; returns its id (1, 2, 3, ... for :meth:`replay`).

        Inline handlers have run when it returns; async handlers and streams have the
        event in their buffers (or counted it as dropped).
        """
        self._seq = seq = self._seq + 1
        if self._keep:
            self._history.append((seq, event))
        try:
            calls, buffers = self._routes[event.__class__]
        except KeyError:
            calls, buffers = self._route(event.__class__)
        if calls:
            for sub in calls:
                sub.delivered += 1
                try:
                    sub.handler(event)
                except Exception:  # a subscriber's bug must not break the publisher
                    sub.failed += 1
                    _logger.exception(
                        "event handler %r failed on event %d (%s)", sub.name, seq, _kind(event)
                    )
        if buffers:
            for sub in buffers:
                pending = sub.pending
                if len(pending) < sub.limit:
                    pending.append((seq, event))
                    if sub.waiter is not None:
                        sub.wake()
                else:
                    sub.dropped += 1
                    self.dropped += 1
        return seq

    def replay(self, after: int = 0) -> Iterator[Item]:
        """Events from the history with an id greater than ``after``, oldest first."""
        return ((seq, event) for seq, event in tuple(self._history) if seq > after)

    # -- figures -------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the bus's async subscribers run (it was entered with ``async with``)."""
        return self._tg is not None

    def stats(self) -> EventBusStats:
        """A snapshot of the bus's figures."""
        subscribers = tuple(sub.figures() for sub in self._subs)
        return EventBusStats(
            published=self._seq,
            delivered=self._retired_delivered + sum(s.delivered for s in subscribers),
            failed=self._retired_failed + sum(s.failed for s in subscribers),
            dropped=self.dropped,
            history=len(self._history),
            history_limit=self._history_limit,
            subscribers=subscribers,
        )

    # -- async handlers' lifecycle -------------------------------------------------

    def _start(self, sub: _Subscription, tg: TaskGroup) -> None:
        self._runners += 1
        tg.start_soon(self._serve, sub, name=f"hyperqueue event handler {sub.name}")

    async def _serve(self, sub: _Subscription) -> None:
        # Shielded so that the handler drains its buffer on the way out even when the
        # host is cancelled; __aexit__ cancels ``sub.scope`` at the close deadline.
        try:
            with anyio.CancelScope(shield=True) as sub.scope:
                self._serving.add(sub)
                await self._deliver(sub)
        finally:
            self._serving.discard(sub)
            self._runners -= 1
            if not self._runners and self._idle is not None:
                self._idle.set()

    async def _deliver(self, sub: _Subscription) -> None:
        pending = sub.pending
        handler: Callable[[Event], Awaitable[None]] = sub.handler
        streak = 0
        while not self._abandon:
            if pending:
                seq, event = pending.popleft()
                sub.delivered += 1
                try:
                    await handler(event)
                except Exception:  # the handler's bug is logged; it keeps receiving
                    sub.failed += 1
                    _logger.exception(
                        "async event handler %r failed on event %d (%s)",
                        sub.name,
                        seq,
                        _kind(event),
                    )
                streak += 1
                if streak == _FAIR_SHARE:
                    # A handler that never awaits must still let the others run; yielding
                    # after every event would cost a loop turn (~2 us on asyncio) each.
                    streak = 0
                    await anyio.lowlevel.checkpoint()
            elif not sub.live or self._closing:
                return
            else:
                streak = 0
                sub.waiter = waiter = anyio.Event()
                await waiter.wait()

    async def __aenter__(self) -> EventBus:
        if self._tg is not None:
            raise RuntimeError("this EventBus is already running")
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        self._closing = self._abandon = False
        self._idle = None
        for sub in self._subs:
            if sub.kind == "async":
                self._start(sub, tg)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        tg = self._tg
        assert tg is not None, "__aexit__ without __aenter__"
        self._closing = True
        handlers = [sub for sub in self._subs if sub.kind == "async"]
        try:
            for sub in handlers:
                sub.wake()
            if self._runners:
                self._idle = anyio.Event()
                with (
                    anyio.CancelScope(shield=True),
                    self._clock.cancel_after(self._close_timeout),
                ):
                    await self._idle.wait()
        finally:
            self._abandon = True
            for sub in tuple(self._serving):  # unsubscribed ones may still be mid-call
                if sub.scope is not None:
                    sub.scope.cancel()
            try:
                swallowed = await tg.__aexit__(exc_type, exc, tb)
            finally:
                self._tg = None
                for sub in handlers:
                    # Events the close deadline left undelivered are lost: count them.
                    sub.dropped += len(sub.pending)
                    self.dropped += len(sub.pending)
                    self._remove(sub)
        return swallowed
