"""Circuit breaker: stop calling an operation that keeps failing, then probe it carefully.

A dependency that is down makes every call wait for its timeout and adds load to
something that is already struggling. A breaker notices the failures and, for a while,
refuses calls at once with :class:`~hyperqueue.CircuitOpenError` (``closed -> open``).
When the open period has passed it lets a few trial calls through (``half_open``): if
they all succeed it closes again, if one fails it reopens for another period.

The closed state is the one that runs almost all the time, so its success path reads no
clock and builds nothing: a few integer updates on top of the awaited call. The clock is
read only when a rule needs time (slow-call detection, a time-based window) or when the
breaker is not closed.

Results are attributed to the state in which their call was let through: a call that
started while closed and ends after the breaker reopened does not count as a trial.
"""

from __future__ import annotations

import enum
import functools
import logging
import math
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from contextvars import ContextVar
from types import TracebackType
from typing import Any, ParamSpec, TypedDict, TypeVar, Unpack

import msgspec

from ._clock import Clock, SystemClock
from ._errors import CircuitOpenError
from ._events import Event, EventBus

__all__ = [
    "BreakerOptions",
    "BreakerRegistry",
    "BreakerState",
    "BreakerStateChanged",
    "BreakerStats",
    "CircuitBreaker",
]

P = ParamSpec("P")
R = TypeVar("R")
ExceptionTypes = type[BaseException] | tuple[type[BaseException], ...]

_logger = logging.getLogger("hyperqueue.breaker")


