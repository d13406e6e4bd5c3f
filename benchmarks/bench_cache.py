"""Per-call cost of a cache hit and of a set: hyperqueue's Cache against its peers.

Measures, in one run on this machine:

- hit: ``get`` of a present, fresh key (1,000 keys, read round-robin);
- set: ``set`` of a present key (an overwrite);
- new: ``set`` of a new key into a full cache (an insert plus an eviction);

for a plain dict (the ceiling), cachetools' TTLCache, hyperqueue's Cache (sync ``get``,
``await get_or_set`` and a ``@cached`` function on a hit), cashews (``mem://``) and
aiocache (SimpleMemoryCache). Async calls run inside one asyncio event loop, next to the
cost of a bare ``await`` of a coroutine. Also measured: the clock read that every hit
makes, and the same hit when the clock is asked through a Python method (what
``Cache`` avoids by calling ``time.time`` directly when given the system clock).

The machine is shared and noisy, so the contenders are measured in interleaved rounds
(every contender once per round) and each figure is the median over the rounds of a
loop's time minus the same loop doing nothing, in nanoseconds per call. Ratios are
against hyperqueue in the same run. Run: ``.venv/bin/python benchmarks/bench_cache.py``
(about 30 s; peers from PyPI: ``pip install cachetools cashews aiocache``).
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
import warnings
from collections.abc import Awaitable, Callable

from hyperqueue._cache import Cache, cached
from hyperqueue._clock import SystemClock

ROUNDS = 7
SYNC_CALLS = 100_000
ASYNC_CALLS = 20_000
KEYS = [f"key:{i}" for i in range(1_000)]

SyncCall = Callable[[str], object]
AsyncCall = Callable[[str], Awaitable[object]]


def time_sync(fn: SyncCall) -> float:
    keys = KEYS * (SYNC_CALLS // len(KEYS))
    t0 = time.perf_counter()
    for _k in keys:
        pass
    empty = time.perf_counter() - t0
    t0 = time.perf_counter()
    for k in keys:
        fn(k)
    return (time.perf_counter() - t0 - empty) / len(keys) * 1e9


async def time_async(fn: AsyncCall) -> float:
    keys = KEYS * (ASYNC_CALLS // len(KEYS))
    t0 = time.perf_counter()
    for _k in keys:
        pass
    empty = time.perf_counter() - t0
    t0 = time.perf_counter()
    for k in keys:
        await fn(k)
    return (time.perf_counter() - t0 - empty) / len(keys) * 1e9


class MethodClock(SystemClock):
    """The system clock asked through its Python method, as any clock other than exactly
    ``SystemClock`` is."""

    __slots__ = ()


def contenders() -> tuple[dict[str, tuple[str, SyncCall]], dict[str, tuple[str, AsyncCall]]]:
    sync: dict[str, tuple[str, SyncCall]] = {}
    aio: dict[str, tuple[str, AsyncCall]] = {}

    plain = dict.fromkeys(KEYS, 1)
    now, clock_now = time.time, SystemClock().now
    sync["call floor: a lambda doing nothing"] = ("clock", lambda k: None)
    sync["time.time()"] = ("clock", lambda k: now())
    sync["SystemClock().now()"] = ("clock", lambda k: clock_now())
    sync["dict.get (ceiling)"] = ("hit", plain.get)

    ours = Cache(max_entries=10_000, ttl=300)
    method_clock = Cache(max_entries=10_000, ttl=300, clock=MethodClock())
    users = ours.namespace("users")
    for k in KEYS:
        ours.set(k, 1)
        users.set(k, 1)
        method_clock.set(k, 1)
    sync["hyperqueue Cache.get"] = ("hit", ours.get)
    sync["hyperqueue namespace.get"] = ("hit", users.get)
    sync["hyperqueue Cache.get, clock via a method"] = ("hit", method_clock.get)

    async def load() -> int:
        return 1

    @cached(ours, key=lambda k: k)
    async def fetch(k: str) -> int:
        return 1

    async def bare(k: str) -> int:
        return 1

    aio["bare await of a coroutine (floor)"] = ("hit", bare)
    aio["hyperqueue await Cache.get_or_set"] = ("hit", lambda k: ours.get_or_set(k, load))
    aio["hyperqueue await @cached function"] = ("hit", fetch)

    sync["dict[key] = value (ceiling)"] = ("set", lambda k: plain.__setitem__(k, 2))
    sync["hyperqueue Cache.set"] = ("set", lambda k: ours.set(k, 2))
    full = Cache(max_entries=500, ttl=300)
    fresh = itertools.count()
    sync["hyperqueue Cache.set, new key"] = ("new", lambda k: full.set(next(fresh), 1))

    try:
        from cachetools import TTLCache
    except ImportError:
        print("(cachetools not installed: pip install cachetools)")
    else:
        tc: TTLCache[object, int] = TTLCache(maxsize=10_000, ttl=300)
        tfull: TTLCache[object, int] = TTLCache(maxsize=500, ttl=300)
        for k in KEYS:
            tc[k] = 1
        fresh2 = itertools.count()
        sync["cachetools TTLCache.get"] = ("hit", tc.get)
        sync["cachetools TTLCache[key] = value"] = ("set", lambda k: tc.__setitem__(k, 2))
        sync["cachetools TTLCache, new key"] = (
            "new",
            lambda k: tfull.__setitem__(next(fresh2), 1),
        )

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from cashews import Cache as Cashews
    except ImportError:
        print("(cashews not installed: pip install cashews)")
    else:
        cw = Cashews()
        cw.setup("mem://", size=10_000)
        aio["cashews await get"] = ("hit", cw.get)
        aio["cashews await set"] = ("set", lambda k: cw.set(k, 2, expire=300))

    try:
        from aiocache import SimpleMemoryCache  # type: ignore[import-untyped]
    except ImportError:
        print("(aiocache not installed: pip install aiocache)")
    else:
        ac = SimpleMemoryCache()
        aio["aiocache await get"] = ("hit", ac.get)
        aio["aiocache await set"] = ("set", lambda k: ac.set(k, 2, ttl=300))

    return sync, aio


def main() -> None:
    sync, aio = contenders()
    samples: dict[str, list[float]] = {name: [] for name in [*sync, *aio]}

    async def round_async() -> None:
        for name, (_kind, fn) in aio.items():
            samples[name].append(await time_async(fn))

    async def fill() -> None:  # the async peers' keys, so their gets are hits
        for kind, fn in aio.values():
            if kind == "set":
                for k in KEYS:
                    await fn(k)

    asyncio.run(fill())
    for _ in range(ROUNDS):
        for name, (_kind, fn) in sync.items():
            samples[name].append(time_sync(fn))
        asyncio.run(round_async())

    figure = {name: statistics.median(values) for name, values in samples.items()}
    kinds = {name: kind for name, (kind, _) in [*sync.items(), *aio.items()]}
    ref = {
        "hit": figure["hyperqueue Cache.get"],
        "set": figure["hyperqueue Cache.set"],
        "new": figure["hyperqueue Cache.set, new key"],
    }
    print(f"ns per call, median of {ROUNDS} interleaved rounds; ratio = figure / hyperqueue's")
    print(f"{'kind':6s}{'contender':44s}{'ns':>8s}{'ratio':>9s}")
    for kind in ("clock", "hit", "set", "new"):
        for name in sorted((n for n in figure if kinds[n] == kind), key=figure.__getitem__):
            ratio = f"{figure[name] / ref[kind]:8.2f}x" if kind in ref else ""
            print(f"{kind:6s}{name:44s}{figure[name]:8.0f}{ratio:>9s}")
    print()
    get, aget = figure["hyperqueue Cache.get"], figure["hyperqueue await Cache.get_or_set"]
    for peer, ours, label in (
        ("cachetools TTLCache.get", get, "Cache.get"),
        ("cashews await get", get, "Cache.get"),
        ("cashews await get", aget, "await Cache.get_or_set"),
        ("aiocache await get", aget, "await Cache.get_or_set"),
    ):
        if peer in figure:
            print(f"a hit in {peer} costs {figure[peer] / ours:5.1f}x one in hyperqueue's {label}")
    clock = figure["time.time()"] - figure["call floor: a lambda doing nothing"]
    method = figure["hyperqueue Cache.get, clock via a method"] - get
    print(f"the clock read is about {clock:.0f} ns, {clock / get:.0%} of a hit; asking it")
    print(f"through a Python method would add {method:.0f} ns ({method / get:+.0%})")


if __name__ == "__main__":
    main()
