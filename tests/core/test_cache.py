"""The cache: TTL on the injected clock, one LRU bound over namespaces, prefix, tag and
event-driven invalidation, single-flight loads, figures, and the ``cached`` decorator."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperqueue._cache import Cache, CacheStats, cached
from hyperqueue._events import Event, EventBus
from hyperqueue.testing import FakeClock

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def guard(seconds: float = 10.0) -> AsyncIterator[None]:
    """A real-time safety net so a broken test fails instead of hanging."""
    with anyio.fail_after(seconds):
        yield


class UserUpdated(Event, frozen=True, kw_only=True, tag="test.user_updated"):
    user_id: int


class OrgRenamed(Event, frozen=True, kw_only=True, tag="test.org_renamed"):
    org: str


# -- get, set, delete, TTL ----------------------------------------------------------------


async def test_set_then_get_returns_the_value_and_default_for_absent_keys(
    clock: FakeClock,
) -> None:
    cache = Cache(clock=clock)
    cache.set("a", 1)
    cache.set(("tuple", 2), None)
    assert cache.get("a") == 1
    assert cache.get(("tuple", 2), "absent") is None, "a stored None is a hit, not the default"
    assert cache.get("b") is None
    assert cache.get("b", "absent") == "absent"
    assert "a" in cache and "b" not in cache
    cache.set("a", 2)
    assert cache.get("a") == 2 and len(cache) == 2


async def test_delete_removes_a_key_and_reports_whether_it_held_a_value(clock: FakeClock) -> None:
    cache = Cache(clock=clock, ttl=10)
    cache.set("a", 1)
    assert cache.delete("a") is True
    assert cache.get("a") is None
    assert cache.delete("a") is False
    cache.set("b", 1)
    await clock.advance(10)
    assert cache.delete("b") is False, "an expired value is not reported as deleted"
    assert len(cache) == 0


async def test_values_expire_exactly_at_their_ttl(clock: FakeClock) -> None:
    cache = Cache(clock=clock, ttl=30)
    cache.set("default", 1)
    cache.set("short", 2, ttl=5)
    cache.set("forever", 3, ttl=math.inf)
    await clock.advance(4.999)
    assert cache.get("short") == 2
    await clock.advance(0.001)
    assert cache.get("short") is None
    assert "short" not in cache
    await clock.advance(24.999)
    assert cache.get("default") == 1
    await clock.advance(0.001)
    assert cache.get("default") is None
    await clock.advance(1e9)
    assert cache.get("forever") == 3
    stats = cache.stats()
    assert stats.expirations == 2 and stats.size == 1


async def test_setting_again_restarts_the_ttl(clock: FakeClock) -> None:
    cache = Cache(clock=clock, ttl=10)
    cache.set("k", 1)
    await clock.advance(8)
    cache.set("k", 2)
    await clock.advance(8)
    assert cache.get("k") == 2


async def test_expire_sweeps_expired_entries_of_every_namespace(clock: FakeClock) -> None:
    cache = Cache(clock=clock, ttl=10)
    users = cache.namespace("users")
    cache.set("a", 1)
    users.set("b", 2)
    users.set("c", 3, ttl=100)
    await clock.advance(10)
    assert len(cache) == 3, "expired entries wait to be touched or swept"
    assert cache.expire() == 2
    assert len(cache) == 1 and users.get("c") == 3
    assert cache.stats().expirations == 2


@pytest.mark.parametrize("ttl", [0, -1, math.nan])
async def test_a_ttl_that_cannot_work_is_refused(clock: FakeClock, ttl: float) -> None:
    with pytest.raises(ValueError, match="ttl"):
        Cache(clock=clock, ttl=ttl)
    cache = Cache(clock=clock)
    with pytest.raises(ValueError, match="ttl"):
        cache.set("k", 1, ttl=ttl)
    with pytest.raises(ValueError, match="ttl"):
        await cache.get_or_set("k", _const(1), ttl=ttl)
    with pytest.raises(ValueError, match="ttl"):
        cached(cache, ttl=ttl)
    assert len(cache) == 0


async def test_bound_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        Cache(max_entries=0)


async def test_system_clock_by_default() -> None:
    cache = Cache(ttl=60)
    cache.set("k", 1)
    assert cache.get("k") == 1


# -- the LRU bound ----------------------------------------------------------------------


async def test_least_recently_used_goes_first(clock: FakeClock) -> None:
    cache = Cache(clock=clock, max_entries=3)
    for key in "abc":
        cache.set(key, key)
    assert cache.get("a") == "a"  # a is now the most recently used: b is the oldest
    cache.set("d", "d")
    assert [k for k in "abcd" if k in cache] == ["a", "c", "d"]
    cache.set("c", "c2")  # a write is a use too: a is now the oldest
    cache.set("e", "e")
    assert [k for k in "abcde" if k in cache] == ["c", "d", "e"]
    assert len(cache) == 3
    assert cache.stats().evictions == 2


async def test_overwriting_a_key_does_not_count_against_the_bound(clock: FakeClock) -> None:
    cache = Cache(clock=clock, max_entries=2)
    cache.set("a", 1)
    cache.set("b", 1)
    for i in range(10):
        cache.set("b", i)
    assert cache.get("a") == 1 and cache.get("b") == 9
    assert cache.stats().evictions == 0


async def test_an_expired_entry_pushed_out_counts_as_expired_not_evicted(clock: FakeClock) -> None:
    cache = Cache(clock=clock, max_entries=2, ttl=10)
    cache.set("old", 1, ttl=1)
    cache.set("b", 2)
    await clock.advance(1)
    cache.set("c", 3)
    stats = cache.stats()
    assert (stats.expirations, stats.evictions, stats.size) == (1, 0, 2)


async def test_namespaces_share_one_bound_and_one_lru_order(clock: FakeClock) -> None:
    cache = Cache(clock=clock, max_entries=4)
    users, pages = cache.namespace("users"), cache.namespace("pages")
    users.set(1, "u1")
    pages.set(1, "p1")
    users.set(2, "u2")
    cache.set(1, "d1")
    users.get(1)  # oldest now: pages 1
    pages.set(2, "p2")
    assert 1 not in pages and len(cache) == 4
    pages.set(3, "p3")  # oldest now: users 2
    assert 2 not in users
    stats = cache.stats()
    assert (len(users), len(pages), stats.namespaces["default"].size) == (1, 2, 1)
    assert stats.evictions == 2 and stats.size == 4 and stats.max_entries == 4
    assert stats.namespaces["pages"].evictions == 1
    assert stats.namespaces["users"].evictions == 1
    assert stats.namespaces["default"].evictions == 0


# -- namespaces -------------------------------------------------------------------------


async def test_namespaces_keep_keys_apart(clock: FakeClock) -> None:
    cache = Cache(clock=clock)
    users, orgs = cache.namespace("users"), cache.namespace("orgs")
    assert cache.namespace("users") is users
    assert cache.namespace("default") is cache
    users.set("1", "alice")
    orgs.set("1", "acme")
    cache.set("1", "root")
    assert (users.get("1"), orgs.get("1"), cache.get("1")) == ("alice", "acme", "root")
    users.delete("1")
    assert users.get("1") is None and orgs.get("1") == "acme" and cache.get("1") == "root"
    orgs.set("user:1", 1, tags=["t"])
    users.set("user:1", 1, tags=["t"])
    assert users.invalidate_prefix("user:") == 1 and "user:1" in orgs
    users.set("user:1", 1, tags=["t"])
    assert users.invalidate_tags("t") == 1 and "user:1" in orgs
    assert users.clear() == 0 and len(orgs) == 2
    assert cache.clear() == 3 and len(cache) == 0 and len(orgs) == 0


@pytest.mark.parametrize("name", ["", 3])
async def test_a_namespace_name_is_a_non_empty_string(name: object) -> None:
    with pytest.raises(ValueError, match="namespace"):
        Cache().namespace(name)  # type: ignore[arg-type]


# -- invalidation -----------------------------------------------------------------------


async def test_prefix_invalidation_drops_matching_string_keys_only(clock: FakeClock) -> None:
    cache = Cache(clock=clock)
    cache.set("user:1", 1)
    cache.set("user:1:posts", 2)
    cache.set("user:2", 3)
    cache.set("users", 4)
    cache.set(("user:1",), 5)
    assert cache.invalidate_prefix("user:1") == 2
    assert [k for k in ("user:1", "user:1:posts", "user:2", "users") if k in cache] == [
        "user:2",
        "users",
    ]
    assert ("user:1",) in cache
    assert cache.stats().invalidations == 2


async def test_tag_invalidation_drops_every_entry_carrying_a_tag(clock: FakeClock) -> None:
    cache = Cache(clock=clock)
    cache.set("profile:1", "p", tags=["user:1"])
    cache.set("feed:1", "f", tags=["user:1", "org:9"])
    cache.set("feed:2", "g", tags=["org:9"])
    cache.set("plain", "x")
    assert cache.invalidate_tags("user:1") == 2
    assert [k in cache for k in ("profile:1", "feed:1", "feed:2", "plain")] == [
        False,
        False,
        True,
        True,
    ]
    assert cache.invalidate_tags("user:1") == 0
    assert cache.invalidate_tags("org:9", "nope") == 1


async def test_a_key_set_again_carries_only_its_new_tags(clock: FakeClock) -> None:
    cache = Cache(clock=clock)
    cache.set("k", 1, tags=["old"])
    cache.set("k", 2, tags=["new"])
    assert cache.invalidate_tags("old") == 0 and cache.get("k") == 2
    assert cache.invalidate_tags("new") == 1
    cache.set("k", 3, tags=["a"])
    cache.set("k", 4)
    assert cache.invalidate_tags("a") == 0 and cache.get("k") == 4


async def test_tags_of_evicted_entries_do_not_touch_the_key_set_later(clock: FakeClock) -> None:
    cache = Cache(clock=clock, max_entries=1, ttl=10)
    cache.set("k", 1, tags=["t"])
    cache.set("other", 2)  # evicts k
    cache.set("k", 3)  # untagged now
    assert cache.invalidate_tags("t") == 0 and cache.get("k") == 3
    cache.set("k", 4, tags=["t"])
    await clock.advance(10)
    assert cache.get("k") is None  # expired and dropped: its tag goes too
    cache.set("k", 5)
    assert cache.invalidate_tags("t") == 0 and cache.get("k") == 5


async def test_events_invalidate_the_keys_tags_and_prefixes_they_name(clock: FakeClock) -> None:
    bus = EventBus()
    cache = Cache(clock=clock)
    pages = cache.namespace("pages")
    cache.invalidate_on(bus, UserUpdated, keys=lambda e: [f"user:{e.user_id}"])
    pages.invalidate_on(bus, UserUpdated, tags=lambda e: [f"user:{e.user_id}"])
    cache.invalidate_on(bus, OrgRenamed, prefixes=lambda e: [f"org:{e.org}:"])
    cache.set("user:1", "alice")
    cache.set("user:2", "bob")
    pages.set("/home", "<html>", tags=["user:1"])
    cache.set("org:acme:name", "Acme")
    cache.set("org:acme:logo", "png")
    cache.set("org:other:name", "Other")

    bus.publish(UserUpdated(at=clock.now(), user_id=1))
    assert "user:1" not in cache and "/home" not in pages
    assert cache.get("user:2") == "bob"
    assert cache.get("org:acme:name") == "Acme", "an event of another type invalidates nothing"

    bus.publish(OrgRenamed(at=clock.now(), org="acme"))
    assert [k in cache for k in ("org:acme:name", "org:acme:logo", "org:other:name")] == [
        False,
        False,
        True,
    ]
    assert cache.stats().invalidations == 4


async def test_unsubscribed_invalidation_stops(clock: FakeClock) -> None:
    bus = EventBus()
    cache = Cache(clock=clock)
    stop = cache.invalidate_on(bus, keys=lambda e: ["k"])  # every event type
    cache.set("k", 1)
    bus.publish(OrgRenamed(at=0, org="x"))
    assert "k" not in cache
    stop()
    cache.set("k", 2)
    bus.publish(OrgRenamed(at=0, org="x"))
    assert cache.get("k") == 2


async def test_invalidate_on_needs_something_to_invalidate() -> None:
    with pytest.raises(ValueError, match="keys="):
        Cache().invalidate_on(EventBus(), UserUpdated)


# -- single flight ----------------------------------------------------------------------


def _const(value: object):  # type: ignore[no-untyped-def]
    async def load() -> object:
        return value

    return load


async def test_get_or_set_loads_on_a_miss_and_serves_hits_after(clock: FakeClock) -> None:
    cache = Cache(clock=clock, ttl=60)
    calls = 0

    async def load() -> int:
        nonlocal calls
        calls += 1
        return calls

    assert await cache.get_or_set("k", load) == 1
    assert await cache.get_or_set("k", load) == 1
    await clock.advance(60)
    assert await cache.get_or_set("k", load, ttl=5, tags=["t"]) == 2
    await clock.advance(5)
    assert await cache.get_or_set("k", load) == 3
    assert cache.invalidate_tags("t") == 0, "the tags of the expired load went with it"
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.loads, stats.expirations) == (1, 3, 3, 2)


async def test_concurrent_misses_call_the_loader_once(clock: FakeClock) -> None:
    cache = Cache(clock=clock)
    calls = 0
    results: list[int] = []

    async def load() -> int:
        nonlocal calls
        calls += 1
        await clock.sleep(1)
        return 42

    async def fetch() -> None:
        results.append(await cache.get_or_set("k", load))

    async with guard(), anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(fetch)
        await clock.advance(1)
    assert results == [42] * 50 and calls == 1
    assert cache.get("k") == 42
    stats = cache.stats()
    assert (stats.loads, stats.coalesced, stats.misses) == (1, 49, 50)


async def test_a_loader_error_reaches_every_waiter_and_nothing_is_cached(
    clock: FakeClock,
) -> None:
    cache = Cache(clock=clock)
    calls = 0
    errors: list[BaseException] = []

    async def load() -> int:
        nonlocal calls
        calls += 1
        await clock.sleep(1)
        raise LookupError("backend down")

    async def fetch() -> None:
        try:
            await cache.get_or_set("k", load)
        except LookupError as exc:
            errors.append(exc)

    async with guard(), anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(fetch)
        await clock.advance(1)
    assert calls == 1 and len(errors) == 10
    assert all(str(e) == "backend down" for e in errors)
    assert "k" not in cache
    assert await cache.get_or_set("k", _const("ok")) == "ok", "the next miss loads again"
    assert cache.stats().load_errors == 1


async def test_a_cancelled_loader_hands_the_load_to_a_waiter(clock: FakeClock) -> None:
    cache = Cache(clock=clock)
    calls = 0
    results: list[str] = []

    async def load() -> str:
        nonlocal calls
        calls += 1
        await clock.sleep(5)
        return f"load {calls}"

    async def fetch() -> None:
        results.append(await cache.get_or_set("k", load))

    async with guard(), anyio.create_task_group() as tg:
        leader = anyio.CancelScope()

        async def lead() -> None:
            with leader:
                await fetch()

        tg.start_soon(lead)
        await anyio.wait_all_tasks_blocked()  # the leader is loading
        for _ in range(5):
            tg.start_soon(fetch)
        await clock.advance(1)
        leader.cancel()
        await clock.advance(5)
    assert calls == 2, "one waiter took over after the leader was cancelled"
    assert results == ["load 2"] * 5
    assert cache.get("k") == "load 2"


async def test_a_waiter_whose_loader_was_cancelled_takes_a_value_set_meanwhile(
    clock: FakeClock,
) -> None:
    cache = Cache(clock=clock)
    calls = 0
    results: list[str] = []

    async def load() -> str:
        nonlocal calls
        calls += 1
        await clock.sleep(5)
        return "loaded"

    async def fetch() -> None:
        results.append(await cache.get_or_set("k", load))

    async with guard(), anyio.create_task_group() as tg:
        leader = anyio.CancelScope()

        async def lead() -> None:
            with leader:
                await fetch()

        tg.start_soon(lead)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(fetch)
        await anyio.wait_all_tasks_blocked()
        leader.cancel()
        cache.set("k", "set by hand")  # before the waiter wakes up
    assert results == ["set by hand"] and calls == 1


async def test_a_load_invalidated_while_in_flight_is_not_stored(clock: FakeClock) -> None:
    cache = Cache(clock=clock)
    bus = EventBus()
    cache.invalidate_on(bus, UserUpdated, tags=lambda e: [f"user:{e.user_id}"])
    results: list[str] = []

    async def load() -> str:
        await clock.sleep(1)
        return "read before the update"

    async def fetch(key: str, tags: list[str]) -> None:
        results.append(await cache.get_or_set(key, load, tags=tags))

    async with guard(), anyio.create_task_group() as tg:
        tg.start_soon(fetch, "by-tag", ["user:1"])
        tg.start_soon(fetch, "by-key", [])
        tg.start_soon(fetch, "by-prefix", [])
        tg.start_soon(fetch, "by-clear", [])
        tg.start_soon(fetch, "by-set", [])
        tg.start_soon(fetch, "untouched", ["user:2"])
        await anyio.wait_all_tasks_blocked()
        bus.publish(UserUpdated(at=clock.now(), user_id=1))
        cache.delete("by-key")
        cache.invalidate_prefix("by-p")
        cache.set("by-set", "newer")
        other = cache.namespace("other")
        other.clear()  # another namespace's clear does not touch these loads
        await clock.advance(1)
    assert results == ["read before the update"] * 6, "callers still get what was loaded"
    assert [k in cache for k in ("by-tag", "by-key", "by-prefix", "untouched")] == [
        False,
        False,
        False,
        True,
    ]
    assert cache.get("by-set") == "newer"

    async with guard(), anyio.create_task_group() as tg:
        tg.start_soon(fetch, "cleared", [])
        await anyio.wait_all_tasks_blocked()
        cache.clear()
        await clock.advance(1)
    assert "cleared" not in cache


# -- figures ----------------------------------------------------------------------------


async def test_stats_count_per_namespace_and_in_total(clock: FakeClock) -> None:
    cache = Cache(clock=clock, max_entries=100)
    users = cache.namespace("users")
    empty = CacheStats(max_entries=100)
    assert cache.stats() == CacheStats(
        max_entries=100, namespaces={"default": empty, "users": empty}
    )
    cache.set("a", 1)
    cache.get("a")
    cache.get("a")
    cache.get("b")
    users.set("a", 1)
    users.get("zz")
    users.delete("a")
    total = cache.stats()
    assert (total.hits, total.misses, total.invalidations, total.size) == (2, 2, 1, 1)
    assert total.hit_ratio == 0.5
    assert total.namespaces["default"].hits == 2
    assert users.stats() == total.namespaces["users"]
    assert (users.stats().misses, users.stats().size, users.stats().hit_ratio) == (1, 0, 0.0)
    assert users.stats().namespaces == {}
    assert repr(cache) == "<Cache entries=1/100 ttl=300.0 namespaces=2>"
    assert repr(users) == "<CacheNamespace 'users' entries=0>"


# -- the decorator ----------------------------------------------------------------------


async def test_cached_function_runs_once_per_distinct_arguments(clock: FakeClock) -> None:
    cache = Cache(clock=clock)
    calls: list[tuple[int, int]] = []

    @cached(cache, ttl=10)
    async def add(a: int, b: int = 0) -> int:
        """Add."""
        calls.append((a, b))
        return a + b

    assert add.__name__ == "add" and add.__doc__ == "Add."
    assert [await add(1, 2), await add(1, 2), await add(2, 1), await add(1, b=2)] == [3, 3, 3, 3]
    assert calls == [(1, 2), (2, 1), (1, 2)], "by keyword is another key, as lru_cache"
    assert add.invalidate(1, 2) is True
    assert await add(1, 2) == 3 and len(calls) == 4
    await clock.advance(10)
    assert await add(2, 1) == 3 and len(calls) == 5
    assert add.key(1, 2) != add.key(2, 1)


async def test_cached_function_keys_do_not_collide_across_functions(clock: FakeClock) -> None:
    cache = Cache(clock=clock)

    @cached(cache)
    async def double(x: int) -> int:
        return 2 * x

    @cached(cache)
    async def square(x: int) -> int:
        return x * x

    assert (await double(3), await square(3)) == (6, 9)


async def test_cached_with_a_key_and_tags_of_its_arguments(clock: FakeClock) -> None:
    cache = Cache(clock=clock)
    users = cache.namespace("users")
    loads: list[int] = []

    @cached(users, key=lambda user_id: f"user:{user_id}", tags=lambda user_id: [f"u{user_id}"])
    async def get_user(user_id: int) -> dict[str, int]:
        loads.append(user_id)
        return {"id": user_id}

    @cached(users, tags=["all"])
    async def count() -> int:
        return 7

    assert await get_user(1) == {"id": 1}
    assert users.get("user:1") == {"id": 1}
    await get_user(1)
    assert users.invalidate_tags("u1") == 1
    await get_user(1)
    await get_user(2)
    assert users.invalidate_prefix("user:") == 2
    assert loads == [1, 1, 2]
    assert await count() == 7 and users.invalidate_tags("all") == 1


async def test_cached_calls_coalesce_and_errors_are_not_cached(clock: FakeClock) -> None:
    cache = Cache(clock=clock)
    calls = 0

    @cached(cache)
    async def slow(fail: bool) -> str:
        nonlocal calls
        calls += 1
        await clock.sleep(1)
        if fail:
            raise RuntimeError("no")
        return "yes"

    outcomes: list[str] = []

    async def call(fail: bool) -> None:
        try:
            outcomes.append(await slow(fail))
        except RuntimeError as exc:
            outcomes.append(f"error: {exc}")

    async with guard(), anyio.create_task_group() as tg:
        for fail in (False, True) * 5:
            tg.start_soon(call, fail)
        await clock.advance(1)
    assert calls == 2
    assert sorted(outcomes) == ["error: no"] * 5 + ["yes"] * 5
    assert len(cache) == 1


async def test_cached_methods_key_on_the_instance(clock: FakeClock) -> None:
    cache = Cache(clock=clock)

    class Repo:
        def __init__(self, name: str) -> None:
            self.name = name

        @cached(cache)
        async def describe(self, n: int) -> str:
            return f"{self.name}:{n}"

    a, b = Repo("a"), Repo("b")
    assert (await a.describe(1), await b.describe(1)) == ("a:1", "b:1")
    assert Repo.describe.invalidate(a, 1) is True
    assert Repo.describe.key(b, 1) in cache and Repo.describe.key(a, 1) not in cache


# -- properties -------------------------------------------------------------------------

_ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("set"),
            st.sampled_from("abcdef"),
            st.integers(),
            st.sampled_from([None, 1.0, 2.5, 10.0]),
        ),
        st.tuples(st.just("get"), st.sampled_from("abcdef")),
        st.tuples(st.just("delete"), st.sampled_from("abcdef")),
        st.tuples(st.just("advance"), st.sampled_from([0.5, 1.0, 3.0])),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(ops=_ops, bound=st.integers(min_value=1, max_value=8))
async def test_property_bound_holds_and_gets_return_the_last_fresh_value(
    ops: list[tuple[object, ...]], bound: int
) -> None:
    """Whatever happens, the cache never holds more than its bound; a get returns the
    value last set under its key while that value is fresh, or nothing; and while no
    more distinct keys than the bound exist, nothing fresh is ever missing."""
    clock = FakeClock()
    cache = Cache(clock=clock, max_entries=bound, ttl=5.0)
    model: dict[object, tuple[object, float]] = {}  # key -> (last value, expires at)
    ever_set: set[object] = set()
    for op in ops:
        if op[0] == "set":
            _, key, value, ttl = op
            ever_set.add(key)
            cache.set(key, value, ttl=ttl)  # type: ignore[arg-type]
            model[key] = (value, clock.now() + (5.0 if ttl is None else ttl))  # type: ignore[operator]
        elif op[0] == "get":
            got = cache.get(op[1], "MISS")
            last = model.get(op[1])
            fresh = last is not None and clock.now() < last[1]
            if got != "MISS":
                assert fresh and last is not None and got == last[0]
            elif fresh and len(ever_set) <= bound:
                raise AssertionError(f"fresh key {op[1]!r} missing with no eviction possible")
        elif op[0] == "delete":
            cache.delete(op[1])
            model.pop(op[1], None)
        else:
            await clock.advance(op[1])  # type: ignore[arg-type]
        assert len(cache) <= bound
        stats = cache.stats()
        assert stats.size == len(cache) <= bound
