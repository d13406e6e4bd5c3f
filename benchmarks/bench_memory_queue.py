"""hyperqueue in memory against the asyncio.Queue ceiling, in one run.

What it measures (N no-op jobs, concurrency 10, median of --repeats runs):

- ceiling: a lean asyncio.Queue loop: N items put on the queue while 10 consumer
  tasks ``get()`` each item, await a no-op coroutine and mark it done.
- hyperqueue: ``await noop.enqueue()`` N times, one by one, while a worker pool with
  concurrency 10 runs them; the clock stops when the last job is stored completed.
  Printed as a ratio to the ceiling (target: at least 0.125).
- drain mode: N jobs of a task with one ``int`` argument enqueued first, then a pool of
  10 runs them all; against a lean drain ceiling (``put_nowait`` N items, then 10
  consumer tasks awaiting a no-op for each). Targets: 0.125 on asyncio, 0.1 on trio.
  Each side is timed on the wall clock and on the process's CPU time: both loops run on
  one thread, so on an idle machine the two agree, and on a shared one the CPU-time
  ratio is the one that other processes do not move.
- ``--parts``: where a drained job's time goes, in CPU microseconds per job: the whole
  enqueue and run phases, and the memory storage's share of each (enqueue, claims of
  100, finishes of 100) measured alone on the same jobs.
- the argument check of one ``int`` (target: under 1 us).
- latency: enqueue-to-start p50 / p99 at a light load (about 200 jobs/s) on an idle
  pool (target: p99 under 1 ms).
- memory: resident memory per pending job with 1,000,000 jobs queued (target: under
  1 KB), in a fresh process: in this one the memory freed by the runs above would be
  reused and hide part of the growth.

Run: ``python benchmarks/bench_memory_queue.py`` (``--quick`` for a short run,
``--parts`` for the breakdown only).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import subprocess
import sys
import time

import anyio
from _chart import bar_chart

import hyperqueue as hq


async def ceiling(n: int) -> float:
    q: asyncio.Queue[int] = asyncio.Queue()

    async def noop() -> None:
        return None

    async def consumer() -> None:
        while True:
            await q.get()
            await noop()
            q.task_done()

    consumers = [asyncio.create_task(consumer()) for _ in range(10)]
    start = time.perf_counter()
    for i in range(n):
        await q.put(i)
    await q.join()
    elapsed = time.perf_counter() - start
    for task in consumers:
        task.cancel()
    await asyncio.gather(*consumers, return_exceptions=True)
    return n / elapsed


async def ceiling_drain(n: int) -> tuple[float, float]:
    """Items per second of the lean drain, on the wall clock and on CPU time."""
    q: asyncio.Queue[int] = asyncio.Queue()

    async def noop() -> None:
        return None

    async def consumer() -> None:
        while True:
            await q.get()
            await noop()
            q.task_done()

    start, start_cpu = time.perf_counter(), time.process_time()
    for i in range(n):
        q.put_nowait(i)
    consumers = [asyncio.create_task(consumer()) for _ in range(10)]
    await q.join()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    for task in consumers:
        task.cancel()
    await asyncio.gather(*consumers, return_exceptions=True)
    return n / elapsed, n / cpu


async def hyperqueue_drain(n: int) -> tuple[float, float]:
    """Jobs per second of the drain, on the wall clock and on CPU time."""
    queue = hq.Queue()
    ran = 0
    all_ran = anyio.Event()

    @queue.task
    async def work(x: int) -> None:
        nonlocal ran
        ran += 1
        if ran == n:
            all_ran.set()

    async with queue:
        start, start_cpu = time.perf_counter(), time.process_time()
        for i in range(n):
            await work.enqueue(i)
        async with queue.worker(concurrency=10):
            await all_ran.wait()
        # the drain stored every outcome
        elapsed, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    assert (await queue.stats())["default"].completed == n
    return n / elapsed, n / cpu


async def drain_parts(n: int) -> dict[str, float]:
    """CPU microseconds per job of each part of a drain (see the module docstring)."""
    queue = hq.Queue()
    ran = 0
    all_ran = anyio.Event()

    @queue.task
    async def work(x: int) -> None:
        nonlocal ran
        ran += 1
        if ran == n:
            all_ran.set()

    cpu = time.process_time
    parts: dict[str, float] = {}
    async with queue:
        start = cpu()
        for i in range(n):
            await work.enqueue(i)
        parts["enqueue phase: await work.enqueue(i)"] = cpu() - start
        start = cpu()
        async with queue.worker(concurrency=10):
            await all_ran.wait()
        parts["run phase: pool of 10 (claim, run, store outcomes)"] = cpu() - start
    # the storage alone, on jobs of the same task built (not stored) by the queue
    storage = hq.MemoryStorage()
    jobs = queue.build(hq.Submission(task="work", args=(i,)) for i in range(n))
    now = time.time()
    start = cpu()
    for job in jobs:  # the call a queue on the memory storage makes: no coroutine
        storage._enqueue_one(job, now, None, None)
    parts["  of enqueue: MemoryStorage._enqueue_one"] = cpu() - start
    claimed: list[hq.Job] = []
    start = cpu()
    while batch := await storage.claim(None, limit=100, now=now, lease=30.0, worker="w"):
        claimed += batch
    parts["  of run: MemoryStorage.claim, 100 a call"] = cpu() - start
    done = [hq.Outcome(id=j.id, token=j.token, status=hq.JobStatus.COMPLETED) for j in claimed]
    start = cpu()
    for i in range(0, len(done), 100):
        await storage.finish(done[i : i + 100], now=now)
    parts["  of run: MemoryStorage.finish, 100 a call"] = cpu() - start
    return {name: seconds / n * 1e6 for name, seconds in parts.items()}


def print_parts(n: int, repeats: int) -> None:
    print(f"where a drained job's time goes, CPU us per job, N={n}, best of {repeats}")
    for backend in ("asyncio", "trio"):
        runs = [anyio.run(drain_parts, n, backend=backend) for _ in range(repeats)]
        for name in runs[0]:
            print(f"{backend:8} {name:54} {min(run[name] for run in runs):6.2f}")


def argument_check_us() -> float:
    queue = hq.Queue()

    @queue.task
    async def work(x: int) -> None:
        return None

    check = work.signature.check
    loops = 200_000
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for i in range(loops):
            check((i,), {})
        best = min(best, time.perf_counter() - start)
    return best / loops * 1e6


async def hyperqueue_end_to_end(n: int) -> float:
    queue = hq.Queue()
    ran = 0
    all_ran = anyio.Event()

    @queue.task
    async def noop() -> None:
        nonlocal ran
        ran += 1
        if ran == n:
            all_ran.set()

    async with queue, queue.worker(concurrency=10):
        start = time.perf_counter()
        for _ in range(n):
            last = await noop.enqueue()
        await all_ran.wait()
        await queue.wait(last.id)  # outcomes are stored in order: the last one is in
        elapsed = time.perf_counter() - start
    assert (await queue.stats())["default"].completed == n
    return n / elapsed


async def latency(samples: int, rate: float) -> tuple[float, float]:
    queue = hq.Queue()
    delays: list[float] = []

    @queue.task
    async def stamp(sent: float) -> None:
        delays.append(time.perf_counter() - sent)

    async with queue, queue.worker(concurrency=10):
        for _ in range(samples):
            job = await stamp.enqueue(time.perf_counter())
            await anyio.sleep(1 / rate)
        await queue.wait(job.id)
    delays.sort()
    return delays[len(delays) // 2] * 1e3, delays[int(len(delays) * 0.99)] * 1e3


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


async def memory_per_pending_job(n: int) -> float:
    queue = hq.Queue()

    @queue.task
    async def noop() -> None:
        return None

    gc.collect()
    before = rss_bytes()
    for _ in range(n):
        await noop.enqueue()
    gc.collect()
    after = rss_bytes()
    assert (await queue.stats())["default"].pending == n
    return (after - before) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--memory-jobs", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--parts", action="store_true", help="only the per-part breakdown")
    parser.add_argument("--memory-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_only:  # the child process of the memory figure
        print(anyio.run(memory_per_pending_job, args.memory_jobs))
        return
    if args.quick:
        args.repeats, args.memory_jobs = 3, 100_000
    if args.parts:
        print_parts(args.n, args.repeats)
        return

    print(f"python {sys.version.split()[0]}, N={args.n}, concurrency 10, median of {args.repeats}")
    ceilings, ours, ours_trio = [], [], []
    for _ in range(args.repeats):  # interleaved so drift hits both alike
        ceilings.append(asyncio.run(ceiling(args.n)))
        ours.append(anyio.run(hyperqueue_end_to_end, args.n))
        ours_trio.append(anyio.run(hyperqueue_end_to_end, args.n, backend="trio"))
    c, h, t = (statistics.median(x) for x in (ceilings, ours, ours_trio))
    print(f"ceiling   asyncio.Queue, 10 consumers     {c:>12,.0f} items/s")
    print(
        f"hyperqueue memory, asyncio, end to end    {h:>12,.0f} jobs/s   "
        f"ratio {h / c:.3f}  (target >= 0.125)"
    )
    print(f"hyperqueue memory, trio, end to end       {t:>12,.0f} jobs/s   ratio {t / c:.3f}")

    drains, ours_drain, ours_drain_trio = [], [], []
    for _ in range(args.repeats):
        drains.append(asyncio.run(ceiling_drain(args.n)))
        ours_drain.append(anyio.run(hyperqueue_drain, args.n))
        ours_drain_trio.append(anyio.run(hyperqueue_drain, args.n, backend="trio"))
    d, hd, td = (
        statistics.median(x[0] for x in runs) for runs in (drains, ours_drain, ours_drain_trio)
    )
    dc, hdc, tdc = (
        statistics.median(x[1] for x in runs) for runs in (drains, ours_drain, ours_drain_trio)
    )
    print(f"ceiling   drain: put_nowait, 10 consumers {d:>12,.0f} items/s   (CPU time: {dc:,.0f})")
    print(
        f"hyperqueue drain, int argument, asyncio   {hd:>12,.0f} jobs/s   "
        f"ratio {hd / d:.3f}, on CPU time {hdc / dc:.3f}  (target >= 0.125)"
    )
    print(
        f"hyperqueue drain, int argument, trio      {td:>12,.0f} jobs/s   "
        f"ratio {td / d:.3f}, on CPU time {tdc / dc:.3f}  (target >= 0.1)"
    )
    print(f"argument check of one int                 {argument_check_us():>8.2f} us  (target < 1)")
    bar_chart(
        "memory",
        f"In memory, N={args.n:,} no-op jobs, concurrency 10, median of {args.repeats}",
        {
            "ceiling: asyncio.Queue, put while 10 consume": c,
            "hyperqueue, enqueue while a pool runs (asyncio)": h,
            "hyperqueue, enqueue while a pool runs (trio)": t,
            "ceiling: asyncio.Queue, put_nowait then drain": d,
            "hyperqueue, enqueue then drain (asyncio)": hd,
            "hyperqueue, enqueue then drain (trio)": td,
        },
    )

    p50, p99 = anyio.run(latency, 1000 if not args.quick else 300, 200.0)
    print(
        f"enqueue-to-start at 200 jobs/s            p50 {p50:.3f} ms  p99 {p99:.3f} ms"
        "  (target p99 < 1 ms)"
    )

    child = [sys.executable, __file__, "--memory-only", "--memory-jobs", str(args.memory_jobs)]
    per_job = float(subprocess.run(child, capture_output=True, text=True, check=True).stdout)
    print(
        f"memory per pending job ({args.memory_jobs:,} queued)   {per_job:>8,.0f} bytes"
        "  (target < 1,024)"
    )


if __name__ == "__main__":
    main()
