"""What the event bus costs the code that publishes, per event.

Measures, per call, the median of several repeats:

- the queue's guard when nobody listens (``if bus.active: bus.publish(Event(...))`` with
  ``active`` False), against a bare loop and against building the event anyway;
- ``publish`` of a prebuilt event with 0 subscribers, 1 inline (sync) handler, 1 async
  handler (the publish call alone, and end to end until the handler ran), 1 stream;
- peers in the same run: a direct function call (the ceiling for an inline handler),
  blinker's ``send`` and pyee's ``emit`` when installed, and for async delivery an
  anyio memory object stream, trio's memory channel and ``asyncio.Queue``.

Run: ``.venv/bin/python benchmarks/bench_events.py [--quick]``. Takes about 25 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import anyio

from hyperqueue import Job
from hyperqueue._events import EventBus, JobCompleted

N = 20_000 if "--quick" in sys.argv else 200_000
REPEATS = 3 if "--quick" in sys.argv else 5
JOB = Job(id="j1", task="t")
EVENT = JobCompleted(at=0.0, job=JOB)


def per_call(loop: Callable[[int], None]) -> Callable[[], float]:
    def run() -> float:
        start = time.perf_counter_ns()
        loop(N)
        return (time.perf_counter_ns() - start) / N

    return run


# -- sync figures ------------------------------------------------------------------


def bare_loop(n: int) -> None:
    for _ in range(n):
        pass


def guard_inactive(n: int) -> None:
    bus = EventBus()
    job = JOB
    for i in range(n):
        if bus.active:
            bus.publish(JobCompleted(at=float(i), job=job))


def build_event(n: int) -> None:
    job = JOB
    for i in range(n):
        JobCompleted(at=float(i), job=job)


def publish_with(subscribe: Callable[[EventBus], Any]) -> Callable[[int], None]:
    def loop(n: int) -> None:
        bus = EventBus()
        subscribe(bus)
        publish, event = bus.publish, EVENT
        for _ in range(n):
            publish(event)

    return loop


def history_loop(n: int) -> None:
    bus = EventBus(history=1000)
    publish, event = bus.publish, EVENT
    for _ in range(n):
        publish(event)


def noop(event: Any) -> None:
    pass


def direct_call(n: int) -> None:
    handler, event = noop, EVENT
    for _ in range(n):
        handler(event)


def blinker_send(n: int) -> None:
    import blinker

    signal = blinker.Signal()
    signal.connect(noop)
    send, event = signal.send, EVENT
    for _ in range(n):
        send(event)


def pyee_emit(n: int) -> None:
    import pyee

    emitter = pyee.EventEmitter()
    emitter.on("job.completed", noop)
    emit, event = emitter.emit, EVENT
    for _ in range(n):
        emit("job.completed", event)


def installed(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


# -- async figures -----------------------------------------------------------------

CHUNK = 1000  # events per round: a realistic buffer, drained between rounds


class Rounds:
    """Counts handled events and wakes the measuring task after each round."""

    def __init__(self) -> None:
        self.count = 0
        self.round = anyio.Event()

    def hit(self) -> None:
        self.count += 1
        if self.count % CHUNK == 0:
            self.round.set()

    async def measure(self, put: Callable[[], object], n: int) -> tuple[float, float]:
        """(publish ns, end-to-end ns) per event: ``put`` CHUNK events, wait until all
        are handled, repeat."""
        publishing = 0
        start = time.perf_counter_ns()
        for _ in range(n // CHUNK):
            self.round = anyio.Event()
            began = time.perf_counter_ns()
            for _ in range(CHUNK):
                put()
            publishing += time.perf_counter_ns() - began
            await self.round.wait()
        return publishing / n, (time.perf_counter_ns() - start) / n


async def noop_async(event: Any) -> None:
    pass


async def bus_async(n: int, backend: str) -> tuple[float, float]:
    rounds = Rounds()

    async def handler(event: Any) -> None:
        rounds.hit()

    async with EventBus() as bus:
        bus.subscribe_async(handler, buffer=CHUNK)
        return await rounds.measure(partial(bus.publish, EVENT), n)


async def bus_stream(n: int, backend: str) -> tuple[float, float]:
    rounds = Rounds()
    bus = EventBus()
    async with bus.stream(buffer=CHUNK) as events, anyio.create_task_group() as tg:

        async def consume() -> None:
            async for _, event in events:
                await noop_async(event)
                rounds.hit()

        tg.start_soon(consume)
        result = await rounds.measure(partial(bus.publish, EVENT), n)
        tg.cancel_scope.cancel()
    return result


async def anyio_stream(n: int, backend: str) -> tuple[float, float]:
    rounds = Rounds()
    send, receive = anyio.create_memory_object_stream[Any](CHUNK)
    async with send, receive, anyio.create_task_group() as tg:

        async def consume() -> None:
            async for _, event in receive:
                await noop_async(event)
                rounds.hit()

        tg.start_soon(consume)
        result = await rounds.measure(partial(send.send_nowait, (0, EVENT)), n)
        tg.cancel_scope.cancel()
    return result


async def native_queue(n: int, backend: str) -> tuple[float, float]:
    """asyncio.Queue or trio's memory channel, whichever loop runs."""
    rounds = Rounds()
    if backend == "trio":
        import trio

        send, receive = trio.open_memory_channel[Any](CHUNK)
        async with trio.open_nursery() as nursery:

            async def consume_trio() -> None:
                async for _, event in receive:
                    await noop_async(event)
                    rounds.hit()

            nursery.start_soon(consume_trio)
            result = await rounds.measure(partial(send.send_nowait, (0, EVENT)), n)
            nursery.cancel_scope.cancel()
        return result

    queue: asyncio.Queue[Any] = asyncio.Queue(CHUNK)

    async def consume_asyncio() -> None:
        while True:
            _, event = await queue.get()
            await noop_async(event)
            rounds.hit()

    task = asyncio.get_running_loop().create_task(consume_asyncio())
    result = await rounds.measure(partial(queue.put_nowait, (0, EVENT)), n)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return result


