"""``serve --detach`` with its pid file, ``status`` of the detached server, and ``stop``:
real processes, in a folder of their own."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest
from cli_helpers import Invoke, wait_status
from server_process import CLI

from hyperqueue_cli._daemon import alive, read_pid_file


@pytest.fixture
def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("HYPERQUEUE_")}


def hq(folder: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], cwd=folder, env=env, capture_output=True, text=True, timeout=90, check=False
    )


def test_detach_status_and_stop_with_the_pid_file(
    tmp_path: Path, env: dict[str, str], invoke: Invoke
) -> None:
    """One detached server through its life: refused twice, found by ``status`` with no
    --url, ``stop`` giving up (exit 8) while a job drains, then waiting for the drain
    (the job completes), the pid file gone, and a second ``stop`` exit 5. The server is a
    real detached process; the commands that talk to it run in this process (faster)."""
    started = hq(tmp_path, env, "serve", "--db", "x.db", "--port", "0", "--detach")
    assert started.returncode == 0, started.stderr
    info = read_pid_file(tmp_path / "hyperqueue.pid")
    assert info is not None and info.url is not None and alive(info.pid)
    assert f"pid {info.pid}" in started.stderr
    job_id = ""
    try:
        assert httpx.get(f"{info.url}/health/live", timeout=5).status_code == 200
        # a second one with the same pid file is refused while the first runs
        twice = invoke("serve", "--db", "y.db", "--port", "0", "--detach")
        assert twice.exit_code == 6
        assert f"pid {info.pid}" in twice.stderr
        # every command finds the detached server with no --url
        submitted = invoke("jobs", "submit", "sleep", "--args", "[3]")
        job_id = submitted.stdout.strip()
        wait_status(info.url, job_id, {"running"})
        status = invoke("status", "--json")
        assert status.exit_code == 0, status.output
        document = json.loads(status.stdout)
        assert document["url"] == info.url
        assert document["detached"] == {
            "pid": info.pid,
            "url": info.url,
            "running": True,
            "pid_file": "hyperqueue.pid",
        }
        early = invoke("stop", "--timeout", "0.2")
        assert early.exit_code == 8, early.output
        assert "still runs" in early.stderr
        assert alive(info.pid) and (tmp_path / "hyperqueue.pid").exists()
        stopped = invoke("stop", "--timeout", "30")
        assert stopped.exit_code == 0, stopped.output
    finally:
        if alive(info.pid):
            os.kill(info.pid, 9)
    assert not (tmp_path / "hyperqueue.pid").exists()
    log = (tmp_path / "hyperqueue.log").read_text()
    assert log.count("serving on") == 1 and "workers drained" in log
    drained = invoke("jobs", "show", job_id, "--db", "x.db", "--json")
    assert json.loads(drained.stdout)["status"] == "completed"
    again = invoke("stop")
    assert again.exit_code == 5
    assert "no server running" in again.stderr


def test_pid_and_log_files_elsewhere(tmp_path: Path, invoke: Invoke) -> None:
    pid_file = tmp_path / "run" / "hq.pid"
    pid_file.parent.mkdir()
    started = invoke(
        *("serve", "--db", "x.db", "--port", "0", "--detach"),
        *("--pid-file", str(pid_file), "--log-file", "logs/hq.log"),
    )
    assert started.exit_code == 0, started.output
    info = read_pid_file(pid_file)
    assert info is not None and info.log == str(tmp_path / "logs" / "hq.log")
    try:
        status = invoke("status", "--pid-file", str(pid_file))
        assert f"pid {info.pid}" in status.stdout and status.exit_code == 0
    finally:
        stopped = invoke("stop", "--pid-file", str(pid_file))
    assert stopped.exit_code == 0, stopped.output
    assert not pid_file.exists() and not alive(info.pid)
    assert "serving on" in (tmp_path / "logs" / "hq.log").read_text()


def test_a_stale_pid_file_is_replaced_and_stop_removes_it(tmp_path: Path, invoke: Invoke) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    (tmp_path / "hyperqueue.pid").write_text(f"{gone.pid}\nhttp://127.0.0.1:9\n\n")
    status = invoke("status", "--url", "http://127.0.0.1:9")
    assert "not running (stale pid file)" in status.stdout
    assert status.exit_code == 3
    stopped = invoke("stop")
    assert stopped.exit_code == 5
    assert "stale pid file removed" in stopped.stderr
    assert not (tmp_path / "hyperqueue.pid").exists()


def test_a_server_that_cannot_start_detached_says_why(tmp_path: Path, invoke: Invoke) -> None:
    result = invoke("serve", "nomodule_here:queue", "--port", "0", "--detach")
    assert result.exit_code == 2
    assert "no such module" in result.stderr  # the log's tail
    assert not (tmp_path / "hyperqueue.pid").exists()
