"""Jobs per second through one PostgreSQL server: hyperqueue against its peers and a raw ceiling.

Measures, in one run against the same server, each contender in a fresh database it
creates and drops (``CREATE DATABASE bench_<name>_<random>``), N no-op jobs (5,000 by
default), concurrency 10, default settings. A contender enqueues N jobs (its normal way,
one job per call; then, where it has one, its batch way, 100 jobs per call, as a second
figure), then one worker with concurrency 10 runs them all. End to end = N / (enqueue
time + run time); the run ends when the last outcome is stored (the worker has drained).

- ceiling: asyncpg alone on a minimal jobs table (insert; claim with ``FOR UPDATE SKIP
  LOCKED LIMIT n`` + ``UPDATE ... RETURNING``; mark done), 10 concurrent consumers, each
  on its own connection. Once with one job per statement, once with 100 per statement:
  the second is the ceiling a batching queue can approach.
- hyperqueue: ``hq.Queue(PostgresStorage(dsn))``, ``await noop.enqueue(i)`` or
  ``queue.enqueue_many``, then ``async with queue.worker(concurrency=10)`` (default
  settings: the claim size adapts); once more with ``prefetch=0`` (claims for the free
  runners only), to show what the adaptive claim gains.
- procrastinate (``PsycopgConnector``): ``defer_async`` or ``batch_defer_async``, then
  ``run_worker_async(concurrency=10, wait=False)``, which returns when the queue is empty.
- SAQ's PostgreSQL queue: ``queue.enqueue`` (SAQ has no batch insert), then a ``Worker``
  with concurrency 10, counted in its ``after_process`` hook (after the job's row is done).
- pgqueuer (``AsyncpgDriver``): ``Queries.enqueue`` with one job or lists of 100, then
  ``PgQueuer.run()`` with its defaults (batch 10, no cap on jobs in flight), shut down
  when the N-th job ran; once more with ``concurrency_limit=10`` on the entrypoint, the
  nearest thing it has to "concurrency 10".
- latency: enqueue-to-start across processes with hyperqueue. A worker pool runs in a
  child process; this process enqueues 200 jobs/s for 3 s; each job returns the time it
  started, and latency is that minus the job's ``created_at``. p50 / p99 in ms.
- processes: hyperqueue's run phase with 1, 2 and 4 worker processes (each a pool with
  concurrency 10) on one database holding 2N jobs; the parent polls ``queue.stats()``
  every 10 ms. With the CPU the database's backends and the workers used, in cores, to
  show whether PostgreSQL or the machine is the limit.

For the run phases the table also gives the CPU time (from ``/proc``) of the server
backends connected to the contender's database, and of the client, divided by the run's
wall time: "cores busy". Each figure is the median of ``--repeats`` runs (3 by
default), repeats interleaved across contenders; ratios are against figures of the same run.
The server's ``autovacuum`` setting is printed (this machine's server runs with it off).

Run: ``.venv/bin/python benchmarks/bench_postgres.py`` (6 to 8 minutes; ``pip install
'hyperqueue-jobs[postgres]' procrastinate 'saq[postgres]' pgqueuer 'psycopg[binary]'``).
``--quick`` uses N=1,000 and 1 repeat; ``--only peers`` (or a comma list of ceiling,
hyperqueue, procrastinate, saq, pgqueuer, latency, processes) runs a subset;
``--dsn`` names the server (default ``postgresql://postgres@127.0.0.1:5432/test``).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import logging
import os
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import anyio
import asyncpg
from _chart import bar_chart

import hyperqueue as hq

CONCURRENCY = 10
CHUNK = 100  # jobs per call for every batch enqueue, and per statement for the ceiling
DEFAULT_DSN = os.environ.get("HQ_BENCH_DSN", "postgresql://postgres@127.0.0.1:5432/test")
PEERS = ("ceiling", "procrastinate", "saq", "pgqueuer")
PARTS = ("ceiling", "hyperqueue", "procrastinate", "saq", "pgqueuer", "latency", "processes")
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- databases and CPU accounting --------------------------------------------------------


def with_database(dsn: str, database: str) -> str:
    return urlsplit(dsn)._replace(path="/" + database).geturl()


def create_database(admin: str, name: str) -> str:
    database = f"bench_{name}_{secrets.token_hex(4)}"

    async def create() -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f'CREATE DATABASE "{database}"')
        finally:
            await conn.close()

    asyncio.run(create())
    return database


def drop_database(admin: str, database: str) -> None:
    async def drop() -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), 0 if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()  # fields[0] is field 3 (state)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def backends_of(database: str) -> list[int]:
    """Server processes serving ``database`` (their title names it: "postgres: ... db host")."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if title.startswith("postgres:") and f" {database} " in title:
            pids.append(int(entry.name))
    return pids