def interleaved(loops: dict[str, Callable[[int], None]]) -> dict[str, list[float]]:
    """ns per call of each loop, REPEATS times, the loops taking turns so that the
    machine's drift hits them alike."""
    runs: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(REPEATS):
        for name, loop in loops.items():
            runs[name].append(per_call(loop)())
    return runs


def ratio(runs: dict[str, list[float]], ours: str, theirs: str) -> float:
    """The median over repeats of ours / theirs, each pair measured side by side."""
    return statistics.median(a / b for a, b in zip(runs[ours], runs[theirs], strict=True))


def main() -> None:
    print(f"per event, median of {REPEATS} interleaved repeats x {N:,} events (ns)\n")
    loops: dict[str, Callable[[int], None]] = {
        "bare": bare_loop,
        "guard": guard_inactive,
        "build": build_event,
        "direct": direct_call,
        "zero": publish_with(lambda bus: None),
        "history": history_loop,
        "one": publish_with(lambda bus: bus.subscribe(noop)),
        "pattern": publish_with(lambda bus: bus.subscribe(noop, "job.*")),
        "others": publish_with(lambda bus: [bus.subscribe(noop, "worker.*") for _ in range(10)]),
    }
    if installed("blinker"):
        loops["blinker"] = blinker_send
    if installed("pyee"):
        loops["pyee"] = pyee_emit
    runs = interleaved(loops)
    ns = {name: statistics.median(values) for name, values in runs.items()}

    print("nobody listens (the queue's guard)")
    print(f"  bare loop                               {ns['bare']:8.1f}")
    print(
        f"  if bus.active: publish(Event(...))      {ns['guard']:8.1f}"
        f"   (+{ns['guard'] - ns['bare']:.1f} over the loop)"
    )
    print(
        f"  building the event anyway               {ns['build']:8.1f}"
        f"   the guard is {ratio(runs, 'build', 'guard'):.1f}x cheaper"
    )
    print("\npublish(prebuilt event), inline")
    print(f"  direct call of a no-op handler          {ns['direct']:8.1f}   (ceiling)")
    print(f"  0 subscribers                           {ns['zero']:8.1f}")
    print(f"  0 subscribers, history=1000             {ns['history']:8.1f}")
    print(
        f"  1 sync handler (wildcard)               {ns['one']:8.1f}"
        f"   {ratio(runs, 'one', 'direct'):.1f}x the ceiling"
    )
    print(f"  1 sync handler (tag pattern job.*)      {ns['pattern']:8.1f}")
    print(f"  10 handlers of other events             {ns['others']:8.1f}   (none called)")
    for name, label in (("blinker", "blinker Signal.send"), ("pyee", "pyee EventEmitter.emit")):
        if name in ns:
            print(
                f"  peer: {label + ', 1 receiver':<33} {ns[name]:8.1f}"
                f"   the bus is {ratio(runs, name, 'one'):.2f}x faster"
            )

    benches = {
        "async": bus_async,
        "stream": bus_stream,
        "anyio": anyio_stream,
        "native": native_queue,
    }
    for backend in ("asyncio", "trio"):
        pairs: dict[str, list[tuple[float, float]]] = {name: [] for name in benches}
        for _ in range(REPEATS):
            for name, bench in benches.items():
                pairs[name].append(anyio.run(bench, N, backend, backend=backend))
        pub = {name: [p for p, _ in values] for name, values in pairs.items()}
        e2e = {name: [e for _, e in values] for name, values in pairs.items()}

        def show(label: str, name: str) -> None:
            p, e = statistics.median(pub[name]), statistics.median(e2e[name])  # noqa: B023
            print(f"  {label:<38} {p:8.1f} / {e:8.1f}")

        peer = "asyncio.Queue" if backend == "asyncio" else "trio memory channel"
        print(f"\n1 async consumer on {backend}: publish call / end to end until handled")
        show("bus.subscribe_async", "async")
        show("bus.stream, read by receive()", "stream")
        show("peer: anyio memory object stream", "anyio")
        show(f"peer: {peer}", "native")
        for theirs, label in (("anyio", "anyio stream"), ("native", peer)):
            print(
                f"  async handler / {label}: publish {ratio(pub, 'async', theirs):.2f}x,"
                f" end to end {ratio(e2e, 'async', theirs):.2f}x"
            )


if __name__ == "__main__":
    main()
