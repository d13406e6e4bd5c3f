"""Rate limits on ``limits``' strategies, with time from the fake clock: each strategy at
its window edges, keys kept apart, the figures HTTP headers need, waiting, bad input."""

from __future__ import annotations

import math
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import limits
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperqueue._ratelimit import RateLimiter, RateLimitExceeded, RateLimitResult, Strategy
from hyperqueue.testing import FakeClock

pytestmark = pytest.mark.anyio

STRATEGIES: list[Strategy] = ["fixed-window", "moving-window", "sliding-window-counter"]


@asynccontextmanager
async def guard(seconds: float = 10.0) -> AsyncIterator[None]:
    """A real-time safety net so a broken test fails instead of hanging."""
    with anyio.fail_after(seconds):
        yield


def hits(limiter: RateLimiter, key: str, n: int) -> list[bool]:
    return [limiter.hit(key) for _ in range(n)]


# -- fixed window -----------------------------------------------------------------------


async def test_fixed_window_starts_at_the_first_hit_and_resets_at_its_end(
    clock: FakeClock,
) -> None:
    limiter = RateLimiter("3/10 seconds", strategy="fixed-window", clock=clock)
    await clock.advance(2.5)  # the window need not line up with the clock's seconds
    assert hits(limiter, "k", 4) == [True, True, True, False]
    await clock.advance(9.999)
    assert limiter.hit("k") is False
    await clock.advance(0.001)  # exactly the first hit + 10 s: a new window
    assert hits(limiter, "k", 4) == [True, True, True, False]


async def test_fixed_window_lets_a_burst_through_across_its_edge(clock: FakeClock) -> None:
    """The documented weakness of fixed windows: up to twice the limit in a short span."""
    limiter = RateLimiter("3/10 seconds", strategy="fixed-window", clock=clock)
    assert limiter.hit("k")
    await clock.advance(9.9)
    assert hits(limiter, "k", 3) == [True, True, False]
    await clock.advance(0.1)
    assert hits(limiter, "k", 4) == [True, True, True, False], "5 hits passed within 0.1 s"


# -- moving window ----------------------------------------------------------------------


async def test_moving_window_frees_each_slot_one_window_after_its_hit(clock: FakeClock) -> None:
    limiter = RateLimiter("3/10 seconds", strategy="moving-window", clock=clock)
    for _ in range(3):
        assert limiter.hit("k")
        await clock.advance(4)
    # hits at 0, 4, 8; now 12: the first has left
    assert limiter.hit("k") is True
    assert limiter.hit("k") is False
    await clock.advance(1.999)  # 13.999: the hit at 4 still counts
    assert limiter.hit("k") is False
    assert limiter.retry_after("k") == pytest.approx(0.001, abs=1e-6)
    await clock.advance(0.001)  # 14: it left
    assert limiter.hit("k") is True


async def test_moving_window_never_lets_more_than_the_limit_through_in_any_window(
    clock: FakeClock,
) -> None:
    limiter = RateLimiter("3/10 seconds", strategy="moving-window", clock=clock)
    passed: list[float] = []
    for _ in range(200):  # one attempt every 0.25 s for 50 s
        if limiter.hit("k"):
            passed.append(clock.now())
        await clock.advance(0.25)
    assert len(passed) == 15
    assert all(later - earlier >= 10 for earlier, later in zip(passed, passed[3:], strict=False))


async def test_moving_window_retry_after_counts_the_hits_a_cost_needs(clock: FakeClock) -> None:
    limiter = RateLimiter("4/10 seconds", strategy="moving-window", clock=clock)
    for _ in range(4):
        limiter.hit("k")
        await clock.advance(1)
    # hits at 0, 1, 2, 3; now 4. Cost 3 needs the three oldest gone: at 12.
    assert limiter.retry_after("k", cost=3) == pytest.approx(8, abs=1e-6)
    assert limiter.retry_after("k", cost=1) == pytest.approx(6, abs=1e-6)
    assert limiter.retry_after("k", cost=5) == math.inf
    await clock.advance(8)
    assert limiter.hit("k", cost=3) is True
    assert limiter.hit("k", cost=5) is False


# -- sliding window counter -------------------------------------------------------------