@dataclass
class Meter:
    """Marks the phases of one run and the CPU used by the database's backends and clients."""

    database: str
    clients: list[int] = field(default_factory=lambda: [os.getpid()])
    started: float = 0.0
    enqueued_at: float = 0.0
    done_at: float = 0.0
    _before: dict[int, float] = field(default_factory=dict)
    server_cpu: float = 0.0
    client_cpu: float = 0.0

    def start(self) -> None:
        self.started = time.perf_counter()

    def enqueued(self) -> None:
        self._before = {pid: cpu_seconds(pid) for pid in backends_of(self.database)}
        self._before.update({-pid: cpu_seconds(pid) for pid in self.clients})
        self.enqueued_at = time.perf_counter()
        if not self.started:
            self.started = self.enqueued_at

    def done(self) -> None:
        self.done_at = time.perf_counter()
        self.server_cpu = sum(
            cpu_seconds(pid) - self._before.get(pid, 0.0) for pid in backends_of(self.database)
        )
        self.client_cpu = sum(cpu_seconds(pid) - self._before[-pid] for pid in self.clients)

    @property
    def enqueue_time(self) -> float:
        return self.enqueued_at - self.started

    @property
    def run_time(self) -> float:
        return self.done_at - self.enqueued_at


@dataclass(frozen=True)
class Result:
    enqueue: float  # seconds
    run: float  # seconds
    server_cores: float  # backends' CPU seconds / run seconds
    client_cores: float


Bench = Callable[[str, int, Meter], Awaitable[None]]


def measure(admin: str, name: str, bench: Bench, n: int) -> Result:
    database = create_database(admin, name)
    try:
        meter = Meter(database)
        asyncio.run(bench(with_database(admin, database), n, meter))
    finally:
        drop_database(admin, database)
    return Result(
        meter.enqueue_time,
        meter.run_time,
        meter.server_cpu / meter.run_time,
        meter.client_cpu / meter.run_time,
    )


# -- ceiling: asyncpg on a minimal jobs table ------------------------------------------------

RAW_SCHEMA = """
CREATE TABLE jobs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task text NOT NULL,
    args jsonb NOT NULL,
    status text NOT NULL DEFAULT 'pending',
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    finished_at timestamptz
);
CREATE INDEX jobs_pending ON jobs (id) WHERE status = 'pending';
"""
RAW_INSERT_ONE = "INSERT INTO jobs (task, args) VALUES ('noop', $1::jsonb)"
RAW_INSERT_MANY = "INSERT INTO jobs (task, args) SELECT 'noop', a FROM unnest($1::jsonb[]) AS a"
RAW_CLAIM = (
    "UPDATE jobs SET status = 'running', started_at = now() WHERE id IN ("
    "SELECT id FROM jobs WHERE status = 'pending' ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"
    ") RETURNING id, args"
)
RAW_DONE = "UPDATE jobs SET status = 'done', finished_at = now() WHERE id = ANY($1::bigint[])"


