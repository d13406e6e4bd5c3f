"""What the dashboard's pages cost the server with 100,000 jobs in SQLite.

Fills a fresh SQLite file as ``bench_search.py`` does (100,000 jobs by default: 80%
completed, 15% failed with 20 kinds of error, 5% pending), serves it with
``create_app`` (no workers), and times each page's requests in process, through the
whole ASGI app (middleware, routing, the storage; no socket), ``--repeats`` times each
(30 by default): median and p95 in milliseconds, and the ratio of the median to the
plain ``GET /api/v1/jobs?limit=50`` of the same run. The target is under 300 ms for a
page's requests together.

- jobs page: ``GET /api/v1/jobs?limit=50`` and ``GET /api/v1/jobs/count``, which the
  page sends together (the figure is both, one after the other);
- jobs page, filtered: the same with ``q=status:failed task:fetch_* error:timeout``;
- older page: the second page of that filter, by its keyset cursor;
- dead letters: ``GET /api/v1/dead-letters/groups`` (after a first call that stores the
  fingerprints);
- shell: ``GET /dashboard`` (the HTML; the assets are the same bytes every time).

Run: ``.venv/bin/python benchmarks/bench_dashboard.py`` (about 30 s); ``--jobs`` changes N.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import anyio
import httpx
from bench_search import fill

from hyperqueue_litestar import create_app, demo_queue
from hyperqueue_sqlite import SQLiteStorage

FILTER = "status:failed task:fetch_* error:timeout"
TARGET_MS = 300.0


async def timed(client: httpx.AsyncClient, paths: Sequence[str], repeats: int) -> list[float]:
    spent = []
    for _ in range(repeats):
        began = time.perf_counter()
        for path in paths:
            response = await client.get(path)
            assert response.status_code == 200, (path, response.status_code, response.text)
        spent.append((time.perf_counter() - began) * 1000)
    return spent


async def main(n: int, repeats: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "dashboard.db"
        storage = SQLiteStorage(path)
        await storage.open()
        began = time.perf_counter()
        await fill(storage, n)
        await storage.aclose()
        print(f"{n:,} jobs stored in {time.perf_counter() - began:.1f} s")
        app = create_app(demo_queue(SQLiteStorage(path)), workers=False)
        async with app.lifespan():
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://127.0.0.1"
            ) as client:
                first = (await client.get("/api/v1/jobs", params={"q": FILTER, "limit": 50})).json()
                cursor = first["next_cursor"]
                await client.get("/api/v1/dead-letters/groups")  # stores the fingerprints
                cases = {
                    "plain GET /api/v1/jobs?limit=50": ["/api/v1/jobs?limit=50"],
                    "jobs page (list + count)": ["/api/v1/jobs?limit=50", "/api/v1/jobs/count"],
                    "jobs page, filtered": [
                        f"/api/v1/jobs?limit=50&q={FILTER}",
                        f"/api/v1/jobs/count?q={FILTER}",
                    ],
                    "older page, filtered": [f"/api/v1/jobs?limit=50&q={FILTER}&cursor={cursor}"],
                    "dead letters (groups)": ["/api/v1/dead-letters/groups"],
                    "shell GET /dashboard": ["/dashboard"],
                }
                results = {
                    name: await timed(client, paths, repeats) for name, paths in cases.items()
                }
    base = statistics.median(next(iter(results.values())))
    print(f"\n{'requests':34} {'median ms':>10} {'p95 ms':>8} {'x plain':>8}  target")
    for name, spent in results.items():
        med = statistics.median(spent)
        p95 = statistics.quantiles(spent, n=20)[-1]
        verdict = "ok" if p95 < TARGET_MS else f"OVER {TARGET_MS:.0f} ms"
        print(f"{name:34} {med:10.2f} {p95:8.2f} {med / base:8.1f}  {verdict}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    anyio.run(main, args.jobs, args.repeats)