async def test_sliding_window_counter_weighs_the_previous_window(clock: FakeClock) -> None:
    # FakeClock starts on a multiple of 10 s, so windows run [0, 10), [10, 20), ...
    assert clock.now() % 10 == 0
    limiter = RateLimiter("10/10 seconds", strategy="sliding-window-counter", clock=clock)
    assert all(hits(limiter, "k", 10)) and limiter.hit("k") is False
    await clock.advance(10)  # new window, but the last one still weighs 10 * 10/10
    assert limiter.hit("k") is False
    await clock.advance(5)  # halfway: it weighs 10 * 5/10 = 5, so 5 more fit
    assert hits(limiter, "k", 6) == [True] * 5 + [False]
    await clock.advance(5)  # next window: the previous (5 hits) weighs 5 * 10/10
    assert hits(limiter, "k", 6) == [True] * 5 + [False]


async def test_sliding_window_counter_retry_after_is_when_the_weight_fades(
    clock: FakeClock,
) -> None:
    limiter = RateLimiter("10/10 seconds", strategy="sliding-window-counter", clock=clock)
    hits(limiter, "k", 10)
    await clock.advance(2)
    # all 10 in this window: only in the next one, as their weight fades below 10
    assert limiter.retry_after("k") == pytest.approx(8, abs=1e-6)
    await clock.advance(8)
    assert limiter.hit("k") is False, "at the bound itself the weight is still 10"
    await clock.advance(0.01)
    assert limiter.hit("k") is True
    # now previous = 10 weighing 9.99 - ~, current = 1: cost 4 needs the weight below 7
    wait = limiter.retry_after("k", cost=4)
    assert wait == pytest.approx(3.99, abs=1e-6)
    await clock.advance(wait + 0.001)
    assert limiter.hit("k", cost=4) is True
    assert limiter.retry_after("k", cost=11) == math.inf
    assert limiter.hit("k", cost=11) is False


# -- every strategy ---------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_keys_are_counted_apart(clock: FakeClock, strategy: Strategy) -> None:
    limiter = RateLimiter("2/minute", strategy=strategy, clock=clock)
    assert hits(limiter, "client-a", 3) == [True, True, False]
    assert hits(limiter, "client-b", 3) == [True, True, False]
    assert limiter.test("client-c") and not limiter.test("client-a")
    limiter.clear("client-a")
    assert limiter.hit("client-a") is True and limiter.hit("client-b") is False
    limiter.reset()
    assert hits(limiter, "client-b", 2) == [True, True]


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_test_counts_nothing_and_refused_hits_are_not_counted(
    clock: FakeClock, strategy: Strategy
) -> None:
    limiter = RateLimiter("3/10 seconds", strategy=strategy, clock=clock)
    assert all(limiter.test("k") for _ in range(10))
    assert limiter.hit("k", cost=2) and limiter.test("k") and not limiter.test("k", cost=2)
    assert limiter.hit("k", cost=2) is False
    assert limiter.hit("k") is True, "the refused hit of 2 took nothing"


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_check_reports_what_rate_limit_headers_need(
    clock: FakeClock, strategy: Strategy
) -> None:
    limiter = RateLimiter("3/10 seconds", strategy=strategy, clock=clock)
    start = clock.now()
    fresh = limiter.peek("k")
    assert fresh == RateLimitResult(
        allowed=True,
        limit=3,
        remaining=3,
        window=10.0,
        reset_at=start,
        reset_after=0.0,
        retry_after=0.0,
    )
    first = limiter.check("k")
    assert (first.allowed, first.remaining, first.limit) == (True, 2, 3)
    await clock.advance(1)
    limiter.check("k")
    third = limiter.check("k")
    assert (third.allowed, third.remaining, third.retry_after) == (True, 0, 0.0)
    refused = limiter.check("k")
    assert (refused.allowed, refused.remaining) == (False, 0)
    assert 0 < refused.retry_after <= 10
    assert refused.reset_after == pytest.approx(refused.reset_at - clock.now(), abs=1e-6)
    headers = refused.headers()
    assert headers["RateLimit-Limit"] == "3" and headers["RateLimit-Remaining"] == "0"
    assert headers["Retry-After"] == str(math.ceil(refused.retry_after))
    assert headers["RateLimit-Reset"] == str(math.ceil(refused.reset_after))
    assert "Retry-After" not in third.headers()
    # the quota is whole again at reset_at, whatever the strategy
    await clock.advance_to(refused.reset_at)
    assert limiter.peek("k").remaining == 3