async def raw_asyncpg(per_statement: int, dsn: str, n: int, meter: Meter) -> None:
    conns = [await asyncpg.connect(dsn) for _ in range(CONCURRENCY)]
    try:
        await conns[0].execute(RAW_SCHEMA)
        finished = 0

        async def noop(args: str) -> None:
            nonlocal finished
            finished += 1

        meter.start()
        if per_statement == 1:
            for i in range(n):
                await conns[0].execute(RAW_INSERT_ONE, f"[{i}]")
        else:
            for i in range(0, n, per_statement):
                chunk = [f"[{j}]" for j in range(i, min(n, i + per_statement))]
                await conns[0].execute(RAW_INSERT_MANY, chunk)
        meter.enqueued()

        async def consume(conn: asyncpg.Connection) -> None:
            while rows := await conn.fetch(RAW_CLAIM, per_statement):
                for row in rows:
                    await noop(row["args"])
                await conn.execute(RAW_DONE, [row["id"] for row in rows])

        await asyncio.gather(*(consume(conn) for conn in conns))
        meter.done()
        assert finished == n, finished
    finally:
        for conn in conns:
            await conn.close()


# -- hyperqueue ------------------------------------------------------------------------------


def make_queue(dsn: str) -> hq.Queue:
    from hyperqueue_postgres import PostgresStorage

    queue = hq.Queue(PostgresStorage(dsn))

    @queue.task
    async def noop(i: int) -> None:
        pass

    @queue.task
    async def stamp() -> float:
        return time.time()

    return queue


async def hyperqueue_bench(
    batch: bool, dsn: str, n: int, meter: Meter, *, prefetch: int | Literal["auto"] = "auto"
) -> None:
    from hyperqueue_postgres import PostgresStorage

    queue = hq.Queue(PostgresStorage(dsn))
    done = anyio.Event()
    finished = 0

    @queue.task
    async def noop(i: int) -> None:
        nonlocal finished
        finished += 1
        if finished == n:
            done.set()

    async with queue:
        meter.start()
        if batch:
            for i in range(0, n, CHUNK):
                await queue.enqueue_many(
                    hq.Submission(task="noop", args=(j,)) for j in range(i, min(n, i + CHUNK))
                )
        else:
            for i in range(n):
                await noop.enqueue(i)
        meter.enqueued()
        async with queue.worker(concurrency=CONCURRENCY, prefetch=prefetch):
            await done.wait()
        meter.done()  # after the drain stored the last outcomes
        counts = (await queue.stats())["default"]
        assert counts.completed == n, counts


# -- peers -----------------------------------------------------------------------------------


async def procrastinate_bench(batch: bool, dsn: str, n: int, meter: Meter) -> None:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))
    finished = 0

    @app.task(name="noop")
    async def noop(i: int) -> None:
        nonlocal finished
        finished += 1

    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        meter.start()
        if batch:
            for i in range(0, n, CHUNK):
                await noop.batch_defer_async(*({"i": j} for j in range(i, min(n, i + CHUNK))))
        else:
            for i in range(n):
                await noop.defer_async(i=i)
        meter.enqueued()
        await app.run_worker_async(
            concurrency=CONCURRENCY, wait=False, install_signal_handlers=False
        )
        meter.done()
        async with app.connector.pool.connection() as conn:  # type: ignore[attr-defined]
            cursor = await conn.execute(
                "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
            )
            row = await cursor.fetchone()
    assert finished == n and row is not None and row[0] == n, (finished, row)


async def saq_bench(dsn: str, n: int, meter: Meter) -> None:
    import saq

    queue = saq.Queue.from_url(dsn)
    done = asyncio.Event()
    finished = 0

    async def noop(ctx: Any, *, i: int) -> None:
        pass

    async def after_process(ctx: Any) -> None:  # runs once the job's row says complete
        nonlocal finished
        finished += 1
        if finished == n:
            done.set()

    await queue.connect()
    try:
        meter.start()
        for i in range(n):
            await queue.enqueue("noop", i=i)
        meter.enqueued()
        worker = saq.Worker(
            queue, [("noop", noop)], concurrency=CONCURRENCY, after_process=after_process
        )
        running = asyncio.create_task(worker.start())
        await done.wait()
        meter.done()
        await worker.stop()
        await running
    finally:
        await queue.disconnect()
    assert finished == n, finished


