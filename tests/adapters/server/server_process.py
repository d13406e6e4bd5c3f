"""Running ``python -m hyperqueue_cli serve`` as a real process for the tests."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

__all__ = ["CLI", "Server", "start_server", "stop", "wait_for", "wait_serving"]

CLI = [sys.executable, "-m", "hyperqueue_cli"]


class Server:
    def __init__(self, proc: subprocess.Popen[bytes], url: str, db: Path) -> None:
        self.proc = proc
        self.url = url
        self.db = db


def start_server(folder: Path, *extra: str) -> Server:
    db = folder / "x.db"
    proc = subprocess.Popen(
        [*CLI, "serve", "--db", str(db), "--port", "0", "--concurrency", "4", *extra],
        cwd=folder,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    return Server(proc, wait_serving(proc), db)


def wait_serving(proc: subprocess.Popen[bytes], path: str = "/health/live") -> str:
    """The URL a starting ``serve`` prints, once ``path`` answers 200 there (the process
    is killed if it does not start within 15 s)."""
    assert proc.stderr is not None
    first = proc.stderr.readline().decode()
    if "serving on" not in first:
        proc.kill()
        raise AssertionError(f"server did not start: {first}{proc.stderr.read().decode()}")
    url = first.split("serving on", 1)[1].strip()
    deadline = time.monotonic() + 15
    while True:
        try:
            if httpx.get(f"{url}{path}", timeout=1).status_code == 200:
                return url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"server never answered {path}")
        time.sleep(0.05)


def stop(server: Server) -> None:
    if server.proc.poll() is None:
        server.proc.kill()
        server.proc.wait(10)
    if server.proc.stderr is not None:
        server.proc.stderr.close()


def wait_for(url: str, job_id: str, statuses: set[str], timeout: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = httpx.get(f"{url}/api/v1/jobs/{job_id}", timeout=5).json()
        if job["status"] in statuses:
            return job
        assert time.monotonic() < deadline, f"job stayed {job['status']}"
        time.sleep(0.02)
