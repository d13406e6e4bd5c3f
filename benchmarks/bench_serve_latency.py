"""Latency of one request on a kept-alive connection: ``hyperqueue serve`` against the same
app under plain uvicorn binding its own socket (the ceiling), measured in one run.

``hyperqueue serve`` binds its socket itself (to report the port and refuse an open
address early). A socket made with ``proto=0`` kept asyncio from setting TCP_NODELAY on
its connections, and Nagle's algorithm with delayed ACKs then added about 40 ms to every
request on a kept-alive connection; this measures that it stays fixed.

Each server runs in its own process on a free port with a fresh SQLite file; the client
sends ``GET /api/v1/queues`` and ``POST /api/v1/jobs`` 200 times each on one connection
and prints the median and p99 in ms, and the ratio to uvicorn.
Run: ``.venv/bin/python benchmarks/bench_serve_latency.py`` (about 15 s).
"""

from __future__ import annotations

import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

N = 200
UVICORN_APP = """
import sys, uvicorn
from hyperqueue_cli._server import build_server
from hyperqueue_litestar import demo_queue
from hyperqueue_litestar._config import parse_config
from pathlib import Path
plan = build_server(parse_config({}), demo_queue(), db=Path(sys.argv[1]))
uvicorn.run(plan.app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(kind: str, folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    db = str(folder / f"{kind}.db")
    if kind == "serve":
        args = [sys.executable, "-m", "hyperqueue_cli", "serve", "--db", db, "--port", str(port)]
    else:
        args = [sys.executable, "-c", UVICORN_APP, db, str(port)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(f"{url}/health/live", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"{kind} did not start")
        time.sleep(0.1)


def measure(url: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"GET": [], "POST": []}
    with httpx.Client(base_url=url) as client:
        client.get("/api/v1/queues")
        for _ in range(N):
            t = time.perf_counter()
            client.get("/api/v1/queues")
            out["GET"].append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            client.post("/api/v1/jobs", json={"task": "add", "args": [1, 2]})
            out["POST"].append((time.perf_counter() - t) * 1000)
    return out


def main() -> None:
    figures: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("uvicorn", "serve"):
            proc, url = start(kind, Path(tmp))
            try:
                figures[kind] = measure(url)
            finally:
                proc.terminate()
                proc.wait(30)
    print(f"kept-alive connection, {N} requests each, ms")
    for method in ("GET", "POST"):
        base = statistics.median(figures["uvicorn"][method])
        for kind in ("uvicorn", "serve"):
            times = sorted(figures[kind][method])
            p50 = statistics.median(times)
            p99 = times[int(len(times) * 0.99) - 1]
            bar = "█" * max(1, round(p50 * 10))
            print(f"{kind:8} {method:4} p50 {p50:7.2f}  p99 {p99:7.2f}  x{p50 / base:5.2f}  {bar}")


if __name__ == "__main__":
    main()
