"""Who sees which events on ``GET /api/v1/events`` (issue 9): the stream is the storage's
job event log, the same for every role and on an open server; security events (refusals,
key names, client addresses, ``security.suspicious``) are never on it: admins read them
in the audit log (``GET /api/v1/audit``), which no other role may read."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hyperqueue_litestar._config import ApiKey

sys.path.insert(0, str(Path(__file__).parents[1] / "server"))
from server_process import Server, start_server, stop, wait_for

ROLES = {"admin": "admin-key", "operator": "op-key", "viewer": "view-key"}


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = Path(tmp_path_factory.mktemp("visibility"))
    blocks = [
        f'[[keys]]\nname = "{role}-name"\nkey_hash = "{ApiKey.hash_key(secret)}"\n'
        f'roles = ["{role}"]\n'
        for role, secret in ROLES.items()
    ]
    (folder / "hq.toml").write_text("\n".join(blocks))
    server = start_server(folder, "--config", str(folder / "hq.toml"))
    yield server
    stop(server)


def stream_types(url: str, headers: dict[str, str], *, until: str, query: str = "") -> list[str]:
    """The event types of ``/api/v1/events?after=0`` up to the first ``until`` (or 3 s of
    stream)."""
    types: list[str] = []
    deadline = time.monotonic() + 3
    timeout = httpx.Timeout(5, read=1.5)  # the stream is silent for 15 s between events
    with httpx.stream(
        "GET", f"{url}/api/v1/events?after=0{query}", headers=headers, timeout=timeout
    ) as response:
        assert response.status_code == 200, response.read()
        try:
            for line in response.iter_lines():
                if line.startswith("event:"):
                    types.append(line.split(":", 1)[1].strip())
                    if types[-1] == until:
                        break
                if time.monotonic() > deadline:
                    break
        except httpx.ReadTimeout:
            pass  # nothing more was coming
    return types


def make_trouble(url: str) -> None:
    """Refusals of every kind the audit records: 401s (a burst, flagged suspicious) and a
    403 for a viewer's submission."""
    for _ in range(12):
        httpx.get(f"{url}/api/v1/jobs", headers={"X-API-Key": "guess"})
    httpx.post(
        f"{url}/api/v1/jobs",
        json={"task": "echo", "args": [1]},
        headers={"X-API-Key": ROLES["viewer"]},
    )


def audited(url: str) -> list[dict[str, Any]]:
    page = httpx.get(f"{url}/api/v1/audit?limit=1000", headers={"X-API-Key": ROLES["admin"]})
    items: list[dict[str, Any]] = page.json()["items"]
    return items


@pytest.mark.parametrize("role", ["viewer", "operator", "admin"])
def test_every_role_sees_job_events_and_no_security_event(keyed_server: Server, role: str) -> None:
    url = keyed_server.url
    make_trouble(url)
    submitted = httpx.post(
        f"{url}/api/v1/jobs",
        json={"task": "echo", "args": [role]},
        headers={"X-API-Key": ROLES["operator"]},
    ).json()
    wait_for_job(url, submitted["id"])
    deadline = time.monotonic() + 10
    while not any(r["event"] == "security.suspicious" for r in audited(url)):
        assert time.monotonic() < deadline, "the burst was never flagged"
        time.sleep(0.05)
    types = stream_types(url, {"X-API-Key": ROLES[role]}, until="job.completed")
    assert "job.completed" in types
    assert all(t.startswith("job.") for t in types), types
    asked = stream_types(url, {"X-API-Key": ROLES[role]}, until="never", query="&type=security.*")
    assert asked == []


def wait_for_job(url: str, job_id: str) -> None:
    deadline = time.monotonic() + 15
    headers = {"X-API-Key": ROLES["viewer"]}
    while httpx.get(f"{url}/api/v1/jobs/{job_id}", headers=headers).json()["status"] not in (
        "completed",
        "failed",
    ):
        assert time.monotonic() < deadline
        time.sleep(0.02)


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_security_events_reach_admins_only_through_the_audit_log(
    keyed_server: Server, role: str
) -> None:
    url = keyed_server.url
    make_trouble(url)
    refused = httpx.get(f"{url}/api/v1/audit", headers={"X-API-Key": ROLES[role]})
    assert refused.status_code == 403
    assert "guess" not in refused.text and "127.0.0.1" not in refused.text
    kinds = {r["event"] for r in audited(url)}
    assert {"security.auth_failed", "security.forbidden"} <= kinds


def test_an_open_loopback_server_streams_job_events_only(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    try:
        url = server.url
        for _ in range(12):  # nothing to refuse on an open server but a bad request
            httpx.post(f"{url}/api/v1/jobs", content=b"{", headers={"X-API-Key": "guess"})
        job = httpx.post(f"{url}/api/v1/jobs", json={"task": "echo", "args": [1]}).json()
        wait_for(url, job["id"], {"completed"})
        types = stream_types(url, {}, until="job.completed")
        assert "job.completed" in types
        assert all(t.startswith("job.") for t in types), types
    finally:
        stop(server)