class BreakerState(enum.StrEnum):
    """``closed`` lets calls through, ``open`` refuses them, ``half_open`` lets trials through."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


_CLOSED = BreakerState.CLOSED
_OPEN = BreakerState.OPEN
_HALF_OPEN = BreakerState.HALF_OPEN


class BreakerStateChanged(Event, frozen=True, kw_only=True, tag="breaker.state_changed"):
    """The breaker ``name`` went from ``old`` to ``new``.

    ``retry_at`` is set when ``new`` is open: when trial calls will be let through.
    The change from open to half-open is noticed by the first call (or check) after the
    open period; its ``at`` is the end of the open period, not the moment it was noticed.
    """

    name: str
    old: BreakerState
    new: BreakerState
    retry_at: float | None = None


class BreakerStats(msgspec.Struct, frozen=True, kw_only=True):
    """Figures of one breaker, counted since it was created.

    ``calls`` were let through, ``rejected`` were refused. Of the calls that ended,
    ``successes`` and ``failures`` are as the breaker judged them (a slow success is a
    failure, and is also counted in ``slow_calls``); ``ignored`` ended with an exception
    listed in ``ignore`` or were cancelled. ``trips`` counts every move to open,
    reopening after a failed trial included. ``consecutive_failures`` is the current run
    in the closed state. ``state_since`` is when the current state began, on the
    breaker's clock; ``retry_at`` is when an open breaker lets trials through.
    """

    name: str
    state: BreakerState
    calls: int
    successes: int
    failures: int
    slow_calls: int
    ignored: int
    rejected: int
    trips: int
    consecutive_failures: int
    state_since: float
    time_in_state: float
    retry_at: float | None


class _CountWindow:
    """Outcomes of the last ``size`` calls, in a ring of bytes: no allocation per call."""

    __slots__ = ("_filled", "_next", "_ring", "_size", "failures")

    def __init__(self, size: int) -> None:
        self._ring = bytearray(size)
        self._size = size
        self._next = 0
        self._filled = 0
        self.failures = 0

    def record(self, failed: bool, now: float) -> None:
        i = self._next
        new = 1 if failed else 0
        self.failures += new - self._ring[i]
        self._ring[i] = new
        self._next = i + 1 if i + 1 < self._size else 0
        if self._filled < self._size:
            self._filled += 1

    def calls(self, now: float) -> int:
        return self._filled

    def clear(self) -> None:
        self._ring = bytearray(self._size)
        self._next = self._filled = self.failures = 0


class _TimeWindow:
    """Outcomes of the last ``seconds``, in ten buckets so memory stays bounded.

    The window slides in steps of a tenth of its length: it holds the calls from the
    start of the bucket nine buckets back until now, so between 0.9 and 1.0 times
    ``seconds`` of history.
    """

    _BUCKETS = 10
    __slots__ = ("_calls", "_fails", "_head", "_total", "_width", "failures")

    def __init__(self, seconds: float) -> None:
        self._width = seconds / self._BUCKETS
        self._calls = [0] * self._BUCKETS
        self._fails = [0] * self._BUCKETS
        self._head = 0
        self._total = 0
        self.failures = 0

    def _advance(self, now: float) -> int:
        index = int(now // self._width)
        head = self._head
        if index > head:
            for step in range(1, min(index - head, self._BUCKETS) + 1):
                slot = (head + step) % self._BUCKETS
                self._total -= self._calls[slot]
                self.failures -= self._fails[slot]
                self._calls[slot] = self._fails[slot] = 0
            self._head = head = index
        return head % self._BUCKETS

    def record(self, failed: bool, now: float) -> None:
        slot = self._advance(now)
        self._calls[slot] += 1
        self._total += 1
        if failed:
            self._fails[slot] += 1
            self.failures += 1

    def calls(self, now: float) -> int:
        self._advance(now)
        return self._total

    def clear(self) -> None:
        self._calls = [0] * self._BUCKETS
        self._fails = [0] * self._BUCKETS
        self._total = self.failures = 0


# (generation, start time, the entry below) per task, for ``async with breaker:``, whose
# __aexit__ has no frame of its own in which to remember what __aenter__ decided.
_admissions: ContextVar[tuple[int, float, Any] | None] = ContextVar(
    "hyperqueue_breaker_admissions", default=None
)


class CircuitBreaker:
    """Refuse calls to an operation that keeps failing, for a while, then probe it.

    Use it as ``async with breaker:``, as a decorator of async functions (``@breaker``)
    or with ``await breaker.call(fn, *args)``. While open it raises
    :class:`~hyperqueue.CircuitOpenError` without calling anything.

    Defaults: trips after 5 consecutive failures (``failure_threshold``), stays open
    30 s (``open_for``), then lets 1 trial call through (``half_open_trials``); every
    trial must succeed to close it, the first failed trial reopens it.

    - ``failure_rate`` (off by default, e.g. ``0.5``) also trips it when that fraction
      of the calls in a sliding window failed, once the window holds ``min_calls``
      (default 10). The window is the last ``window_calls`` calls (default 100), or the
      last ``window_seconds`` when that is set. The rate is checked when a failure is
      recorded. Set ``failure_threshold=None`` to trip on the rate alone.
    - ``slow_call`` (off by default) counts a call that took longer than that many
      seconds as a failure, even though its result is returned to the caller.
    - ``ignore``: exceptions that count neither as failure nor as success (a 404 says
      nothing about the health of a service). Only ``Exception`` subclasses count as
      failures: cancellation is never one.

    State changes are published as :class:`BreakerStateChanged` on ``events`` (when
    someone listens) and passed to ``on_change``; an exception from ``on_change`` is
    logged, never raised into the call that caused the change.
    """

    __slots__ = (
        "_calls",
        "_clock",
        "_consecutive",
        "_events",
        "_failures",
        "_fast",
        "_gen",
        "_ignore",
        "_ignored",
        "_needs_now",
        "_on_change",
        "_open_for",
        "_plain",
        "_rate",
        "_rejected",
        "_retry_at",
        "_since",
        "_slow",
        "_slow_call",
        "_state",
        "_successes",
        "_threshold",
        "_trial_successes",
        "_trials",
        "_trials_out",
        "_trips",
        "_window",
        "_window_min",
        "name",
    )

    def __init__(
        self,
        name: str = "default",
        *,
        failure_threshold: int | None = 5,
        failure_rate: float | None = None,
        window_calls: int = 100,
        window_seconds: float | None = None,
        min_calls: int = 10,
        slow_call: float | None = None,
        open_for: float = 30.0,
        half_open_trials: int = 1,
        ignore: ExceptionTypes = (),
        clock: Clock | None = None,
        events: EventBus | None = None,
        on_change: Callable[[BreakerStateChanged], None] | None = None,
    ) -> None:
        if failure_threshold is not None and failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1 (or None)")
        if failure_rate is not None and not 0.0 < failure_rate <= 1.0:
            raise ValueError("failure_rate must be a fraction in (0, 1] (or None)")
        if failure_threshold is None and failure_rate is None:
            raise ValueError("set failure_threshold, failure_rate or both: nothing would trip")
        if window_calls < 1 or min_calls < 1:
            raise ValueError("window_calls and min_calls must be at least 1")
        if window_seconds is None and min_calls > window_calls:
            raise ValueError("min_calls is larger than window_calls: the rate could never trip")
        for option, value in (("window_seconds", window_seconds), ("slow_call", slow_call)):
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{option} must be a finite number of seconds > 0 (or None)")
        if not (open_for >= 0 and math.isfinite(open_for)):
            raise ValueError("open_for must be a finite number of seconds >= 0")
        if half_open_trials < 1:
            raise ValueError("half_open_trials must be at least 1")
        self.name = name
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._events = events
        self._on_change = on_change
        self._threshold = failure_threshold
        self._rate = failure_rate
        self._window_min = min_calls
        self._window: _CountWindow | _TimeWindow | None = None
        if failure_rate is not None:
            self._window = (
                _TimeWindow(window_seconds)
                if window_seconds is not None
                else _CountWindow(window_calls)
            )
        self._slow_call = slow_call
        self._open_for = float(open_for)
        self._trials = half_open_trials
        self._ignore = ignore
        # Which rules need a clock reading when a call ends, and whether a success in
        # the closed state can be recorded inline with nothing but counters.
        self._needs_now = slow_call is not None or isinstance(self._window, _TimeWindow)
        self._plain = slow_call is None and self._window is None
        self._state = _CLOSED
        self._fast = self._plain
        self._gen = 0
        self._since = self._clock.now()
        self._retry_at = 0.0
        self._consecutive = 0
        self._trials_out = 0
        self._trial_successes = 0
        self._calls = self._successes = self._failures = self._slow = 0
        self._ignored = self._rejected = self._trips = 0

    # -- what the outside sees ---------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """The state now: an open breaker whose open period has passed is half-open."""
        state = self._state
        if state is _OPEN and self._clock.now() >= self._retry_at:
            return _HALF_OPEN
        return state

    @property
    def retry_at(self) -> float | None:
        """When an open breaker lets trial calls through; ``None`` when it is not open."""
        if self._state is _OPEN and self._clock.now() < self._retry_at:
            return self._retry_at
        return None

    def stats(self) -> BreakerStats:
        now = self._clock.now()
        state, since = self._state, self._since
        if state is _OPEN and now >= self._retry_at:
            state, since = _HALF_OPEN, self._retry_at
        return BreakerStats(
            name=self.name,
            state=state,
            calls=self._calls,
            successes=self._successes,
            failures=self._failures,
            slow_calls=self._slow,
            ignored=self._ignored,
            rejected=self._rejected,
            trips=self._trips,
            consecutive_failures=self._consecutive,
            state_since=since,
            time_in_state=max(now - since, 0.0),
            retry_at=self._retry_at if state is _OPEN else None,
        )

    # -- for callers that make the call themselves ---------------------------------------

    def allow(self) -> bool:
        """Ask to make one call now; ``False`` means refused (counted as rejected).

        ``True`` is a permission, not just a look: in the half-open state it takes one
        of the trial slots. Follow every ``True`` with :meth:`record_success`,
        :meth:`record_failure` or :meth:`release`, or the slot stays taken. To look
        without asking, read :attr:`state`. A recorded outcome counts for the state at
        the time it is recorded: with no call to hold on to, it cannot be traced back.
        """
        return self._admit() >= 0

    def record_success(self, *, duration: float | None = None) -> None:
        """Record that a call allowed by :meth:`allow` succeeded.

        With ``duration`` (seconds) and ``slow_call`` set, a slow call is a failure.
        """
        gen = self._gen
        if duration is not None and self._slow_call is not None and duration > self._slow_call:
            self._slow += 1
            self._failed(gen, self._clock.now())
        else:
            self._succeeded(gen, self._clock.now() if self._needs_now else 0.0)

    def record_failure(self, exc: BaseException | None = None) -> None:
        """Record that a call allowed by :meth:`allow` failed (with ``exc``: an
        exception the breaker is told to ``ignore`` gives the permission back instead)."""
        if exc is not None and isinstance(exc, self._ignore):
            self._ignore_outcome(self._gen)
            return
        self._failed(self._gen, self._clock.now() if self._needs_now else 0.0)

    def refused_until(self) -> float:
        """When a call refused now may ask again: the end of the open period, or, while
        half-open trials are out, a tenth of ``open_for`` from now (at least 50 ms), by
        which time a trial has usually told whether the breaker closes."""
        now = self._clock.now()
        if self._state is _OPEN and now < self._retry_at:
            return self._retry_at
        return now + max(self._open_for / 10, 0.05)

    def release(self) -> None:
        """Give back a permission from :meth:`allow` whose call said nothing (cancelled)."""
        self._ignore_outcome(self._gen)

    def reset(self) -> None:
        """Close the breaker now, whatever its state (an operator knows it is fixed)."""
        if self._state is not _CLOSED:
            self._move(_CLOSED, self._clock.now())

    # -- making the call -----------------------------------------------------------------

    async def call(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Await ``fn(*args, **kwargs)`` through the breaker."""
        if self._fast:
            gen = self._gen
            self._calls += 1
            try:
                result = await fn(*args, **kwargs)
            except Exception as exc:
                self._raised(exc, gen, 0.0)
                raise
            except BaseException:
                self._ignore_outcome(gen)
                raise
            self._successes += 1
            if gen == self._gen:
                self._consecutive = 0
            return result
        return await self._call(fn, args, kwargs)

    def __call__(self, fn: Callable[P, Awaitable[R]]) -> Callable[P, Coroutine[Any, Any, R]]:
        """Decorate an async function so that every call goes through the breaker."""
        breaker = self
        call = self._call

        @functools.wraps(fn)
        async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            # The closed-state path of ``call``, inlined: one coroutine per call, not two.
            if breaker._fast:
                gen = breaker._gen
                breaker._calls += 1
                try:
                    result = await fn(*args, **kwargs)
                except Exception as exc:
                    breaker._raised(exc, gen, 0.0)
                    raise
                except BaseException:
                    breaker._ignore_outcome(gen)
                    raise
                breaker._successes += 1
                if gen == breaker._gen:
                    breaker._consecutive = 0
                return result
            return await call(fn, args, kwargs)

        return guarded

    async def _call(self, fn: Callable[..., Awaitable[R]], args: Any, kwargs: Any) -> R:
        gen = self._admit()
        if gen < 0:
            raise self._refusal()
        start = self._clock.now() if self._slow_call is not None else 0.0
        try:
            result = await fn(*args, **kwargs)
        except Exception as exc:
            self._raised(exc, gen, start)
            raise
        except BaseException:
            self._ignore_outcome(gen)
            raise
        self._returned(gen, start)
        return result

    async def __aenter__(self) -> None:
        if self._fast:
            gen = self._gen
            self._calls += 1
            start = 0.0
        else:
            gen = self._admit()
            if gen < 0:
                raise self._refusal()
            start = self._clock.now() if self._slow_call is not None else 0.0
        _admissions.set((gen, start, _admissions.get()))

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        entry = _admissions.get()
        if entry is None:  # pragma: no cover - only if __aexit__ runs in another context
            raise RuntimeError("breaker exited in a different context than it was entered")
        gen, start, below = entry
        _admissions.set(below)
        if exc is None:
            if self._fast and gen == self._gen:  # let through while closed, still closed
                self._successes += 1
                self._consecutive = 0
            else:
                self._returned(gen, start)
        elif isinstance(exc, Exception):
            self._raised(exc, gen, start)
        else:
            self._ignore_outcome(gen)

    # -- the state machine ---------------------------------------------------------------

    def _admit(self) -> int:
        """Let one call through and return the generation it belongs to, or -1."""
        state = self._state
        if state is _CLOSED:
            self._calls += 1
            return self._gen
        if state is _OPEN:
            if self._clock.now() < self._retry_at:
                self._rejected += 1
                return -1
            self._move(_HALF_OPEN, self._retry_at)
        if self._trials_out + self._trial_successes >= self._trials:
            self._rejected += 1
            return -1
        self._trials_out += 1
        self._calls += 1
        return self._gen

    def _refusal(self) -> CircuitOpenError:
        now = self._clock.now()
        if self._state is _OPEN:
            return CircuitOpenError(self.name, self._retry_at, self._retry_at - now)
        # half-open with every trial slot taken: ask again once a trial has had time
        retry_at = self.refused_until()
        return CircuitOpenError(self.name, retry_at, retry_at - now)

    def _returned(self, gen: int, start: float) -> None:
        """A call let through in generation ``gen`` returned normally."""
        if self._needs_now:
            now = self._clock.now()
            if self._slow_call is not None and now - start > self._slow_call:
                self._slow += 1
                self._failed(gen, now)
                return
            self._succeeded(gen, now)
        else:
            self._succeeded(gen, 0.0)

    def _raised(self, exc: Exception, gen: int, start: float) -> None:
        if isinstance(exc, self._ignore):
            self._ignore_outcome(gen)
            return
        now = self._clock.now() if self._needs_now else 0.0
        if self._slow_call is not None and now - start > self._slow_call:
            self._slow += 1
        self._failed(gen, now)

    def _succeeded(self, gen: int, now: float) -> None:
        self._successes += 1
        if gen != self._gen:  # let through in a state that has since ended
            return
        state = self._state
        if state is _CLOSED:
            self._consecutive = 0
            if self._window is not None:
                self._window.record(False, now)
        elif state is _HALF_OPEN:
            if self._trials_out:
                self._trials_out -= 1
            self._trial_successes += 1
            if self._trial_successes >= self._trials:
                self._move(_CLOSED, now or self._clock.now())

    def _failed(self, gen: int, now: float) -> None:
        self._failures += 1
        if gen != self._gen:
            return
        state = self._state
        if state is _CLOSED:
            self._consecutive += 1
            if self._threshold is not None and self._consecutive >= self._threshold:
                self._move(_OPEN, now or self._clock.now())
                return
            window = self._window
            if window is not None:
                window.record(True, now)
                rate = self._rate
                calls = window.calls(now)
                if (
                    rate is not None
                    and calls >= self._window_min
                    and window.failures >= rate * calls
                ):
                    self._move(_OPEN, now or self._clock.now())
        elif state is _HALF_OPEN:
            self._move(_OPEN, now or self._clock.now())

    def _ignore_outcome(self, gen: int) -> None:
        self._ignored += 1
        if gen == self._gen and self._state is _HALF_OPEN and self._trials_out:
            self._trials_out -= 1

    def _move(self, new: BreakerState, at: float) -> None:
        old = self._state
        self._state = new
        self._gen += 1
        self._since = at
        self._consecutive = 0
        self._trials_out = self._trial_successes = 0
        if self._window is not None:
            self._window.clear()
        if new is _OPEN:
            self._trips += 1
            self._retry_at = at + self._open_for
        self._fast = new is _CLOSED and self._plain
        bus, on_change = self._events, self._on_change
        if (bus is not None and bus.active) or on_change is not None:
            event = BreakerStateChanged(
                at=at,
                name=self.name,
                old=old,
                new=new,
                retry_at=self._retry_at if new is _OPEN else None,
            )
            if bus is not None and bus.active:
                bus.publish(event)
            if on_change is not None:
                try:
                    on_change(event)
                except Exception:  # the callback's bug must not fail the guarded call
                    _logger.exception("breaker %r: on_change callback failed", self.name)

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.name!r}, state={self.state.value})"