async def pgqueuer_bench(batch: bool, limit: int, dsn: str, n: int, meter: Meter) -> None:
    from pgqueuer import PgQueuer
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.models import Job
    from pgqueuer.queries import Queries

    producer = await asyncpg.connect(dsn)
    consumer = await asyncpg.connect(dsn)
    try:
        queries = Queries(AsyncpgDriver(producer))
        await queries.install()
        pgq = PgQueuer(AsyncpgDriver(consumer))
        finished = 0

        @pgq.entrypoint("noop", concurrency_limit=limit)
        async def noop(job: Job) -> None:
            nonlocal finished
            finished += 1
            if finished == n:
                pgq.shutdown.set()

        meter.start()
        if batch:
            for i in range(0, n, CHUNK):
                size = min(n, i + CHUNK) - i
                await queries.enqueue(
                    ["noop"] * size,
                    [str(j).encode() for j in range(i, i + size)],
                    [0] * size,
                )
        else:
            for i in range(n):
                await queries.enqueue("noop", str(i).encode())
        meter.enqueued()
        await pgq.run()  # returns once the shutdown flushed the buffered job log
        meter.done()
        left = await producer.fetchval("SELECT count(*) FROM pgqueuer")
        assert finished == n and left == 0, (finished, left)
    finally:
        await producer.close()
        await consumer.close()


CONTENDERS: dict[str, list[tuple[str, Bench]]] = {
    "ceiling": [
        ("raw asyncpg, 1 job per statement", partial(raw_asyncpg, 1)),
        ("raw asyncpg, 100 per statement (ceiling)", partial(raw_asyncpg, CHUNK)),
    ],
    "hyperqueue": [
        ("hyperqueue, enqueue one per call", partial(hyperqueue_bench, False)),
        ("hyperqueue, enqueue_many (100 per call)", partial(hyperqueue_bench, True)),
        (  # not a default: left out of the targets
            "hyperqueue, enqueue_many, prefetch=0",
            partial(hyperqueue_bench, True, prefetch=0),
        ),
    ],
    "procrastinate": [
        ("procrastinate, defer_async", partial(procrastinate_bench, False)),
        ("procrastinate, batch_defer_async (100)", partial(procrastinate_bench, True)),
    ],
    "saq": [("SAQ (PostgresQueue), enqueue", saq_bench)],
    "pgqueuer": [
        ("pgqueuer, enqueue one per call", partial(pgqueuer_bench, False, 0)),
        ("pgqueuer, enqueue lists of 100", partial(pgqueuer_bench, True, 0)),
        ("pgqueuer, lists of 100, concurrency_limit=10", partial(pgqueuer_bench, True, 10)),
    ],
}


# -- hyperqueue across processes -------------------------------------------------------------


async def child_worker(dsn: str) -> None:
    """A child process: a pool that starts on a line from stdin and runs until stdin closes."""
    queue = make_queue(dsn)
    async with queue:
        print("ready", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)
        async with queue.worker(concurrency=CONCURRENCY):
            print("running", flush=True)  # registered and listening: idle from here
            await anyio.to_thread.run_sync(sys.stdin.read)


