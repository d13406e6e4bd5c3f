"""HTTP/2: `hyperqueue serve --server hypercorn` speaks h2c (prior knowledge) on loopback."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest
from server_process import start_server, stop, wait_for

pytest.importorskip("hypercorn", reason="needs the http2 extra")
pytest.importorskip("h2", reason="the HTTP/2 client needs h2")


def test_jobs_over_http2_and_a_clean_drain(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--server", "hypercorn")
    try:
        with httpx.Client(base_url=server.url, http1=False, http2=True, timeout=10) as client:
            posted = client.post("/api/v1/jobs", json={"task": "add", "args": [20, 22]})
            assert posted.http_version == "HTTP/2"
            assert posted.status_code == 201
            job = posted.json()
            # several requests share one connection, multiplexed
            health = client.get("/health/live")
            assert health.http_version == "HTTP/2" and health.status_code == 200
        done = wait_for(server.url, job["id"], {"completed"})
        assert done["result"] == 42
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(30) == 0
    finally:
        stop(server)
