"""Requests per second over HTTP: hyperqueue's job submission against Litestar's ceiling.

Measures, in one run, against the same ASGI server (uvicorn, one worker process, on
127.0.0.1, access log off), with ``wrk`` as the load generator (one thread, 32
keep-alive connections, 4 s per measurement):

- ceiling: a minimal Litestar endpoint, ``POST /echo``, that decodes a small JSON body
  into a msgspec Struct and returns it (201). Everything an HTTP API pays before it
  does any work of its own.
- submit: ``POST /api/v1/jobs`` of hyperqueue's app on a SQLite file
  (``{"task": "add", "args": [1, 2]}``), no workers in the process, so every request
  is one validated, durable enqueue (group commit shares transactions between
  concurrent requests).
- submit+run: the same with the app's worker pool (concurrency 10) running the jobs
  in the same process while they arrive.
- serve, full: ``hyperqueue serve`` as operators run it, with everything on: an API key
  sent on every request (operator role), a rate limit on the route (high enough never to
  refuse), Prometheus metrics, the audit log, request-size and header limits, the CSRF
  and Host checks, and its worker pool running the jobs.

Each figure is the median of ``--repeats`` runs (3 by default), each on a fresh file
and a fresh server process; ratios are against the ceiling of the same run. Latency is
wrk's p50 / p99. The server's CPU time per request, of all its threads and of the one
that runs its event loop, is read from ``/proc`` around each run: on a shared machine
it moves less than requests/s do. Run: ``.venv/bin/python benchmarks/bench_server.py`` (about 50 s;
needs ``wrk``: ``apt-get install wrk``). ``--quick``: 1 repeat of 2 s.

``--parts``: where a submission's time goes in the served app, without HTTP: the app is
called as an ASGI app by 32 concurrent callers in its own process (no uvicorn, no
sockets, no ``wrk``), and the CPU time of the thread that runs the event loop is
divided by the requests (the server's bottleneck: the worker pool and the audit's
writer run on it too; SQLite's threads are in the process figure). Parts are added one
at a time with the public API, ending with the app ``hyperqueue serve`` builds; each
row is the median of ``--repeats`` fresh processes (5 by default) of 5,000 requests.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
from _chart import bar_chart

CONNECTIONS = 32
BODY = '{"task": "add", "args": [1, 2]}'
TARGETS = {
    "ceiling": "/echo",
    "submit": "/api/v1/jobs",
    "submit+run": "/api/v1/jobs",
    "serve, full": "/api/v1/jobs",
}
API_KEY = "bench-key-0123456789abcdef"
FULL_CONFIG = f"""
[[keys]]
name = "bench"
key_hash = "{hashlib.sha256(API_KEY.encode()).hexdigest()}"
roles = ["operator"]