def spawn_workers(dsn: str, count: int) -> list[subprocess.Popen[str]]:
    children = [
        subprocess.Popen(
            [sys.executable, __file__, "--child-worker", dsn],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    for child in children:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line == "ready\n", line
    return children


def start_workers(children: list[subprocess.Popen[str]]) -> None:
    """Start the children's pools and wait until each one runs (so a measurement sees
    idle pools, not their start-up)."""
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    for child in children:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line == "running\n", line


def stop_workers(children: list[subprocess.Popen[str]]) -> None:
    for child in children:
        if child.stdin is not None:
            child.stdin.close()
    for child in children:
        child.wait(30)
        if child.stdout is not None:
            child.stdout.close()


async def processes_bench(count: int, dsn: str, n: int, meter: Meter) -> None:
    queue = make_queue(dsn)
    async with queue:
        for i in range(0, n, CHUNK):
            await queue.enqueue_many(
                hq.Submission(task="noop", args=(j,)) for j in range(i, min(n, i + CHUNK))
            )
        children = spawn_workers(dsn, count)
        try:
            meter.clients = [child.pid for child in children]
            meter.enqueued()  # the run phase only: the jobs are already stored
            start_workers(children)
            # other processes run the jobs: no event reaches this one, so poll
            while (await queue.stats())["default"].completed < n:  # noqa: ASYNC110
                await anyio.sleep(0.01)
            meter.done()
        finally:
            stop_workers(children)


# -- latency across processes ----------------------------------------------------------------


async def produce_at(dsn: str, rate: float, seconds: float) -> list[float]:
    """Enqueue ``rate`` jobs per second; each one's start minus its creation, in ms."""
    queue = make_queue(dsn)
    async with queue:
        jobs = []
        start = time.perf_counter()
        for i in range(int(rate * seconds)):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await anyio.sleep(delay)
            jobs.append(await queue.tasks["stamp"].enqueue())
        delays = []
        for job in jobs:
            done = await queue.wait(job.id, timeout=30)
            delays.append((done.result - job.created_at) * 1000)
    return delays


def latency(admin: str, rate: float = 200.0, seconds: float = 3.0) -> tuple[float, float]:
    database = create_database(admin, "latency")
    dsn = with_database(admin, database)
    try:
        asyncio.run(migrate(dsn))
        children = spawn_workers(dsn, 1)
        try:
            start_workers(children)
            delays = asyncio.run(produce_at(dsn, rate, seconds))
        finally:
            stop_workers(children)
    finally:
        drop_database(admin, database)
    delays.sort()
    return delays[len(delays) // 2], delays[int(len(delays) * 0.99)]


async def migrate(dsn: str) -> None:
    async with make_queue(dsn):
        pass


# -- report ----------------------------------------------------------------------------------


def bar(value: float, top: float, width: int = 40) -> str:
    return "█" * max(1, round(width * value / top))


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "-"


async def server_settings(admin: str) -> dict[str, str]:
    conn = await asyncpg.connect(admin)
    try:
        out = {"version": await conn.fetchval("SHOW server_version")}
        for name in ("autovacuum", "synchronous_commit", "fsync", "shared_buffers"):
            out[name] = await conn.fetchval(f"SHOW {name}")
        return out
    finally:
        await conn.close()


def parse_only(text: str | None) -> list[str]:
    if not text:
        return list(PARTS)
    chosen: list[str] = []
    for word in text.split(","):
        word = word.strip()
        names = PEERS if word == "peers" else (word,)
        for name in names:
            if name not in PARTS:
                raise SystemExit(f"--only: unknown part {name!r}; known: peers, {', '.join(PARTS)}")
            if name not in chosen:
                chosen.append(name)
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=None, help="jobs per run (default 5,000)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="N=1,000, 1 repeat")
    parser.add_argument("--only", help="a comma list of parts; 'peers' = the peers and ceiling")
    parser.add_argument("--dsn", default=DEFAULT_DSN, help="server and a database to connect to")
    parser.add_argument("--child-worker", metavar="DSN", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_worker:
        asyncio.run(child_worker(args.child_worker))
        return
    n = args.n or (1_000 if args.quick else 5_000)
    repeats = 1 if args.quick else args.repeats
    parts = parse_only(args.only)
    # quiet: procrastinate warns that its App lives in __main__ (only matters for workers
    # in other processes), SAQ that its idle dequeue tasks were cancelled at stop
    logging.getLogger("procrastinate").setLevel(logging.ERROR)
    logging.getLogger("saq").setLevel(logging.ERROR)
    admin = args.dsn

    settings = asyncio.run(server_settings(admin))
    print(f"N={n:,} no-op jobs, concurrency {CONCURRENCY}, median of {repeats}")
    print(
        f"PostgreSQL {settings['version']} at {urlsplit(admin).hostname}: autovacuum "
        f"{settings['autovacuum']}, synchronous_commit {settings['synchronous_commit']}, "
        f"fsync {settings['fsync']}, shared_buffers {settings['shared_buffers']}"
    )
    print(
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; hyperqueue "
        f"{version('hyperqueue-jobs')}, asyncpg {version('asyncpg')}, procrastinate "
        f"{version('procrastinate')}, saq {version('saq')}, pgqueuer {version('pgqueuer')}, "
        f"psycopg {version('psycopg')}"
    )
    print()

    runs: dict[str, list[Result]] = {}
    for _ in range(repeats):  # interleaved, so drift spreads over every contender
        for part in parts:
            for label, bench in CONTENDERS.get(part, []):
                runs.setdefault(label, []).append(measure(admin, part, bench, n))

    e2e: dict[str, float] = {}
    if runs:
        print(
            f"{'':46} {'enqueue/s':>9} {'run/s':>7} {'end to end':>10} "
            f"{'PG cores':>8} {'client':>6}  (cores busy in the run phase)"
        )
        for label, results in runs.items():
            enqueue = statistics.median(r.enqueue for r in results)
            run = statistics.median(r.run for r in results)
            e2e[label] = n / statistics.median(r.enqueue + r.run for r in results)
            server = statistics.median(r.server_cores for r in results)
            client = statistics.median(r.client_cores for r in results)
            print(
                f"{label:46} {n / enqueue:9,.0f} {n / run:7,.0f} {e2e[label]:10,.0f} "
                f"{server:8.2f} {client:6.2f}"
            )
        print()
        top = max(e2e.values())
        print("end to end, jobs/s")
        for label, rate in e2e.items():
            print(f"{label:46} {rate:7,.0f}  {bar(rate, top)}")
        print()
        report_ratios(e2e)
        bar_chart(
            "postgres",
            f"N={n:,} no-op jobs end to end on one PostgreSQL server, concurrency "
            f"{CONCURRENCY}, default settings unless named (median of {repeats})",
            e2e,
        )

    if "processes" in parts:
        print(f"hyperqueue run phase with worker processes (2N = {2 * n:,} jobs, concurrency 10)")
        print(f"{'processes':>9} {'jobs/s':>7} {'x 1':>5} {'PG cores':>8} {'workers':>7}")
        base = 0.0
        for count in (1, 2, 4):
            results = [
                measure(admin, f"procs{count}", partial(processes_bench, count), 2 * n)
                for _ in range(repeats)
            ]
            rate = 2 * n / statistics.median(r.run for r in results)
            base = base or rate
            server = statistics.median(r.server_cores for r in results)
            client = statistics.median(r.client_cores for r in results)
            print(
                f"{count:9} {rate:7,.0f} {rate / base:5.2f} {server:8.2f} {client:7.2f}  "
                f"{bar(rate, base * 2.5, 30)}"
            )
        print()

    if "latency" in parts:
        lat = [latency(admin) for _ in range(repeats)]
        p50 = statistics.median(p for p, _ in lat)
        p99 = statistics.median(p for _, p in lat)
        print(
            f"enqueue-to-start across processes at 200 jobs/s for 3 s: p50 {p50:.2f} ms, "
            f"p99 {p99:.2f} ms (target p99 < 10 ms)"
        )


def report_ratios(e2e: dict[str, float]) -> None:
    """hyperqueue against each figure, like for like and best against best."""
    one = e2e.get("hyperqueue, enqueue one per call")
    many = e2e.get("hyperqueue, enqueue_many (100 per call)")
    ceiling = e2e.get("raw asyncpg, 100 per statement (ceiling)")
    if one is None or many is None:
        if ceiling:
            print("peers of the ceiling (end to end):")
            for label, rate in e2e.items():
                print(f"  {label:46} {rate / ceiling:6.1%} of the ceiling")
            print()
        return
    print(f"{'hyperqueue / figure':46} {'one per call':>12} {'batch':>7}")
    for label, rate in e2e.items():
        if not label.startswith("hyperqueue"):
            print(f"{label:46} {one / rate:12.2f} {many / rate:7.2f}")
    print()

    def best(prefix: str) -> float | None:
        rates = [rate for label, rate in e2e.items() if label.startswith(prefix)]
        return max(rates) if rates else None

    best_hq = max(one, many)
    targets = (("procrastinate", 10.0), ("SAQ", 10.0), ("pgqueuer, enqueue", 1.5))
    for prefix, target in targets:
        peer = best(prefix)
        if peer:
            verdict = "met" if best_hq / peer >= target else "NOT met"
            print(
                f"best hyperqueue / best {prefix.split(',')[0]}: {best_hq / peer:5.1f}x "
                f"(target >= {target}x: {verdict})"
            )
    if ceiling:
        print(f"best hyperqueue / raw ceiling: {best_hq / ceiling:.0%}")
    print()


if __name__ == "__main__":
    main()
