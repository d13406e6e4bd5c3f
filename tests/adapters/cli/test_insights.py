"""``GET /api/v1/insights`` and ``hyperqueue insights``: counts per bucket, latencies,
lag and the top lists, computed from the storage's event log (on the fake clock, so
each job's wait and run are known to the second), then through a real server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import msgspec
import pytest
from cli_helpers import Invoke, as_json, wait_status
from server_process import Server

import hyperqueue as hq
from hyperqueue.testing import FakeClock
from hyperqueue_cli._insights import _render as render
from hyperqueue_litestar._insights_routes import compute_insights, percentile

START = 1_700_000_000.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def recorded() -> AsyncIterator[tuple[hq.Queue, FakeClock]]:
    """Over ten minutes on the fake clock: ``work`` runs 4 jobs (runs of 1, 2, 3 and 4 s;
    the last waits 30 s for a worker), ``boom`` fails twice, one job stays pending."""
    clock = FakeClock(START)
    queue = hq.Queue(clock=clock)

    @queue.task
    async def work(seconds: float) -> None:
        await clock.sleep(seconds)

    @queue.task
    async def boom() -> None:
        raise ValueError("boom 7")

    async with queue:
        await queue.storage.last_event_id()  # the memory storage logs once read
        with anyio.fail_after(10):
            async with queue.worker(concurrency=1):
                for seconds in (1.0, 2.0, 3.0):
                    job = await work.enqueue(seconds)
                    await clock.advance(seconds)
                    await queue.wait(job.id)
                await clock.advance(120.0)  # the next minute-long bucket
                for _ in range(2):
                    job = await boom.enqueue()
                    await clock.advance(0.0)
                    await queue.wait(job.id)
            late = await work.enqueue(4.0)  # no worker: it waits 30 s
            await clock.advance(30.0)
            async with queue.worker(concurrency=1):
                await clock.advance(4.0)
                await queue.wait(late.id)
            await work.enqueue(1.0)  # pending, no worker
            await clock.advance(45.0)
        yield queue, clock


@pytest.mark.anyio
async def test_counts_latencies_and_lag_from_the_event_log(
    recorded: tuple[hq.Queue, FakeClock],
) -> None:
    queue, clock = recorded
    insights = await compute_insights(queue, window=600.0, buckets=10)
    summary = insights.summary
    assert (summary.enqueued, summary.completed, summary.failed) == (7, 4, 2)
    assert summary.failure_rate == pytest.approx(2 / 6, abs=1e-4)
    assert summary.throughput_per_minute == pytest.approx(6 / 10)
    assert (summary.pending, summary.running) == (1, 0)
    assert summary.oldest_pending_age == pytest.approx(45.0)
    assert summary.run_p95 == pytest.approx(4.0)  # runs: 0, 0, 1, 2, 3, 4
    assert summary.wait_p95 == pytest.approx(30.0)
    assert len(insights.series) == 10
    assert insights.series[-1].end == pytest.approx(clock.now())
    by_bucket = [(b.completed, b.failed) for b in insights.series]
    assert sum(c for c, _ in by_bucket) == 4 and sum(f for _, f in by_bucket) == 2
    # the first three runs end in one bucket, the failures two minutes later
    first = next(i for i, (c, _) in enumerate(by_bucket) if c)
    assert by_bucket[first] == (3, 0)
    assert by_bucket[first + 2][1] == 2
    [failing] = insights.top_failing
    assert (failing.task, failing.failed, failing.failure_rate) == ("boom", 2, 1.0)
    assert failing.last_error is not None and "boom 7" in failing.last_error
    assert [s.task for s in insights.slowest] == ["work", "boom"]
    assert insights.slowest[0].run_max == pytest.approx(4.0)
    assert not insights.truncated


@pytest.mark.anyio
async def test_a_short_window_leaves_out_what_came_before(
    recorded: tuple[hq.Queue, FakeClock],
) -> None:
    queue, _ = recorded
    insights = await compute_insights(queue, window=60.0, buckets=6)
    # only the last enqueue (45 s ago) and the late run (finished 45 s ago) are in it
    assert (insights.summary.enqueued, insights.summary.completed) == (1, 1)
    assert insights.summary.failed == 0 and insights.top_failing == []


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 0.5) is None
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 0.95) == 95.0


# -------------------------------------------------------------------- a real server


def test_insights_over_http_and_the_command(server: Server, invoke: Invoke) -> None:
    url = ("--url", server.url)
    last: dict[str, Any] = {}
    for task in ("add", "fail", "fail"):
        args = ("--args", "[1, 2]") if task == "add" else ()
        last = as_json(invoke("jobs", "submit", task, *args, "--json", *url))
        wait_status(server.url, last["id"], {"completed", "failed"})
    document = as_json(invoke("insights", "--window", "15m", "--buckets", "15", "--json", *url))
    assert document["window"] == 900 and len(document["series"]) == 15
    assert document["summary"]["failed"] >= 2
    assert "fail" in {row["task"] for row in document["top_failing"]}
    assert document["summary"]["deferred"] == 0 and document["most_throttled"] == []
    assert all(bucket["deferred"] == 0 for bucket in document["series"])
    table = invoke("insights", "--window", "1h", *url)
    assert table.exit_code == 0
    assert "most failing tasks" in table.stdout
    bad = invoke("insights", "--window", "soon", *url)
    assert bad.exit_code == 2


def test_the_route_refuses_a_bad_window_with_a_4xx(server: Server) -> None:
    for params in ({"window": "10"}, {"window": "x"}, {"buckets": "0"}, {"buckets": "501"}):
        response = httpx.get(f"{server.url}/api/v1/insights", params=params, timeout=10)
        assert 400 <= response.status_code < 500, params
        assert "detail" in response.json()


@pytest.mark.anyio
async def test_deferrals_by_a_rate_limit_are_counted_per_bucket_and_task(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``ping`` may start once a minute: of three jobs enqueued together the first runs,
    the other two are put back (``job.deferred``, no attempt spent) until their minute
    comes; ``work`` is never held back and stays off the top list."""
    clock = FakeClock(START)
    queue = hq.Queue(clock=clock)

    @queue.task(rate_limit="1/minute")
    async def ping(n: int) -> int:
        return n

    @queue.task
    async def work() -> None:
        pass

    async with queue:
        await queue.storage.last_event_id()  # the memory storage logs once read
        with anyio.fail_after(10):
            async with queue.worker(concurrency=1):
                jobs = [await ping.enqueue(n) for n in range(3)]
                await queue.wait((await work.enqueue()).id)
                await queue.wait(jobs[0].id)
                for job in jobs[1:]:
                    await clock.advance(60.0)
                    done = await queue.wait(job.id)
                    assert done.status is hq.JobStatus.COMPLETED and done.attempts == 1
        insights = await compute_insights(queue, window=600.0, buckets=10)
    # at the start both waiting jobs are put back; a minute later the third once more
    summary = insights.summary
    assert summary.deferred == 3
    assert [b.deferred for b in insights.series][-3:] == [0, 2, 1]
    [row] = insights.most_throttled
    assert (row.task, row.deferred, row.runs, row.share) == ("ping", 3, 3, 0.5)
    assert summary.completed == 4 and summary.retried == 0
    # what ``hyperqueue insights`` prints of it
    render(msgspec.to_builtins(insights), "10m")
    printed = capsys.readouterr().out
    assert "throttled 3: held back by a rate limit or an open breaker" in printed
    assert "most throttled tasks" in printed
    throttled = printed[printed.index("most throttled tasks") :].splitlines()
    [row_line] = [line for line in throttled if "ping" in line]
    assert row_line.replace("│", " ").split() == ["ping", "3", "3", "50.0%"]
