"""Per-call cost of a retry wrapper when the first attempt succeeds, over a bare ``await``.

What it measures: ``N`` calls of an async no-op that succeeds, through each retry
helper configured alike (3 attempts, exponential backoff with jitter, on ``Exception``),
minus the time of ``N`` bare ``await noop()`` in the same round, divided by ``N``. Rounds
are repeated with the cases shuffled and the median is reported, since the machine is
shared and noisy. Peers, installed from PyPI: tenacity (``@retry`` and ``async for
attempt in AsyncRetrying(...)``) and stamina (``@retry`` and ``retry_context``). One more
line shows what a failed first attempt costs ours (the hand-over to tenacity), with
zero-second waits so that only the machinery is timed.

Target (MISSION B2): ours adds under 3 us per successful call (tenacity and stamina add
30 to 35 us).

    .venv/bin/python benchmarks/bench_retry.py [--calls 20000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from typing import Any

from _overhead import BARE, Loop, measure, noop

from hyperqueue._retry import Retry, retry


def our_cases() -> dict[str, Loop]:
    guarded = retry(3, backoff=1.0, max_backoff=60.0, jitter=1.0, on=Exception)(noop)
    policy = Retry(3, backoff=1.0, max_backoff=60.0, jitter=1.0, on=Exception)
    failing_once = Retry(3, backoff=0.0, jitter=0.0)
    state = {"fail": False}

    async def flaky() -> None:
        state["fail"] = not state["fail"]
        if state["fail"]:
            raise ConnectionError("first attempt fails")

    flaky_guarded = failing_once.wrap(flaky)

    async def decorator(n: int) -> None:
        for _ in range(n):
            await guarded()

    async def loop(n: int) -> None:
        for _ in range(n):
            async for attempt in policy.attempting():
                with attempt:
                    await noop()

    async def one_failure(n: int) -> None:
        for _ in range(n):
            await flaky_guarded()

    return {
        "hyperqueue @retry": decorator,
        "hyperqueue async for attempt in policy.attempting()": loop,
        "hyperqueue @retry, first attempt fails (2 calls)": one_failure,
    }


def peer_cases() -> tuple[dict[str, Loop], list[str]]:
    cases: dict[str, Loop] = {}
    missing: list[str] = []
    try:
        import tenacity
    except ImportError as exc:  # pragma: no cover - tenacity is a core dependency
        missing.append(f"tenacity: {exc}")
    else:
        options: dict[str, Any] = {
            "stop": tenacity.stop_after_attempt(3),
            "wait": tenacity.wait_exponential(multiplier=1.0, max=60.0)
            + tenacity.wait_random(0, 1.0),
            "retry": tenacity.retry_if_exception_type(Exception),
            "reraise": True,
        }
        t_noop = tenacity.retry(**options)(noop)

        async def tenacity_decorator(n: int) -> None:
            for _ in range(n):
                await t_noop()

        async def tenacity_loop(n: int) -> None:
            for _ in range(n):
                async for attempt in tenacity.AsyncRetrying(**options):
                    with attempt:
                        await noop()

        cases["tenacity @retry"] = tenacity_decorator
        cases["tenacity async for attempt in AsyncRetrying()"] = tenacity_loop
    try:
        import stamina
    except ImportError as exc:
        missing.append(f"stamina: {exc}")
    else:
        stamina_options: dict[str, Any] = {
            "on": Exception,
            "attempts": 3,
            "wait_initial": 1.0,
            "wait_max": 60.0,
            "wait_jitter": 1.0,
        }
        s_noop = stamina.retry(**stamina_options)(noop)

        async def stamina_decorator(n: int) -> None:
            for _ in range(n):
                await s_noop()

        async def stamina_loop(n: int) -> None:
            for _ in range(n):
                async for attempt in stamina.retry_context(**stamina_options):
                    with attempt:
                        await noop()

        cases["stamina @retry"] = stamina_decorator
        cases["stamina async for attempt in retry_context()"] = stamina_loop
    return cases, missing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    ours = our_cases()
    peers, missing = peer_cases()
    results = asyncio.run(measure({**ours, **peers}, args.calls, args.repeats, warmup=200))
    median = {name: statistics.median(values) for name, values in results.items()}
    reference = median["hyperqueue @retry"]
    print(f"{args.calls} calls x {args.repeats} repeats, median, asyncio")
    print(f"bare await noop(): {median.pop(BARE):.3f} us per call")
    print(f"{'case':54} {'over bare (us)':>15} {'x ours @retry':>14}")
    for name, value in sorted(median.items(), key=lambda item: item[1]):
        ratio = value / reference if reference > 0 else float("nan")
        print(f"{name:54} {value:15.3f} {ratio:14.1f}")
    for line in missing:
        print(f"not measured: {line}")
    worst = max(median[n] for n in ours if "fails" not in n)
    print(f"target: ours under 3 us over bare on success -> {'meets' if worst < 3.0 else 'MISSES'}")


if __name__ == "__main__":
    main()
