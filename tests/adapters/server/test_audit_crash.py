"""The audit log survives ``kill -9`` of ``hyperqueue serve``: every submission whose
answer reached its client has its record in the database, even when the server dies
while other requests are on their way (records are written in batches; an answer's end
waits for its batch)."""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path

import anyio
import httpx
import pytest
from server_process import start_server, stop

pytestmark = pytest.mark.anyio

CLIENTS = 16


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_every_answered_submission_is_in_the_audit_log_after_kill_9(
    tmp_path: Path,
) -> None:
    server = start_server(tmp_path)
    answered: list[str] = []
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=5) as client:

            async def submit_until_gone() -> None:
                while True:
                    try:
                        answer = await client.post(
                            "/api/v1/jobs", json={"task": "add", "args": [1, 2]}
                        )
                    except httpx.HTTPError:
                        return  # the server is gone
                    if answer.status_code == 429:  # the default limit of 200 a second
                        await anyio.sleep(0.05)
                        continue
                    assert answer.status_code == 201, answer.text
                    answered.append(answer.json()["id"])

            async with anyio.create_task_group() as tg:
                for _ in range(CLIENTS):
                    tg.start_soon(submit_until_gone)
                with anyio.fail_after(30):
                    while len(answered) < 300:  # noqa: ASYNC110
                        await anyio.sleep(0.01)
                server.proc.send_signal(signal.SIGKILL)  # with requests on their way
    finally:
        stop(server)
    with sqlite3.connect(server.db) as db:
        recorded = {
            row[0].removeprefix("job:")
            for row in db.execute("SELECT resource FROM audit_log WHERE event = 'job.submit'")
        }
    missing = [job_id for job_id in answered if job_id not in recorded]
    assert missing == [], f"{len(missing)} of {len(answered)} answered submissions unrecorded"
