"""What OpenTelemetry instrumentation costs a memory queue, against the same run without it.

N no-op jobs enqueued one by one while a pool with concurrency 10 runs them (as
``bench_memory_queue.py`` does), median of --repeats rounds, the cases interleaved in
one process so drift hits them alike. Time is the process's CPU time (``process_time``:
the batch span processor's export thread included), which other load on a shared machine
disturbs far less than the wall clock:

- off: ``hq.Queue(instrument=False)``: the baseline, run beside each other case in turn.
- no SDK: ``hq.Queue()`` with no provider configured (the default for every user who
  has not set up OpenTelemetry): ratio to off (target: cost under 2 %).
- SDK traces: an SDK ``TracerProvider`` with a ``BatchSpanProcessor`` (spans are
  exported to an exporter that drops them, so the figure is the instrumentation and
  the SDK, not a network): a ``send`` and a ``process`` span per job.
- SDK traces + metrics: the same plus an SDK ``MeterProvider`` with an in-memory reader
  (counters and histograms per job).

For each SDK case the cost per job in microseconds is printed: 1/throughput minus 1/off.
The SDK providers are handed to the queue, never set globally, so the rounds without
them see no SDK.

Run: ``python benchmarks/bench_tracing.py`` (``--quick`` for a short run); needs the
``otel`` extra for the SDK cases.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import anyio

import hyperqueue as hq


def _sdk(metrics: bool) -> dict[str, Any]:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class Drop(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop()))
    options: dict[str, Any] = {"tracer_provider": provider}
    if metrics:
        options["meter_provider"] = MeterProvider(metric_readers=[InMemoryMetricReader()])
    return options


async def run(n: int, options: dict[str, Any]) -> float:
    queue = hq.Queue(**options)
    ran = 0
    all_ran = anyio.Event()

    @queue.task
    async def noop() -> None:
        nonlocal ran
        ran += 1
        if ran == n:
            all_ran.set()

    async with queue, queue.worker(concurrency=10):
        start = time.process_time()
        for _ in range(n):
            last = await noop.enqueue()
        await all_ran.wait()
        await queue.wait(last.id)
        elapsed = time.process_time() - start
    provider = options.get("tracer_provider")
    if provider is not None:
        provider.shutdown()
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.repeats = 7
    cases: dict[str, Callable[[], dict[str, Any]]] = {
        "off": lambda: {"instrument": False},
        "no SDK": dict,
    }
    try:
        import opentelemetry.sdk  # noqa: F401
    except ImportError:
        print("opentelemetry-sdk is not installed: SDK cases skipped (pip install '.[otel]')")
    else:
        cases["SDK traces"] = lambda: _sdk(metrics=False)
        cases["SDK traces + metrics"] = lambda: _sdk(metrics=True)
    print(
        f"python {sys.version.split()[0]}, N={args.n}, concurrency 10, "
        f"median of {args.repeats}, asyncio"
    )
    for make in cases.values():  # warm up
        anyio.run(run, 1000, make())
    # each case beside its own rounds of off, the order alternating: an SDK round leaves
    # garbage and a span thread behind that would tax whichever round follows it
    base = "off"
    for name in cases:
        if name == base:
            continue
        figures: dict[str, list[float]] = {name: [], base: []}
        for i in range(args.repeats):
            for which in (name, base) if i % 2 else (base, name):
                gc.collect()
                figures[which].append(anyio.run(run, args.n, cases[which]()))
        off, rate = statistics.median(figures[base]), statistics.median(figures[name])
        spread = (max(figures[base]) - min(figures[base])) / off * 100
        line = (
            f"{name:<22} {rate:>10,.0f} jobs/s   off {off:>10,.0f} jobs/s   ratio {rate / off:.3f}"
        )
        if name == "no SDK":
            cost = (1 - rate / off) * 100
            line += f"  cost {cost:+.1f} % (target < 2 %; spread of off {spread:.0f} %)"
        else:
            line += f"  cost per job {(1 / rate - 1 / off) * 1e6:.1f} us"
        print(line)


if __name__ == "__main__":
    main()
