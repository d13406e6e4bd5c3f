"""HttpStorage as a client: typed errors, the breaker and retries when the server is
not there, and the server's long poll giving up on a client that left."""

from __future__ import annotations

import socket

import anyio
import httpx
import pytest

import hyperqueue as hq
from conftest import FreshStorage, SetClock
from hyperqueue_http import ConnectFailed, HttpStorage, RequestRejected

pytestmark = pytest.mark.anyio


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens there now


async def test_a_server_that_is_not_there_opens_the_breaker() -> None:
    storage = HttpStorage(
        f"http://127.0.0.1:{_closed_port()}", retry=hq.Retry(2, backoff=0.0, jitter=0.0)
    )
    try:
        for _ in range(2):  # 2 calls x 2 attempts: 4 failures
            with pytest.raises(ConnectFailed):
                await storage.get("x")
        with pytest.raises(ConnectFailed):  # the 5th failure opens it
            await storage.claim(None, limit=1, now=0, lease=30, worker="w")
        with pytest.raises(hq.CircuitOpenError):  # refused at once, nothing sent
            await storage.get("x")
        assert storage.breaker.state == "open"
    finally:
        await storage.aclose()


async def test_refusals_are_typed_and_do_not_count_against_the_breaker(server_url: str) -> None:
    storage = HttpStorage(server_url)
    try:
        await storage.open()
        for _ in range(6):
            with pytest.raises(hq.JobNotFound):
                await storage.cancel("nope", now=0)
        with pytest.raises(hq.WorkflowNotFound):
            await storage.cancel_workflow("nope", now=0)
        with pytest.raises(hq.ScheduleNotFound):
            await storage.pause_schedule("nope", paused=True, now=0)
        with pytest.raises(RequestRejected) as caught:
            await storage.claim(None, limit=1, now=0, lease=0, worker="w")  # lease must be > 0
        assert caught.value.status_code == 400
        assert storage.breaker.state == "closed"
        assert await storage.get("nope") is None
    finally:
        await storage.aclose()


async def test_a_long_poll_whose_client_left_claims_nothing(
    server_url: str, server_storage: FreshStorage, clock: SetClock
) -> None:
    """A worker that disconnects (killed, timed out) while its claim waits must not have
    a job claimed for it that nobody will run until its lease expires."""
    async with httpx.AsyncClient(base_url=server_url) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(
                "/api/v1/worker/claim", json={"worker": "gone", "wait": 20}, timeout=0.3
            )
    await anyio.sleep(0.2)  # the server notices the disconnect
    job = hq.Job(id="j1", task="t", created_at=clock.now(), run_at=clock.now())
    await server_storage.enqueue([job], now=clock.now(), key_ttl=None)
    await anyio.sleep(0.3)
    stored = await server_storage.get("j1")
    assert stored is not None and stored.status is hq.JobStatus.PENDING and stored.token == 0


async def test_a_read_skipping_an_origin_pages_through_the_log(
    server_url: str, server_storage: FreshStorage
) -> None:
    """The server's route has no origin filter and answers at most 1,000 entries: the
    client filters, and reads page after page until it has ``limit`` entries or reached
    the end, so a short answer still means nothing is left (what a relay relies on)."""
    jobs = [hq.Job(id=f"{n:05d}", task="t", created_at=0.0, run_at=0.0) for n in range(2500)]
    assert await server_storage.inner.last_event_id() == 0  # (starts its event log)
    await server_storage.inner.enqueue(jobs, now=0.0, key_ttl=None)
    storage = HttpStorage(server_url)
    try:
        await storage.open()
        first = await storage.read_events(after=0, limit=1500, skip_origin="another")
        assert [e.job.id for e in first] == [job.id for job in jobs[:1500]]
        rest = await storage.read_events(after=first[-1].id, limit=5000, skip_origin="another")
        assert [e.job.id for e in rest] == [job.id for job in jobs[1500:]]
        assert await storage.read_events(after=0, skip_origin=storage.origin) == []
        assert len(await storage.read_events(after=0, limit=5000)) == 1000  # unchanged
    finally:
        await storage.aclose()