class BreakerOptions(TypedDict, total=False):
    """The options of :class:`CircuitBreaker` that a :class:`BreakerRegistry` hands on."""

    failure_threshold: int | None
    failure_rate: float | None
    window_calls: int
    window_seconds: float | None
    min_calls: int
    slow_call: float | None
    open_for: float
    half_open_trials: int
    ignore: ExceptionTypes


class BreakerRegistry:
    """One breaker per operation name, made on first use, so call sites only name it.

    ``get("payments")`` returns the same breaker every time; the first call creates it
    with the registry's ``defaults`` (the :class:`CircuitBreaker` defaults where not
    given) updated by ``overrides[name]``. All breakers share the registry's clock,
    event bus and ``on_change`` callback.
    """

    __slots__ = ("_breakers", "_clock", "_defaults", "_events", "_on_change", "_overrides")

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        events: EventBus | None = None,
        on_change: Callable[[BreakerStateChanged], None] | None = None,
        overrides: Mapping[str, BreakerOptions] | None = None,
        **defaults: Unpack[BreakerOptions],
    ) -> None:
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._events = events
        self._on_change = on_change
        self._defaults = defaults
        self._overrides = dict(overrides or {})
        self._breakers: dict[str, CircuitBreaker] = {}
        # Fail at construction, not at the first call of some rarely used operation.
        CircuitBreaker("defaults", clock=self._clock, **defaults)
        for name in self._overrides:
            CircuitBreaker(name, clock=self._clock, **self._options(name))

    def _options(self, name: str) -> BreakerOptions:
        options: BreakerOptions = {**self._defaults, **self._overrides.get(name, {})}
        return options

    def get(self, name: str) -> CircuitBreaker:
        """The breaker for ``name``, created with the registry's options on first use."""
        breaker = self._breakers.get(name)
        if breaker is None:
            breaker = self._breakers[name] = CircuitBreaker(
                name,
                clock=self._clock,
                events=self._events,
                on_change=self._on_change,
                **self._options(name),
            )
        return breaker

    def all(self) -> list[CircuitBreaker]:
        """Every breaker created so far, in creation order."""
        return list(self._breakers.values())

    def stats(self) -> list[BreakerStats]:
        return [breaker.stats() for breaker in self._breakers.values()]

    def __iter__(self) -> Iterator[CircuitBreaker]:
        return iter(tuple(self._breakers.values()))

    def __len__(self) -> int:
        return len(self._breakers)

    def __contains__(self, name: object) -> bool:
        return name in self._breakers

    def __repr__(self) -> str:
        return f"BreakerRegistry({len(self._breakers)} breakers)"