async def test_reset_figures_per_strategy() -> None:
    """When the quota is whole again: the window's end for fixed, the newest hit plus a
    window for moving, two windows on for the sliding counter's current hits."""
    figures = {}
    for strategy in STRATEGIES:
        clock = FakeClock()
        start = clock.now()
        limiter = RateLimiter("3/10 seconds", strategy=strategy, clock=clock)
        limiter.hit("k")
        await clock.advance(4)
        limiter.hit("k")
        figures[strategy] = limiter.peek("k").reset_at - start
    assert figures == {
        "fixed-window": 10,
        "moving-window": 14,
        "sliding-window-counter": 20,
    }


async def test_several_limits_must_all_allow_a_hit(clock: FakeClock) -> None:
    limiter = RateLimiter("2/second; 3 per minute", clock=clock)
    assert hits(limiter, "k", 3) == [True, True, False]
    result = limiter.peek("k")
    assert (result.limit, result.window, result.remaining) == (2, 1.0, 0)
    await clock.advance(1)
    assert hits(limiter, "k", 2) == [True, False], "the minute limit binds now"
    result = limiter.check("k")
    assert (result.allowed, result.limit, result.window, result.remaining) == (
        False,
        3,
        60.0,
        0,
    )
    assert result.retry_after == pytest.approx(59, abs=1e-6)
    assert limiter.retry_after("k") == pytest.approx(59, abs=1e-6)
    assert len(limiter.limits) == 2


async def test_limits_items_are_accepted(clock: FakeClock) -> None:
    limiter = RateLimiter(limits.RateLimitItemPerSecond(2), clock=clock)
    assert hits(limiter, "k", 3) == [True, True, False]
    assert "2 per 1 second" in repr(limiter)


# -- waiting ----------------------------------------------------------------------------


async def test_acquire_waits_on_the_clock_until_the_key_may_pass(clock: FakeClock) -> None:
    limiter = RateLimiter("2/10 seconds", strategy="moving-window", clock=clock)
    passed: list[float] = []

    async def worker() -> None:
        for _ in range(5):
            await limiter.acquire("task", timeout=60)
            passed.append(clock.now())

    start = clock.now()
    async with guard(), anyio.create_task_group() as tg:
        tg.start_soon(worker)
        await clock.advance(30)
    assert [t - start for t in passed] == [0, 0, 10, 10, 20]


async def test_acquire_under_the_sliding_counter_passes_just_after_the_bound(
    clock: FakeClock,
) -> None:
    limiter = RateLimiter("1/10 seconds", strategy="sliding-window-counter", clock=clock)
    start = clock.now()
    limiter.hit("k")
    passed: list[float] = []

    async def acquire() -> None:
        await limiter.acquire("k")
        passed.append(clock.now() - start)

    async with guard(), anyio.create_task_group() as tg:
        tg.start_soon(acquire)
        await clock.advance(30)
    # the first hit weighs 1 until the bound at 10 s, then less: the wait passes just after
    assert passed and 10 < passed[0] < 10.01


async def test_acquire_gives_up_at_once_when_the_wait_exceeds_its_timeout(
    clock: FakeClock,
) -> None:
    limiter = RateLimiter("1/minute", clock=clock)
    limiter.hit("k")
    start = clock.now()
    with pytest.raises(RateLimitExceeded) as caught:
        await limiter.acquire("k", timeout=30)
    assert caught.value.retry_after == pytest.approx(60, abs=1e-6)
    assert caught.value.key == "k" and "'k'" in str(caught.value)
    assert clock.now() == start
    with pytest.raises(RateLimitExceeded) as caught:
        await limiter.acquire("other", cost=2)
    assert caught.value.retry_after == math.inf


async def test_acquire_can_be_cancelled_while_it_waits(clock: FakeClock) -> None:
    limiter = RateLimiter("1/minute", clock=clock)
    limiter.hit("k")
    outcome: list[str] = []

    async def acquire() -> None:
        with clock.cancel_after(5):
            await limiter.acquire("k")
            outcome.append("passed")
        outcome.append("cancelled" if not outcome else "")

    async with guard(), anyio.create_task_group() as tg:
        tg.start_soon(acquire)
        await clock.advance(10)
    assert outcome == ["cancelled"]
    await clock.advance(50)
    assert limiter.peek("k").remaining == 1, "the cancelled acquire counted nothing"


