"""The worker protocol's long poll and paused queues: a pause or a resume writes no
event, so each poll names the paused queues it last saw, and the server answers at
once when they changed, rather than at the end of the poll (20 s for HttpStorage)."""

from __future__ import annotations

import time

import anyio
import httpx
import pytest
from server_process import Server

from conftest import OPERATOR, WORKER

pytestmark = pytest.mark.anyio


async def test_a_resume_between_two_polls_answers_the_next_poll_at_once(
    keyed_server: Server,
) -> None:
    api = f"{keyed_server.url}/api/v1"
    worker = {"Authorization": f"Bearer {WORKER}"}
    operator = {"Authorization": f"Bearer {OPERATOR}"}
    async with httpx.AsyncClient(timeout=30) as http:

        async def listen(**body: object) -> dict[str, object]:
            answer = await http.post(f"{api}/worker/listen", json=body, headers=worker)
            assert answer.status_code == 200, answer.text
            result: dict[str, object] = answer.json()
            return result

        first = await listen()
        assert first["paused"] == []
        last = first["event_id"]
        paused = await http.post(f"{api}/queues/held/pause", headers=operator)
        assert paused.status_code < 300, paused.text
        with anyio.fail_after(5):  # not the 20 s of the poll
            answer = await listen(after=last, wait=20, paused=[])
        assert answer == {"event_id": last, "changed": True, "paused": ["held"]}
        resumed = await http.post(f"{api}/queues/held/resume", headers=operator)
        assert resumed.status_code < 300, resumed.text
        with anyio.fail_after(5):
            answer = await listen(after=last, wait=20, paused=["held"])
        assert answer["changed"] is True and answer["paused"] == []
        # nothing moved: the poll waits its time and says so
        started = time.perf_counter()
        answer = await listen(after=last, wait=0.5, paused=[])
        assert time.perf_counter() - started >= 0.4
        assert answer == {"event_id": last, "changed": False, "paused": []}
        bad = await http.post(f"{api}/worker/listen", json={"paused": [""]}, headers=worker)
        assert bad.status_code == 400 and "detail" in bad.json()
