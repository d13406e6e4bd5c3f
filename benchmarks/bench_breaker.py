"""Per-call cost of a circuit breaker in the closed state, on top of a bare ``await noop()``.

What it measures: the time of ``N`` successful calls of an async no-op through each
breaker, minus the time of ``N`` bare ``await noop()`` in the same round, divided by
``N``. The rounds are repeated and the cases shuffled within each round, and the median
of the repeats is reported, because the machine is shared and noisy. Peers, installed
from PyPI: pybreaker (its ``calling()`` context manager: its decorator and ``call`` do
not await a coroutine, and ``call_async`` needs tornado), aiobreaker (decorator and
``call_async``) and purgatory (decorator and ``async with``). All on asyncio, since
aiobreaker and purgatory are asyncio-only; one extra line shows ours on trio.

Target (MISSION B1): ours adds under 1 us per call (the peers add 1.6 to 1.9 us).

    .venv/bin/python benchmarks/bench_breaker.py [--calls 100000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from typing import Any

import anyio
from _overhead import BARE, Loop, measure, noop

from hyperqueue._breaker import CircuitBreaker


def our_cases() -> dict[str, Loop]:
    breaker = CircuitBreaker("bench")
    guarded = breaker(noop)
    timed = CircuitBreaker("timed", slow_call=1.0)
    timed_guarded = timed(noop)

    async def decorator(n: int) -> None:
        for _ in range(n):
            await guarded()

    async def context_manager(n: int) -> None:
        for _ in range(n):
            async with breaker:
                await noop()

    async def call(n: int) -> None:
        for _ in range(n):
            await breaker.call(noop)

    async def slow_call_rule(n: int) -> None:
        for _ in range(n):
            await timed_guarded()

    return {
        "hyperqueue @breaker": decorator,
        "hyperqueue async with breaker": context_manager,
        "hyperqueue await breaker.call(fn)": call,
        "hyperqueue @breaker, slow_call=1 (reads the clock)": slow_call_rule,
    }


def peer_cases() -> tuple[dict[str, Loop], list[str]]:
    cases: dict[str, Loop] = {}
    missing: list[str] = []
    try:
        import pybreaker
    except ImportError as exc:
        missing.append(f"pybreaker: {exc}")
    else:
        pb = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30)

        async def pybreaker_calling(n: int) -> None:
            for _ in range(n):
                with pb.calling():
                    await noop()

        cases["pybreaker with breaker.calling()"] = pybreaker_calling
    try:
        import aiobreaker  # type: ignore[import-untyped]
    except ImportError as exc:
        missing.append(f"aiobreaker: {exc}")
    else:
        ab = aiobreaker.CircuitBreaker(fail_max=5)
        ab_noop = ab(noop)

        async def aiobreaker_decorator(n: int) -> None:
            for _ in range(n):
                await ab_noop()

        async def aiobreaker_call(n: int) -> None:
            for _ in range(n):
                await ab.call_async(noop)

        cases["aiobreaker @breaker"] = aiobreaker_decorator
        cases["aiobreaker await breaker.call_async(fn)"] = aiobreaker_call
    try:
        import purgatory
    except ImportError as exc:
        missing.append(f"purgatory: {exc}")
    else:
        factory = purgatory.AsyncCircuitBreakerFactory(default_threshold=5, default_ttl=30)
        pg_noop = factory("bench")(noop)
        held: dict[str, Any] = {}

        async def purgatory_decorator(n: int) -> None:
            for _ in range(n):
                await pg_noop()

        async def purgatory_context(n: int) -> None:
            brk = held.get("brk")
            if brk is None:
                brk = held["brk"] = await factory.get_breaker("bench-cm")
            for _ in range(n):
                async with brk:
                    await noop()

        cases["purgatory @breaker"] = purgatory_decorator
        cases["purgatory async with breaker"] = purgatory_context
    return cases, missing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    ours = our_cases()
    peers, missing = peer_cases()
    results = asyncio.run(measure({**ours, **peers}, args.calls, args.repeats))
    trio_results = anyio.run(
        measure,
        {"hyperqueue @breaker": ours["hyperqueue @breaker"]},
        args.calls,
        args.repeats,
        backend="trio",
    )

    median = {name: statistics.median(values) for name, values in results.items()}
    reference = median["hyperqueue @breaker"]
    print(f"{args.calls} calls x {args.repeats} repeats, median; asyncio unless noted")
    print(f"bare await noop(): {median.pop(BARE):.3f} us per call")
    print(f"{'case':52} {'over bare (us)':>15} {'x ours @breaker':>16}")
    for name, value in sorted(median.items(), key=lambda item: item[1]):
        ratio = value / reference if reference > 0 else float("nan")
        print(f"{name:52} {value:15.3f} {ratio:16.1f}")
    trio_value = statistics.median(trio_results["hyperqueue @breaker"])
    trio_bare = statistics.median(trio_results[BARE])
    print(f"{'hyperqueue @breaker (trio)':52} {trio_value:15.3f}   (trio bare {trio_bare:.3f} us)")
    for line in missing:
        print(f"not measured: {line}")
    verdict = "meets" if max(median[n] for n in ours if "slow_call" not in n) < 1.0 else "MISSES"
    print(f"target: ours under 1 us over bare in the closed state -> {verdict}")


if __name__ == "__main__":
    main()
