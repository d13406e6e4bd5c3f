"""What workflows cost: steps per second against plain jobs, in memory and on SQLite.

Measures, in one run, default settings (a worker pool with concurrency 10):

- plain: ``enqueue_many`` of N no-op jobs, then run them all: the ceiling here.
- batch: one workflow of N steps with no edges (``enqueue_workflow``), run to the end
  (``wait_workflow``): what the workflow bookkeeping costs per step.
- batch, concurrency=10: the same with the workflow's cap (every step's end releases
  the next one in the same storage write).
- chain: N / 10 steps, each taking the previous step's result: one step at a time, so
  this is the latency of a step's end -> release -> claim -> start.

Each figure is the median of ``--repeats`` runs (3 by default), each on a fresh store;
ratios are against plain jobs of the same run. Prints a bar chart of steps per second.
Run: ``.venv/bin/python benchmarks/bench_workflows.py [--quick]`` (about 40 s).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

import hyperqueue as hq
from hyperqueue_sqlite import SQLiteStorage


def make_queue(kind: str, folder: Path) -> hq.Queue:
    if kind == "memory":
        return hq.Queue()
    return hq.Queue(SQLiteStorage(folder / f"bench-{time.perf_counter_ns()}.db"))


def tasks(queue: hq.Queue) -> tuple[hq.Task, hq.Task]:  # type: ignore[type-arg]
    @queue.task
    async def noop(i: int) -> int:
        return i

    @queue.task
    async def step(previous: int) -> int:
        return previous + 1

    return noop, step


async def plain(queue: hq.Queue, n: int) -> float:
    tasks(queue)
    async with queue:
        start = time.perf_counter()
        done = await queue.enqueue_many(hq.Submission(task="noop", args=(i,)) for i in range(n))
        async with queue.worker(concurrency=10):
            for item in done:  # as wait_workflow does, one step after another
                await queue.wait(item.job.id)
        return n / (time.perf_counter() - start)


async def batch(queue: hq.Queue, n: int, concurrency: int | None = None) -> float:
    noop, _ = tasks(queue)
    async with queue:
        start = time.perf_counter()
        flow = hq.Workflow(concurrency=concurrency)
        for i in range(n):
            flow.add(noop, i)
        run = await queue.enqueue_workflow(flow)
        async with queue.worker(concurrency=10):
            done = await queue.wait_workflow(run.id)
        assert done.status is hq.WorkflowStatus.COMPLETED, done.status
        return n / (time.perf_counter() - start)


async def chain(queue: hq.Queue, n: int) -> float:
    noop, step = tasks(queue)
    async with queue:
        start = time.perf_counter()
        flow = hq.Workflow()
        last = flow.add(noop, 0)
        for _ in range(n - 1):
            last = flow.add(step, last)
        run = await queue.enqueue_workflow(flow)
        async with queue.worker(concurrency=10):
            done = await queue.wait_workflow(run.id)
        assert done.result == {last.name: n - 1}, done.result
        return n / (time.perf_counter() - start)


def median(
    kind: str, folder: Path, repeats: int, bench: Callable[[hq.Queue], Awaitable[float]]
) -> float:
    async def once() -> float:
        return await bench(make_queue(kind, folder))

    return statistics.median(anyio.run(once) for _ in range(repeats))


def bar(value: float, top: float, width: int = 40) -> str:
    return "█" * max(1, round(width * value / top))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("-n", type=int, default=None)
    options = parser.parse_args()
    n = options.n or (1_000 if options.quick else 5_000)
    repeats = 1 if options.quick else options.repeats
    rows: list[tuple[str, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for kind in ("memory", "sqlite"):
            ceiling = median(kind, folder, repeats, lambda q: plain(q, n))
            figures = [
                (f"{kind}: plain jobs (N={n:,})", ceiling),
                (f"{kind}: batch of N steps", median(kind, folder, repeats, lambda q: batch(q, n))),
                (
                    f"{kind}: batch, concurrency=10",
                    median(kind, folder, repeats, lambda q: batch(q, n, 10)),
                ),
                (
                    f"{kind}: chain of {n // 10:,} steps",
                    median(kind, folder, repeats, lambda q: chain(q, n // 10)),
                ),
            ]
            rows += [(label, value, value / ceiling) for label, value in figures]
    top = max(value for _, value, _ in rows)
    width = max(len(label) for label, _, _ in rows)
    print(f"{'figure':<{width}}  {'steps/s':>9}  {'of plain':>8}")
    for label, value, ratio in rows:
        print(f"{label:<{width}}  {value:>9,.0f}  {ratio:>8.2f}  {bar(value, top)}")


if __name__ == "__main__":
    main()
