"""Rate limits per key (a client, an endpoint, a task), on the ``limits`` library.

The algorithms are ``limits``' own strategy classes: fixed window, moving window and
sliding window counter, with limits written as ``limits`` parses them ("10/second",
"100 per minute", "5/10 seconds", or several joined by ";").

Why a storage of our own under them: ``limits.aio`` is asyncio-only, and the sync
``limits.storage.MemoryStorage`` reads ``time.time()`` in every method, with no hook to
give it another clock, and starts a ``threading.Timer`` that expires entries by real time
from another thread. In the core that would be a background thread outside any task
group, and under the fake clock it would expire entries at random. So
:class:`ClockStorage` implements the same ``limits`` storage interfaces (``Storage``,
``MovingWindowSupport``, ``SlidingWindowCounterSupport``) over the injected
:class:`~hyperqueue.Clock`: tests drive rate limits with
:class:`~hyperqueue.testing.FakeClock` and nothing patches ``time``. Expired windows are
dropped when touched, and all at once whenever the number of keys has doubled since the
last sweep, so idle keys cost no memory for long without a background task.

Counts live in this process's memory: several processes (or hosts) each count their own.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Literal, get_args

import anyio.lowlevel
import msgspec
from limits import RateLimitItem, parse_many
from limits.storage import MovingWindowSupport, SlidingWindowCounterSupport, Storage
from limits.storage.base import TimestampedSlidingWindow
from limits.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    SlidingWindowCounterRateLimiter,
)
from limits.strategies import RateLimiter as LimitsStrategy

from ._clock import Clock, SystemClock
from ._errors import HyperqueueError

__all__ = ["RateLimitExceeded", "RateLimitResult", "RateLimiter", "Strategy"]

Strategy = Literal["fixed-window", "moving-window", "sliding-window-counter"]
_STRATEGIES: dict[str, type[LimitsStrategy]] = {
    "fixed-window": FixedWindowRateLimiter,
    "moving-window": MovingWindowRateLimiter,
    "sliding-window-counter": SlidingWindowCounterRateLimiter,
}
_MIN_SWEEP = 1024
_KEYS_HELD = 4096  # storage keys a one-limit limiter remembers (it forgets all when full)
_NUDGE = 0.001  # seconds: the least a waiting acquire sleeps, so it cannot spin


class RateLimitExceeded(HyperqueueError):
    """:meth:`RateLimiter.acquire` could not pass within its timeout.

    ``retry_after`` is how many seconds from the moment it was raised the key needs
    before a hit may pass (``math.inf`` if the cost is above the limit: never).
    """

    def __init__(self, key: str, retry_after: float) -> None:
        super().__init__(f"rate limit of {key!r} exceeded; retry in {retry_after:.3f} s")
        self.key = key
        self.retry_after = retry_after


class RateLimitResult(msgspec.Struct, frozen=True, kw_only=True):
    """What an HTTP layer needs for ``RateLimit-*`` and ``Retry-After`` headers.

    ``allowed``: whether the hit passed (for :meth:`RateLimiter.check`) or would pass
    (for :meth:`RateLimiter.peek`). ``limit`` and ``window`` (seconds) describe the
    binding limit, the one with the least left when there are several; ``remaining`` is
    what it has left. ``reset_at`` (seconds since the epoch on the limiter's clock) and
    ``reset_after`` (seconds from now) say when its quota is whole again if nothing else
    hits; ``retry_after`` says in how many seconds a hit of the same cost may pass
    (0.0 when allowed now, ``math.inf`` when the cost is above the limit). For the
    sliding window counter that moment is a bound: the hit passes just after it.
    """

    allowed: bool
    limit: int
    remaining: int
    window: float
    reset_at: float
    reset_after: float
    retry_after: float

    def headers(self) -> dict[str, str]:
        """``RateLimit-Limit``, ``-Remaining`` and ``-Reset`` (whole seconds, rounded up),
        and ``Retry-After`` when refused and passing is possible at all."""
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(math.ceil(self.reset_after)),
        }
        if not self.allowed and math.isfinite(self.retry_after):
            headers["Retry-After"] = str(max(math.ceil(self.retry_after), 1))
        return headers


class ClockStorage(
    Storage, MovingWindowSupport, SlidingWindowCounterSupport, TimestampedSlidingWindow
):
    """``limits``' in-memory storage interfaces, with time read from a :class:`Clock`.

    Semantics follow ``limits.storage.MemoryStorage``, with one boundary made
    consistent: a hit counts while ``now < hit time + window`` in every strategy (limits'
    moving window counts it one instant longer when acquiring than when reporting).
    Not thread-safe: it belongs to one event loop.
    """

    def __init__(self, clock: Clock | None = None) -> None:
        super().__init__(None, wrap_exceptions=False)
        clock = clock if clock is not None else SystemClock()
        self.now: Callable[[], float] = clock.now
        self._counts: dict[str, int] = {}
        self._expires: dict[str, float] = {}
        self._events: dict[str, deque[float]] = {}  # hit times, oldest first
        self._event_windows: dict[str, int] = {}
        self._sweep_at = _MIN_SWEEP

    @property
    def base_exceptions(self) -> tuple[type[Exception], ...]:
        return ()  # nothing here fails but bugs, which must not be wrapped

    # -- counters: fixed window, sliding window counter --------------------------------

    def _count(self, key: str, now: float) -> int:
        expires = self._expires.get(key)
        if expires is None:
            return 0
        if expires <= now:
            del self._expires[key], self._counts[key]
            return 0
        return self._counts[key]

    def _incr(self, key: str, expiry: float, amount: int, now: float) -> int:
        expires = self._expires.get(key)
        if expires is None or expires <= now:  # no window yet, or it has ended
            if expires is None and len(self._expires) >= self._sweep_at:
                self._sweep(now)
            self._expires[key] = now + expiry
            self._counts[key] = amount
            return amount
        count = self._counts[key] = self._counts[key] + amount
        return count

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        return self._incr(key, expiry, amount, self.now())

    def decr(self, key: str, amount: int = 1) -> int:
        count = self._count(key, self.now()) - amount
        if count > 0:
            self._counts[key] = count
            return count
        self._counts.pop(key, None)  # an empty window is no window: the next hit opens one
        self._expires.pop(key, None)
        return 0

    def get(self, key: str) -> int:
        return self._count(key, self.now())

    def get_expiry(self, key: str) -> float:
        now = self.now()
        return self._expires[key] if self._count(key, now) else now

    def hit_fixed_window(
        self, key: str, expiry: int, limit: int, cost: int, now: float
    ) -> tuple[bool, int, float]:
        """A fixed-window hit in one pass: ``limits``' ``incr``, then ``decr`` when over
        the limit, with the same outcome (a refused hit counts nothing, and opens no
        window), for :class:`RateLimiter`'s fast path. Returns whether it passed, the
        count after it, and when the window ends (``now`` when there is none)."""
        expires = self._expires.get(key)
        if expires is not None and now < expires:
            used = self._counts[key]
            if used + cost > limit:
                return False, used, expires
            self._counts[key] = used + cost
            return True, used + cost, expires
        if cost > limit:  # no window, or an ended one that the hit would have replaced
            if expires is not None:
                del self._expires[key], self._counts[key]
            return False, 0, now
        if expires is None and len(self._expires) >= self._sweep_at:
            self._sweep(now)
        expires = self._expires[key] = now + expiry
        self._counts[key] = cost
        return True, cost, expires

    # -- moving window ---------------------------------------------------------------

    def _alive(self, key: str, expiry: int, now: float) -> deque[float] | None:
        events = self._events.get(key)
        if events is not None:
            cutoff = now - expiry
            while events and events[0] <= cutoff:
                events.popleft()
        return events

    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        if amount > limit:
            return False
        now = self.now()
        events = self._alive(key, expiry, now)
        if events is None:
            if len(self._events) >= self._sweep_at:
                self._sweep(now)
            events = self._events[key] = deque()
            self._event_windows[key] = expiry
        elif len(events) + amount > limit:
            return False
        if amount == 1:
            events.append(now)
        else:
            events.extend([now] * amount)
        return True

    def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        now = self.now()
        events = self._alive(key, expiry, now)
        if events:
            return events[0], len(events)
        return now, 0

    # -- sliding window counter ------------------------------------------------------

    def _sliding(self, key: str, expiry: int, now: float) -> tuple[int, float, int, float]:
        return self._weigh(*self.sliding_window_keys(key, expiry, now), expiry, now)

    def _weigh(
        self, previous_key: str, current_key: str, expiry: int, now: float
    ) -> tuple[int, float, int, float]:
        """limits' figures: previous count, its time left, current count, its time left."""
        previous = self._count(previous_key, now)
        current = self._count(current_key, now)
        previous_ttl = (1 - (((now - expiry) / expiry) % 1)) * expiry if previous else 0.0
        current_ttl = (1 - ((now / expiry) % 1)) * expiry + expiry
        return previous, previous_ttl, current, current_ttl

    def acquire_sliding_window_entry(
        self, key: str, limit: int, expiry: int, amount: int = 1
    ) -> bool:
        if amount > limit:
            return False
        now = self.now()
        previous_key, current_key = self.sliding_window_keys(key, expiry, now)
        previous, previous_ttl, current, _ = self._weigh(previous_key, current_key, expiry, now)
        if math.floor(previous * previous_ttl / expiry + current) + amount > limit:
            return False
        self._incr(current_key, 2 * expiry, amount, now)
        return True

    def get_sliding_window(self, key: str, expiry: int) -> tuple[int, float, int, float]:
        return self._sliding(key, expiry, self.now())

    def clear_sliding_window(self, key: str, expiry: int) -> None:
        for k in self.sliding_window_keys(key, expiry, self.now()):
            self.clear(k)

    # -- housekeeping ----------------------------------------------------------------

    def _sweep(self, now: float) -> None:
        """Drop every ended window; runs when the keys have doubled since the last."""
        for key in [k for k, expires in self._expires.items() if expires <= now]:
            del self._expires[key], self._counts[key]
        windows = self._event_windows
        for key in [k for k, ev in self._events.items() if not ev or ev[-1] <= now - windows[k]]:
            del self._events[key], windows[key]
        self._sweep_at = max(_MIN_SWEEP, 2 * max(len(self._expires), len(self._events)))

    def __len__(self) -> int:
        """Keys held (counters and moving windows), ended ones not swept yet included."""
        return len(self._expires) + len(self._events)

    def clear(self, key: str) -> None:
        self._counts.pop(key, None)
        self._expires.pop(key, None)
        self._events.pop(key, None)
        self._event_windows.pop(key, None)

    def reset(self) -> int:
        held = len(self)
        self._counts.clear()
        self._expires.clear()
        self._events.clear()
        self._event_windows.clear()
        return held

    def check(self) -> bool:
        return True


def _parse(limit: str | RateLimitItem) -> list[RateLimitItem]:
    if isinstance(limit, RateLimitItem):
        return [limit]
    try:
        return parse_many(limit)
    except ValueError as exc:
        raise ValueError(
            f"invalid rate limit {limit!r}: write it like '10/second', '100 per minute' "
            f"or '5/10 seconds', several joined by ';' ({exc})"
        ) from None


class RateLimiter:
    """Count hits per key against one or more limits, and say when a key may pass again.

    ``limit`` is a ``limits`` string such as ``"10/second"``, ``"100 per minute"``,
    ``"5/10 seconds"``, or several joined by ``";"`` (``"10/second; 500/hour"``): a hit
    passes only if every one of them allows it, and is then counted by all. ``strategy``
    is one of ``limits``' (default ``"fixed-window"``, the cheapest):

    - ``"fixed-window"``: counts reset at the end of each window that starts with the
      key's first hit; up to twice the limit can pass around a window's end.
    - ``"moving-window"``: exact over any window-long span; keeps one timestamp per hit,
      so memory grows with the limit.
    - ``"sliding-window-counter"``: the previous window's count, weighted by how much of
      it still overlaps, plus the current one; exact enough, two counters per key.

    Time comes from ``clock`` (the system clock by default). Keys are any strings; a
    limiter keeps the keys it has seen in memory until their windows end.
    """

    __slots__ = (
        "_fixed",
        "_hit",
        "_item",
        "_items",
        "_keys",
        "_strategy",
        "_test",
        "clock",
        "storage",
        "strategy",
    )

    def __init__(
        self,
        limit: str | RateLimitItem,
        *,
        strategy: Strategy = "fixed-window",
        clock: Clock | None = None,
    ) -> None:
        if strategy not in _STRATEGIES:
            raise ValueError(
                f"unknown rate limit strategy {strategy!r}; use one of {get_args(Strategy)}"
            )
        self._items = _parse(limit)
        self._item = self._items[0] if len(self._items) == 1 else None
        self.clock = clock if clock is not None else SystemClock()
        self.strategy = strategy
        self.storage = ClockStorage(self.clock)
        self._strategy = _STRATEGIES[strategy](self.storage)
        self._hit = self._strategy.hit
        self._test = self._strategy.test
        self._keys: dict[str, str] = {}
        # the common case, one limit on a fixed window, hits in one pass over the storage
        # (see ClockStorage.hit_fixed_window): (amount, window in seconds)
        self._fixed: tuple[int, int] | None = None
        if self._item is not None and strategy == "fixed-window":
            self._fixed = (self._item.amount, self._item.get_expiry())

    @property
    def limits(self) -> list[RateLimitItem]:
        """The parsed limits, as ``limits`` items."""
        return list(self._items)

    # -- the hot path ----------------------------------------------------------------

    def hit(self, key: str, *, cost: int = 1) -> bool:
        """Count a hit of ``cost`` for ``key`` if every limit allows it; returns whether
        it did. A refused hit is not counted."""
        if cost < 1:
            raise ValueError(f"cost must be at least 1, not {cost!r}")
        fixed = self._fixed
        if fixed is not None:
            storage = self.storage
            amount, expiry = fixed
            return storage.hit_fixed_window(self._key(key), expiry, amount, cost, storage.now())[0]
        item = self._item
        if item is not None:
            if self._hit(item, key, cost=cost):
                return True
            if self.strategy == "fixed-window":  # limits counts refused hits: give them back
                self.storage.decr(item.key_for(key), cost)
            return False
        test, hit = self._test, self._hit
        if all(test(i, key, cost=cost) for i in self._items):
            for i in self._items:
                hit(i, key, cost=cost)
            return True
        return False

    def test(self, key: str, *, cost: int = 1) -> bool:
        """Whether a hit of ``cost`` for ``key`` would pass now; counts nothing."""
        if cost < 1:
            raise ValueError(f"cost must be at least 1, not {cost!r}")
        item, test = self._item, self._test
        if item is not None:
            return test(item, key, cost=cost)
        return all(test(i, key, cost=cost) for i in self._items)

    # -- figures ---------------------------------------------------------------------

    def check(self, key: str, *, cost: int = 1) -> RateLimitResult:
        """Hit, and report the figures after the hit (for response headers)."""
        fixed = self._fixed
        if fixed is not None and cost >= 1:
            # one limit on a fixed window (an HTTP server's per-request call): one clock
            # reading, one storage key, one pass; the figures are _figures' own
            storage = self.storage
            amount, expiry = fixed
            now = storage.now()
            allowed, used, reset_at = storage.hit_fixed_window(
                self._key(key), expiry, amount, cost, now
            )
            if allowed:
                retry = 0.0
            elif cost <= amount:
                retry = reset_at - now
            else:
                retry = math.inf
            return RateLimitResult(
                allowed=allowed,
                limit=amount,
                remaining=max(amount - used, 0),
                window=float(expiry),
                reset_at=reset_at,
                reset_after=max(reset_at - now, 0.0),
                retry_after=retry,
            )
        allowed = self.hit(key, cost=cost)
        return self._result(key, cost, allowed)

    def peek(self, key: str, *, cost: int = 1) -> RateLimitResult:
        """Report the figures without counting a hit; ``allowed`` says whether a hit of
        ``cost`` would pass now."""
        return self._result(key, cost, self.test(key, cost=cost))

    def retry_after(self, key: str, *, cost: int = 1) -> float:
        """Seconds until a hit of ``cost`` for ``key`` may pass if nothing else hits:
        0.0 if it may pass now, ``math.inf`` if ``cost`` is above a limit."""
        if cost < 1:
            raise ValueError(f"cost must be at least 1, not {cost!r}")
        now = self.clock.now()
        return max(self._figures(item, key, cost, now)[2] for item in self._items)

    def _key(self, key: str) -> str:
        """The one limit's storage key for ``key`` (``limits``' ``key_for``), remembered:
        building it cost as much as the count itself, and clients come back."""
        k = self._keys.get(key)
        if k is None:
            keys, item = self._keys, self._item
            assert item is not None
            if len(keys) >= _KEYS_HELD:
                keys.clear()
            k = keys[key] = item.key_for(key)
        return k

    def _result(self, key: str, cost: int, allowed: bool) -> RateLimitResult:
        now = self.clock.now()
        binding: tuple[int, float, float] | None = None
        binding_item = self._items[0]
        retry = 0.0
        for item in self._items:
            figures = self._figures(item, key, cost, now)
            retry = max(retry, figures[2])
            if binding is None or (figures[0], -figures[1]) < (binding[0], -binding[1]):
                binding, binding_item = figures, item
        assert binding is not None
        remaining, reset_at, _ = binding
        return RateLimitResult(
            allowed=allowed,
            limit=binding_item.amount,
            remaining=remaining,
            window=float(binding_item.get_expiry()),
            reset_at=reset_at,
            reset_after=max(reset_at - now, 0.0),
            retry_after=0.0 if allowed else retry,
        )

    def _figures(
        self, item: RateLimitItem, key: str, cost: int, now: float
    ) -> tuple[int, float, float]:
        """(remaining, when the quota is whole again, seconds until ``cost`` passes)."""
        storage = self.storage
        amount, expiry = item.amount, item.get_expiry()
        k = self._key(key) if item is self._item else item.key_for(key)
        if self.strategy == "fixed-window":
            used = storage._count(k, now)
            reset_at = storage._expires[k] if used else now
            if used + cost <= amount:
                return amount - used, reset_at, 0.0
            wait = reset_at - now if cost <= amount else math.inf
            return max(amount - used, 0), reset_at, wait

        if self.strategy == "moving-window":
            events = storage._alive(k, expiry, now)
            if not events:
                return amount, now, 0.0 if cost <= amount else math.inf
            used = len(events)
            reset_at = events[-1] + expiry
            if used + cost <= amount:
                return amount - used, reset_at, 0.0
            if cost > amount:
                return amount - used, reset_at, math.inf
            # the oldest hits must leave until ``cost`` fits: the last of them decides
            return amount - used, reset_at, events[used + cost - amount - 1] + expiry - now

        previous, previous_ttl, current, _ = storage._sliding(k, expiry, now)
        weighted = previous * previous_ttl / expiry + current
        start = float(int(now / expiry) * expiry)  # this window's start, as limits' keys say
        reset_at = start + 2 * expiry if current else start + expiry if previous else now
        room = amount - cost + 1  # passes while the weighted count is below this
        if weighted < room:
            wait = 0.0
        elif room <= 0:
            wait = math.inf
        elif current < room:  # the previous window's weight fades out within this one
            wait = start + expiry - expiry * (room - current) / previous - now
        else:  # only once this window's hits fade as the previous one, in the next
            wait = start + 2 * expiry - expiry * room / current - now
        return max(amount - math.floor(weighted), 0), reset_at, max(wait, 0.0)

    # -- waiting ---------------------------------------------------------------------

    async def acquire(self, key: str, *, cost: int = 1, timeout: float = 60.0) -> None:
        """Wait on the limiter's clock until a hit of ``cost`` for ``key`` passes, and
        count it; for throttling work (a task's calls to an API) rather than refusing it.

        Raises :class:`RateLimitExceeded` at once when the wait would exceed ``timeout``
        seconds (default 60), and when ``cost`` is above a limit.
        """
        await anyio.lowlevel.checkpoint()  # a cancelled caller leaves before it counts
        deadline = self.clock.now() + timeout
        while not self.hit(key, cost=cost):
            now = self.clock.now()
            wait = self.retry_after(key, cost=cost)
            if now + wait > deadline:
                raise RateLimitExceeded(key, wait)
            await self.clock.sleep(max(wait, _NUDGE))

    def clear(self, key: str) -> None:
        """Forget the hits of ``key`` under every limit."""
        for item in self._items:
            self._strategy.clear(item, key)

    def reset(self) -> None:
        """Forget every key's hits."""
        self.storage.reset()

    def __repr__(self) -> str:
        spelled = "; ".join(str(item) for item in self._items)
        return f"RateLimiter({spelled!r}, strategy={self.strategy!r})"
