"""Health checks, degradation modes and supervised services: the cost of the machinery.

What it measures (median of --repeats runs, each against its ceiling in the same run):

- modes: ``ModeController.allows(op)`` and ``check(op)`` per call on the success path
  (the call every request or enqueue would make), against the ceiling of a plain
  function doing the same frozenset lookup; and ``allows`` while a mode set by hand
  with an end time is active (one clock read per call).
- health: ``await Health.report()`` with 1 and with 10 instant checks, per check,
  against the ceiling of awaiting the same check functions one after the other
  (the registry adds a task group, a timeout scope per check and two clock reads).
- services: trigger-to-run latency of a supervised service on the system clock
  (``service.trigger()`` until the service function starts), p50 / p99, against the
  ceiling of setting an ``anyio.Event`` that one task waits on.

Run: ``python benchmarks/bench_health_modes.py`` (``--backend trio``, ``--quick``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import anyio

from hyperqueue._health import CheckResult, Health
from hyperqueue._modes import Mode, ModeController, Operation
from hyperqueue._services import Service, Supervisor


def per_call(fn: Callable[[Operation], object], op: Operation, n: int) -> float:
    """Microseconds per call of ``fn(op)`` over ``n`` calls (loop unrolled by 10)."""
    start = time.perf_counter()
    for _ in range(n // 10):
        fn(op)
        fn(op)
        fn(op)
        fn(op)
        fn(op)
        fn(op)
        fn(op)
        fn(op)
        fn(op)
        fn(op)
    return (time.perf_counter() - start) / n * 1e6


def bench_modes(n: int) -> dict[str, float]:
    controller = ModeController()
    allowed = frozenset(Operation)
    op = Operation.SUBMIT

    def ceiling(op: Operation) -> bool:
        return op in allowed

    timed = ModeController()
    timed.set(Mode.DEGRADED, until=time.time() + 3600)
    return {
        "ceiling": per_call(ceiling, op, n),
        "allows": per_call(controller.allows, op, n),
        "check": per_call(controller.check, op, n),
        "allows_until": per_call(timed.allows, op, n),
    }


async def bench_health(n: int, checks: int) -> dict[str, float]:
    async def instant() -> CheckResult | None:
        return None

    fns = [instant] * checks
    health = Health()
    for i in range(checks):
        health.add(f"c{i}", instant)

    start = time.perf_counter()
    for _ in range(n):
        for fn in fns:
            await fn()
    ceiling = (time.perf_counter() - start) / (n * checks) * 1e6

    start = time.perf_counter()
    for _ in range(n):
        await health.report()
    report = (time.perf_counter() - start) / (n * checks) * 1e6
    return {"ceiling": ceiling, "report": report}


async def bench_trigger(samples: int) -> dict[str, float]:
    # ceiling: one task waits on an Event, another sets it
    ceiling: list[float] = []
    for _ in range(samples):
        event = anyio.Event()
        woke: list[float] = []

        async def waiter(event: anyio.Event = event, woke: list[float] = woke) -> None:
            await event.wait()
            woke.append(time.perf_counter())

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            sent = time.perf_counter()
            event.set()
        ceiling.append(woke[0] - sent)

    latencies: list[float] = []
    sent = 0.0
    ran = anyio.Event()

    async def job() -> None:
        latencies.append(time.perf_counter() - sent)
        ran.set()

    async with Supervisor() as sup:
        service = sup.add(Service("bench", job, interval=3600.0, run_at_start=False))
        for _ in range(samples):
            await anyio.wait_all_tasks_blocked()
            ran = anyio.Event()
            sent = time.perf_counter()
            service.trigger()
            await ran.wait()

    def pct(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(int(q * len(ordered)), len(ordered) - 1)] * 1e6

    return {
        "ceiling_p50": pct(ceiling, 0.5),
        "ceiling_p99": pct(ceiling, 0.99),
        "trigger_p50": pct(latencies, 0.5),
        "trigger_p99": pct(latencies, 0.99),
    }


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    parser.add_argument("--quick", action="store_true", help="fewer calls, for a smoke run")
    args = parser.parse_args()
    scale = 10 if args.quick else 1

    modes = median_of([bench_modes(1_000_000 // scale) for _ in range(args.repeats)])
    print("modes (us per call, success path)")
    print(f"  ceiling (frozenset lookup in a function) {modes['ceiling']:.3f}")
    for key in ("allows", "check", "allows_until"):
        print(f"  {key:<40} {modes[key]:.3f}   x{modes[key] / modes['ceiling']:.2f} of ceiling")

    print(f"health (us per check, {args.backend})")
    for checks in (1, 10):
        runs = [
            anyio.run(bench_health, 20_000 // scale // checks, checks, backend=args.backend)
            for _ in range(args.repeats)
        ]
        h = median_of(runs)
        print(
            f"  {checks:>2} checks: ceiling {h['ceiling']:.2f}, report {h['report']:.2f}"
            f"   x{h['report'] / h['ceiling']:.1f} of ceiling,"
            f" +{h['report'] - h['ceiling']:.2f} us per check"
        )

    runs = [
        anyio.run(bench_trigger, 2_000 // scale, backend=args.backend) for _ in range(args.repeats)
    ]
    t = median_of(runs)
    print(f"service trigger-to-run latency (us, {args.backend}, system clock)")
    for label, key in (
        ("anyio.Event set -> waiter (ceiling)", "ceiling"),
        ("Service.trigger() -> run starts", "trigger"),
    ):
        print(f"  {label:<36} p50 {t[key + '_p50']:.1f}  p99 {t[key + '_p99']:.1f}")
    print(f"  x{t['trigger_p50'] / t['ceiling_p50']:.2f} of ceiling at p50")


if __name__ == "__main__":
    main()