# -- bad input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spelled", ["", "ten per second", "10/fortnight", "10 per", "10/second;; 5/minute", "-1/s"]
)
async def test_an_invalid_limit_string_is_a_value_error_naming_it(spelled: str) -> None:
    with pytest.raises(ValueError, match="invalid rate limit") as caught:
        RateLimiter(spelled)
    assert repr(spelled) in str(caught.value)


async def test_unknown_strategy_and_bad_cost_are_value_errors(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="token-bucket"):
        RateLimiter("1/second", strategy="token-bucket")  # type: ignore[arg-type]
    limiter = RateLimiter("1/second", clock=clock)
    for call in (limiter.hit, limiter.test, limiter.check, limiter.peek, limiter.retry_after):
        with pytest.raises(ValueError, match="cost"):
            call("k", cost=0)


# -- the storage under limits -----------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_no_thread_is_started_and_ended_windows_are_swept(
    clock: FakeClock, strategy: Strategy
) -> None:
    threads = threading.active_count()
    limiter = RateLimiter("5/second", strategy=strategy, clock=clock)
    for i in range(3000):
        limiter.hit(f"client-{i}")
    assert threading.active_count() == threads, "limits' MemoryStorage would start a timer"
    held = len(limiter.storage)
    assert held >= 3000
    await clock.advance(3)
    for i in range(3000):
        limiter.hit(f"new-{i}")
    assert len(limiter.storage) < held + 3000, "the ended windows of the old keys were swept"
    assert limiter.storage.check()


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_limits_own_window_stats_read_the_same_clock(
    clock: FakeClock, strategy: Strategy
) -> None:
    """The storage is a real ``limits`` storage: limits' own reporting works on it."""
    limiter = RateLimiter("3/10 seconds", strategy=strategy, clock=clock)
    item = limiter.limits[0]
    limiter.hit("k")
    await clock.advance(4)
    limiter.hit("k")
    stats = limits.strategies.STRATEGIES[strategy](limiter.storage).get_window_stats(item, "k")
    assert stats.remaining == limiter.peek("k").remaining == 1
    if strategy == "fixed-window":
        assert stats.reset_time == clock.now() + 6
    elif strategy == "moving-window":
        assert stats.reset_time == clock.now() + 6, "limits: when the oldest hit leaves"
    assert limiter.storage.get_expiry(item.key_for("nobody")) == clock.now()


# -- properties: exact agreement with a model of each exact strategy ---------------------

_steps = st.lists(
    st.tuples(st.sampled_from([0.0, 0.5, 1.0, 2.5, 9.5, 10.0]), st.integers(1, 4)),
    max_size=80,
)


@settings(max_examples=100, deadline=None)
@given(steps=_steps, limit=st.integers(1, 5))
async def test_property_moving_window_matches_its_definition(
    steps: list[tuple[float, int]], limit: int
) -> None:
    """A hit of ``cost`` passes exactly when the hits counted in the last 10 s plus
    ``cost`` fit in the limit."""
    clock = FakeClock()
    limiter = RateLimiter(f"{limit}/10 seconds", strategy="moving-window", clock=clock)
    counted: list[float] = []
    for dt, cost in steps:
        await clock.advance(dt)
        now = clock.now()
        alive = [t for t in counted if t > now - 10]
        expected = len(alive) + cost <= limit
        assert limiter.hit("k", cost=cost) is expected
        if expected:
            counted.extend([now] * cost)


@settings(max_examples=100, deadline=None)
@given(steps=_steps, limit=st.integers(1, 5))
async def test_property_fixed_window_matches_its_definition(
    steps: list[tuple[float, int]], limit: int
) -> None:
    """A window opens with the first hit counted after the last one ended and lasts
    10 s; a hit passes exactly when it fits in what the window has left."""
    clock = FakeClock()
    limiter = RateLimiter(f"{limit}/10 seconds", strategy="fixed-window", clock=clock)
    start: float | None = None
    used = 0
    for dt, cost in steps:
        await clock.advance(dt)
        now = clock.now()
        if start is not None and start + 10 <= now:
            start, used = None, 0
        expected = used + cost <= limit
        assert limiter.hit("k", cost=cost) is expected
        if expected:
            if start is None:
                start = now
            used += cost
