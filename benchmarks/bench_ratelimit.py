"""Per-call cost of a rate limit hit that passes: hyperqueue's RateLimiter against calling
``limits`` directly.

For each strategy (fixed window, moving window, sliding window counter), measured in
one run on this machine:

- limits direct: ``limits``' strategy over its own ``MemoryStorage``, called as its docs
  show (``strategy.hit(item, key)``): the peer;
- limits on ClockStorage: the same strategy over hyperqueue's clock-driven storage,
  called directly: what the storage alone changes;
- RateLimiter.hit: hyperqueue's wrapper (``limiter.hit(key)``): what a user calls;
- RateLimiter.check: a hit plus the figures for HTTP headers;
- RateLimiter.check + headers: and the headers made of them, as the server's rate-limit
  layer does for every request.

With one limit on a fixed window (the default, and the server's), ``hit`` and ``check``
take a one-pass path over the storage instead of limits' strategy (its figures the same:
tests/core/test_ratelimit_fast.py); the other strategies go through limits' strategy.

1,000 keys are hit round-robin under a limit high enough that every hit passes (the
success path). The contenders run in interleaved rounds (each once per round) because
the machine is shared and noisy; each figure is the median over the rounds of a loop's
time minus the same loop doing nothing, in microseconds per call, and the ratio is
against ``limits`` direct for the same strategy. Run:
``.venv/bin/python benchmarks/bench_ratelimit.py`` (about 30 s).
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Callable

from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import STRATEGIES

from hyperqueue._ratelimit import ClockStorage, RateLimiter, Strategy

ROUNDS = 7
CALLS = 50_000
KEYS = [f"client-{i}" for i in range(1_000)]
LIMIT = "10000000/hour"
NAMES: list[Strategy] = ["fixed-window", "moving-window", "sliding-window-counter"]


def time_calls(fn: Callable[[str], object]) -> float:
    keys = KEYS * (CALLS // len(KEYS))
    t0 = time.perf_counter()
    for _k in keys:
        pass
    empty = time.perf_counter() - t0
    t0 = time.perf_counter()
    for k in keys:
        fn(k)
    return (time.perf_counter() - t0 - empty) / len(keys) * 1e6


def main() -> None:
    item = parse(LIMIT)
    contenders: dict[tuple[str, str], Callable[[str], object]] = {}
    memory_storages = []
    for name in NAMES:
        memory = MemoryStorage()
        memory_storages.append(memory)
        direct = STRATEGIES[name](memory)
        ours_direct = STRATEGIES[name](ClockStorage())
        limiter = RateLimiter(LIMIT, strategy=name)
        contenders[name, "limits direct (MemoryStorage)"] = (
            lambda k, hit=direct.hit: hit(item, k)  # type: ignore[misc]
        )
        contenders[name, "limits on ClockStorage"] = (
            lambda k, hit=ours_direct.hit: hit(item, k)  # type: ignore[misc]
        )
        contenders[name, "RateLimiter.hit"] = limiter.hit
        contenders[name, "RateLimiter.check"] = RateLimiter(LIMIT, strategy=name).check
        check = RateLimiter(LIMIT, strategy=name).check
        contenders[name, "RateLimiter.check + headers"] = (
            lambda k, check=check: check(k).headers()  # type: ignore[misc]
        )

    samples: dict[tuple[str, str], list[float]] = {key: [] for key in contenders}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(ROUNDS):
            for key, fn in contenders.items():
                samples[key].append(time_calls(fn))
    for memory in memory_storages:
        memory.timer.cancel()

    figure = {key: statistics.median(values) for key, values in samples.items()}
    print(f"us per passing hit, median of {ROUNDS} interleaved rounds; ratio = / limits direct")
    print(f"{'strategy':24s}{'contender':32s}{'us':>8s}{'ratio':>9s}")
    for name in NAMES:
        peer = figure[name, "limits direct (MemoryStorage)"]
        for (strategy, what), us in figure.items():
            if strategy == name:
                print(f"{strategy:24s}{what:32s}{us:8.2f}{us / peer:8.2f}x")
    print()
    for name in NAMES:
        ours = figure[name, "RateLimiter.hit"]
        wrapper = ours - figure[name, "limits on ClockStorage"]
        print(
            f"{name}: RateLimiter.hit {ours:.2f} us, {wrapper * 1000:+.0f} ns against limits'"
            " strategy on the same storage"
        )


if __name__ == "__main__":
    main()
