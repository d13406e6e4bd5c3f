"""Search, groups and bulk actions against a real ``hyperqueue serve`` process on a
SQLite file: the fingerprints computed in the server's storage, a group retried and
failing again, running jobs cancelled where the server's workers run them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_process import Server, start_server, stop, wait_for


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    server = start_server(tmp_path)
    try:
        yield server
    finally:
        stop(server)


def until(call: Any, wanted: Any, timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while (got := call()) != wanted:
        assert time.monotonic() < deadline, f"{got!r} never became {wanted!r}"
        time.sleep(0.02)
    return got


def test_groups_retry_cancel_and_discard_on_a_live_server(server: Server) -> None:
    with httpx.Client(base_url=f"{server.url}/api/v1", timeout=10) as api:
        check(server, api)


def check(server: Server, api: httpx.Client) -> None:
    jobs = [{"task": "fail", "args": [f"db timeout after {i}.{i}s on shard {i}"]} for i in range(6)]
    items = api.post("/jobs/batch", json={"jobs": jobs}).json()["items"]
    ids = [item["job"]["id"] for item in items]
    for job_id in ids[:6]:
        wait_for(server.url, job_id, {"failed"})

    def groups() -> list[tuple[str, int]]:
        found = api.get("/dead-letters/groups").json()["groups"]
        return [(g["task"], g["count"]) for g in found]

    assert groups() == [("fail", 6)]
    [group] = api.get("/dead-letters/groups").json()["groups"]
    assert group["message"] == "db timeout after #s on shard #"
    q = f"fingerprint:{group['fingerprint']}"
    assert api.get("/jobs/count", params={"q": q}).json() == {"count": 6}
    retried = api.post("/jobs/retry", json={"q": q, "expected": 6})
    assert retried.json() == {"count": 6, "dry_run": False}
    # they fail again: the group is computed afresh from the new failures
    until(lambda: api.get("/jobs/count", params={"q": "status:failed"}).json()["count"], 6)
    assert groups() == [("fail", 6)]

    sleeps = [{"task": "sleep", "args": [60]} for _ in range(6)]
    items = api.post("/jobs/batch", json={"jobs": sleeps}).json()["items"]
    ids += [item["job"]["id"] for item in items]
    running = until(
        lambda: api.get("/jobs/count", params={"q": "task:sleep status:running"}).json()["count"],
        4,
    )
    assert running == 4  # --concurrency 4: two more wait
    cancelled = api.post("/jobs/cancel", json={"q": "task:sleep", "expected": 6})
    assert cancelled.json() == {"count": 6, "dry_run": False}
    for job_id in ids[6:]:
        wait_for(server.url, job_id, {"cancelled"}, timeout=5)
    gone = api.post("/jobs/discard", json={"q": "status:failed,cancelled"})
    assert gone.json() == {"count": 12, "dry_run": False}
    assert api.get("/jobs/count").json() == {"count": 0}
    assert api.get(f"/jobs/{ids[0]}").status_code == 404
    assert api.get("/jobs", params={"q": "since:tomorrow"}).status_code == 422