[rate_limits.routes]
"POST /api/v1/jobs" = "100000000/minute"
"""


# -- the servers (run in a child process: this script with --serve) -------------------------


class Echo(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    task: str
    args: list[Any] = []


def build_app(kind: str, db: Path) -> Any:
    from litestar import Litestar, post

    if kind == "ceiling":

        @post("/echo")
        async def echo(data: Echo) -> Echo:
            return data

        return Litestar([echo])

    from hyperqueue_litestar import create_app, demo_queue
    from hyperqueue_sqlite import SQLiteStorage

    queue = demo_queue(SQLiteStorage(db))
    return create_app(queue, workers=kind == "submit+run", concurrency=10)


# -- --parts: the served app in process, one part at a time --------------------------------

PARTS = {
    "open": "create_app + worker pool, no key (the bare API)",
    "keys": "+ an API key on every request, role checked",
    "limits": "+ a rate limit on the route",
    "events": "+ a subscriber of job events on the queue's bus",
    "metrics": "+ Prometheus metrics (job durations: a subscriber)",
    "audit": "+ the audit log on the job database",
    "serve": "hyperqueue serve's own app (everything on)",
}


def parts_app(part: str, folder: Path) -> Any:
    """The app of ``part``: each adds its own to the one before (``serve``: as the CLI
    builds it from ``FULL_CONFIG``)."""
    import hyperqueue as hq
    from hyperqueue_litestar import (
        Audit,
        Auth,
        Metrics,
        RateLimitMiddleware,
        SQLiteAuditSink,
        create_app,
        demo_queue,
    )
    from hyperqueue_litestar._config import ApiKey, RateLimits
    from hyperqueue_sqlite import SQLiteStorage

    db = folder / "bench.db"
    if part == "serve":
        from hyperqueue_cli._server import build_server
        from hyperqueue_litestar._config import read_config

        config = read_config(FULL_CONFIG)
        return build_server(config, demo_queue(), db=db, host="127.0.0.1", port=8000).app
    storage = SQLiteStorage(db)
    queue = demo_queue(storage)
    steps = list(PARTS)
    upto = steps.index(part)
    options: dict[str, Any] = {"concurrency": 10, "plugins": []}
    if upto >= steps.index("keys"):
        key = ApiKey(name="bench", key_hash=ApiKey.hash_key(API_KEY), roles=["operator"])
        auth = Auth(queue, keys=[key])
        options.update(guards=[auth.guard], middleware=[auth.middleware])
    if upto >= steps.index("limits"):
        routes = {"POST /api/v1/jobs": "100000000/minute"}
        options["middleware"].append(RateLimitMiddleware(queue, RateLimits(routes=routes)))
    if steps.index("events") <= upto < steps.index("metrics"):
        queue.events.subscribe(lambda event: None, hq.JobCompleted, hq.JobFailed)
    if upto >= steps.index("metrics"):
        options["plugins"].append(Metrics(queue))
    if upto >= steps.index("audit"):
        sink = SQLiteAuditSink(db, storage=storage)
        options["plugins"].append(Audit(queue, sink, guards=options["guards"]))
    return create_app(queue, **options)


async def drive(app: Any, requests: int, callers: int = CONNECTIONS) -> tuple[float, float]:
    """CPU microseconds per request: of the event loop's thread, and of the process."""
    body = BODY.encode()
    headers = [
        (b"host", b"127.0.0.1:8000"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"authorization", f"Bearer {API_KEY}".encode()),
    ]
    failed: list[int] = []

    async def one() -> None:
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": "/api/v1/jobs",
            "raw_path": b"/api/v1/jobs", "query_string": b"", "root_path": "",
            "headers": list(headers), "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000), "state": {},
        }  # fmt: skip
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and message["status"] != 201:
                failed.append(message["status"])

        await app(scope, receive, send)

    async def caller(count: int) -> None:
        for _ in range(count):
            await one()

    import anyio

    async def run(total: int) -> None:
        async with anyio.create_task_group() as tg:
            for n in range(callers):
                tg.start_soon(caller, total // callers + (n < total % callers))

    async with app.lifespan():
        await run(500)  # warm up: imports, first transactions, caches
        thread, process = time.thread_time(), time.process_time()
        await run(requests)
        thread, process = time.thread_time() - thread, time.process_time() - process
    if failed:
        raise RuntimeError(f"{len(failed)} requests failed: {sorted(set(failed))}")
    return thread / requests * 1e6, process / requests * 1e6


def parts(repeats: int) -> None:
    results: dict[str, list[tuple[float, float]]] = {part: [] for part in PARTS}
    for _ in range(repeats):  # interleaved, so drift hits every part alike
        for part in PARTS:
            out = subprocess.run(
                [sys.executable, __file__, "--part", part],
                capture_output=True,
                text=True,
                check=True,
                timeout=300,
            ).stdout.split()
            results[part].append((float(out[0]), float(out[1])))
    print(
        f"POST /api/v1/jobs through the ASGI app, {CONNECTIONS} concurrent callers, "
        f"5,000 requests, median of {repeats}; CPU us per request"
    )
    print(f"{'part':<50} {'loop thread':>11} {'added':>7} {'process':>8}")
    before = None
    for part, label in PARTS.items():
        thread = statistics.median(r[0] for r in results[part])
        process = statistics.median(r[1] for r in results[part])
        added = "" if before is None or part == "serve" else f"{thread - before:+7.1f}"
        print(f"{label:<50} {thread:>11.1f} {added:>7} {process:>8.1f}")
        before = thread


def serve(kind: str, port: int, db: Path) -> None:
    import logging

    import uvicorn

    logging.getLogger("hyperqueue.server").setLevel(logging.ERROR)
    uvicorn.run(
        build_app(kind, db),
        host="127.0.0.1",
        port=port,
        log_level="error",
        access_log=False,
        lifespan="on",
    )


# -- the load -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"server at {url} did not start")


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def wrk(url: str, seconds: int, script: Path) -> tuple[float, float, float, int, int]:
    """Requests/s, p50 ms, p99 ms, the count of non-2xx answers and of requests."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    done = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return rps, p50, p99, int(bad.group(1)) if bad else 0, done


def cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU seconds (user and system) of process ``pid``, and of its first thread (the one
    that runs the event loop); NaN where there is no ``/proc``."""

    def read(path: str) -> float:
        fields = Path(path).read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    try:
        return read(f"/proc/{pid}/stat"), read(f"/proc/{pid}/task/{pid}/stat")
    except OSError:
        return math.nan, math.nan


Figures = tuple[float, float, float, int, float, float]
"""req/s, p50 ms, p99 ms, non-2xx answers, CPU us per request: the server's, its loop's."""


def measure(kind: str, seconds: int, script: Path) -> Figures:
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "bench.db"
        if kind == "serve, full":
            config = Path(folder) / "hyperqueue.toml"
            config.write_text(FULL_CONFIG)
            command = ["-m", "hyperqueue_cli", "serve", "--config", str(config), "--db", str(db)]
            script = script.with_name("post-key.lua")
        else:
            command = [__file__, "--serve", kind, "--db", str(db)]
        proc = subprocess.Popen(
            [sys.executable, *command, "--port", str(port)],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_ready(base + "/health/live", proc)
            # warm up: imports, first SQLite transactions, CPU caches
            wrk(base + TARGETS[kind], 1, script)
            process, loop = cpu_seconds(proc.pid)
            rps, p50, p99, bad, done = wrk(base + TARGETS[kind], seconds, script)
            after, loop_after = cpu_seconds(proc.pid)
            per = 1e6 / max(done, 1)
            return rps, p50, p99, bad, (after - process) * per, (loop_after - loop) * per
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            assert proc.stderr is not None
            errors = proc.stderr.read().decode().strip()
            proc.stderr.close()
            if errors:
                print(f"  ({kind} server said: {errors[-300:]})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve", choices=sorted(TARGETS))
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--db", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--parts", action="store_true", help="where the time goes, in process")
    parser.add_argument("--part", choices=sorted(PARTS))
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.db)
        return
    if args.part:
        import asyncio
        import logging

        logging.getLogger("hyperqueue.server").setLevel(logging.ERROR)
        with tempfile.TemporaryDirectory() as folder:
            thread, process = asyncio.run(drive(parts_app(args.part, Path(folder)), 5000))
        print(f"{thread:.2f} {process:.2f}")
        return
    if args.parts:
        parts(5 if args.repeats == 3 else args.repeats)
        return
    if shutil.which("wrk") is None:
        sys.exit("this benchmark needs wrk: apt-get install wrk")
    repeats, seconds = (1, 2) if args.quick else (args.repeats, round(args.seconds))

    import uvicorn

    loop = "uvloop" if _importable("uvloop") else "asyncio"
    http = "httptools" if _importable("httptools") else "h11"
    print(
        f"uvicorn {uvicorn.__version__} ({http}, {loop}), 1 process; wrk 1 thread, "
        f"{CONNECTIONS} connections, {seconds:g} s; median of {repeats}; "
        f"{os.cpu_count()} cores shared by server and load"
    )
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "post.lua"
        post = (
            'wrk.method = "POST"\n'
            f"wrk.body = '{BODY}'\n"
            'wrk.headers["Content-Type"] = "application/json"\n'
        )
        script.write_text(post)
        script.with_name("post-key.lua").write_text(
            post + f'wrk.headers["Authorization"] = "Bearer {API_KEY}"\n'
        )
        results: dict[str, list[Figures]] = {k: [] for k in TARGETS}
        for _ in range(repeats):  # interleaved, so drift hits every target alike
            for kind in TARGETS:
                results[kind].append(measure(kind, seconds, script))
    ceiling = statistics.median(r[0] for r in results["ceiling"])
    print(f"{'target':<12} {'req/s':>9} {'us/req':>8} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'non-2xx':>8} {'vs ceiling':>11} {'cpu us':>7} {'loop us':>8}")  # fmt: skip
    for kind, runs in results.items():
        rps = statistics.median(r[0] for r in runs)
        p50 = statistics.median(r[1] for r in runs)
        p99 = statistics.median(r[2] for r in runs)
        bad = sum(r[3] for r in runs)
        cpu = statistics.median(r[4] for r in runs)
        loop = statistics.median(r[5] for r in runs)
        print(
            f"{kind:<12} {rps:>9,.0f} {1e6 / rps:>8.1f} {p50:>8.2f} {p99:>8.2f} {bad:>8} "
            f"{rps / ceiling:>10.2f}x {cpu:>7.0f} {loop:>8.0f}"
        )
    print(
        "cpu us: the server process's CPU time per request (all threads, user and system); "
        "loop us: its event loop thread's"
    )
    submit = statistics.median(r[0] for r in results["submit"])
    verdict = "meets" if submit >= ceiling / 2 else "MISSES"
    print(f"target: submission >= 0.5x the ceiling: {verdict} ({submit / ceiling:.2f}x)")
    full = statistics.median(r[0] for r in results["serve, full"])
    verdict = "meets" if full >= ceiling / 2 else "MISSES"
    print(
        f"target: serve with everything on >= 0.5x the ceiling: {verdict} ({full / ceiling:.2f}x)"
    )
    bar_chart(
        "server",
        f"POST requests/s on one uvicorn process, wrk {CONNECTIONS} connections, median of "
        f"{repeats}",
        {
            "ceiling: Litestar's minimal JSON endpoint": ceiling,
            "hyperqueue create_app, POST /api/v1/jobs": submit,
            "hyperqueue create_app + worker pool": statistics.median(
                r[0] for r in results["submit+run"]
            ),
            "hyperqueue serve, keys, limits, metrics, audit, pool": full,
        },
        unit="requests/s",
    )


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


if __name__ == "__main__":
    main()
