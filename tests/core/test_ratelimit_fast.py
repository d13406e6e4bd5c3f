"""The one-pass path of a limiter with one fixed-window limit (what an HTTP server calls on
every request) gives the same answers, figures and headers as the general path through
``limits``' strategy, on the fake clock: across window ends, for several keys, for costs
above what is left and above the limit."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperqueue._ratelimit import RateLimiter
from hyperqueue.testing import FakeClock

pytestmark = pytest.mark.anyio

KEYS = ["client-a", "client-b", "client-c"]


def pair(limit: str, clock: FakeClock) -> tuple[RateLimiter, RateLimiter]:
    """A limiter on the one-pass path, and one made to take the general path (limits'
    ``FixedWindowRateLimiter.hit``, a ``decr`` when refused, then the figures read
    back), both on ``clock``."""
    fast = RateLimiter(limit, strategy="fixed-window", clock=clock)
    general = RateLimiter(limit, strategy="fixed-window", clock=clock)
    assert fast._fixed is not None, "one fixed-window limit takes the one-pass path"
    general._fixed = None
    return fast, general


def same_everywhere(fast: RateLimiter, general: RateLimiter) -> None:
    """Every key's figures agree: both storages hold the same windows and counts."""
    for key in KEYS:
        assert fast.peek(key) == general.peek(key)
        assert fast.retry_after(key, cost=2) == general.retry_after(key, cost=2)


async def test_window_ends_for_several_keys_as_on_the_general_path(clock: FakeClock) -> None:
    fast, general = pair("3/10 seconds", clock)
    start = clock.now()
    answers: list[tuple[str, float, bool, dict[str, str]]] = []

    async def step(key: str, advance: float = 0.0, cost: int = 1) -> None:
        await clock.advance(advance)
        result = fast.check(key, cost=cost)
        assert result == general.check(key, cost=cost)
        answers.append((key, clock.now() - start, result.allowed, result.headers()))
        same_everywhere(fast, general)

    for key, advance in [("client-a", 0), ("client-b", 4), ("client-c", 3)]:
        await step(key, advance)
        await step(key, cost=2)
        await step(key)  # refused: the window is full
    await step("client-a", 3 - 0.001)  # 9.999 s: client-a's window still full
    await step("client-a", 0.001)  # 10 s: client-a's window ended, a new one opens
    await step("client-b")  # client-b's window (from 4 s) goes on
    await step("client-b", 4)  # 14 s: it ended
    await step("client-c", 3, cost=4)  # above the limit: refused, opens nothing
    await step("client-c")

    assert answers[2] == (
        "client-a",
        0.0,
        False,
        {
            "RateLimit-Limit": "3",
            "RateLimit-Remaining": "0",
            "RateLimit-Reset": "10",
            "Retry-After": "10",
        },
    )
    assert [(key, at, allowed) for key, at, allowed, _ in answers[9:]] == [
        ("client-a", pytest.approx(9.999), False),
        ("client-a", 10.0, True),
        ("client-b", 10.0, False),
        ("client-b", 14.0, True),
        ("client-c", 17.0, False),
        ("client-c", 17.0, True),
    ]
    above = fast.peek("client-c", cost=4)
    assert above.retry_after == math.inf and "Retry-After" not in above.headers()


async def test_a_cost_above_the_limit_after_a_window_ended_leaves_no_window(
    clock: FakeClock,
) -> None:
    fast, general = pair("2/second", clock)
    for limiter in (fast, general):
        assert limiter.check("client-a").allowed
    await clock.advance(1)
    refused = fast.check("client-a", cost=3)
    assert refused == general.check("client-a", cost=3)
    assert (refused.allowed, refused.remaining, refused.retry_after) == (False, 2, math.inf)
    assert refused.reset_at == clock.now(), "no window: the quota is whole now"
    same_everywhere(fast, general)


async def test_many_keys_beyond_what_a_limiter_remembers(clock: FakeClock) -> None:
    fast, general = pair("1/minute", clock)
    for i in range(10_000):
        key = f"client-{i % 5_000}"
        assert fast.check(key) == general.check(key)
    assert not fast.test("client-0") and fast.test("client-5000")


_steps = st.lists(
    st.tuples(
        st.sampled_from([0.0, 0.0, 0.001, 0.5, 2.5, 9.999, 10.0]),
        st.sampled_from(KEYS),
        st.integers(1, 5),
        st.sampled_from(["check", "check", "hit", "test", "peek", "clear"]),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(steps=_steps, limit=st.integers(1, 4))
async def test_property_one_pass_path_matches_the_general_path(
    steps: list[tuple[float, str, int, str]], limit: int
) -> None:
    clock = FakeClock()
    fast, general = pair(f"{limit}/10 seconds", clock)
    for advance, key, cost, call in steps:
        await clock.advance(advance)
        if call == "clear":
            fast.clear(key)
            general.clear(key)
        elif call in ("check", "peek"):
            result, expected = (
                getattr(fast, call)(key, cost=cost),
                getattr(general, call)(key, cost=cost),
            )
            assert result == expected and result.headers() == expected.headers()
        else:
            assert getattr(fast, call)(key, cost=cost) == getattr(general, call)(key, cost=cost)
        same_everywhere(fast, general)
