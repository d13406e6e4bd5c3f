"""``serve`` and ``worker`` on a database they cannot use: one line that says the path, the
problem and what to do, exit status 3, before anything listens or says it serves."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from server_process import CLI

APPS = Path(__file__).parents[1] / "e2e"  # many_app.py, a queue for `worker`


def run(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(APPS), env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [*CLI, *args], cwd=folder, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def assert_one_clear_line(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode == 3, (done.returncode, done.stderr)
    assert "serving on" not in done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_a_corrupt_database_is_one_line_and_exit_3(tmp_path: Path, command: str) -> None:
    db = tmp_path / "jobs.db"
    db.write_bytes(b"this is not a database, it only has the name of one" * 100)
    args = ["serve", "--port", "0"] if command == "serve" else ["worker", "many_app:queue"]
    done = run(tmp_path, *args, "--db", str(db))
    assert_one_clear_line(done, str(db), "not a valid SQLite database", "backup")
    assert db.read_bytes().startswith(b"this is not a database"), "left as it was"


def test_a_read_only_database_is_one_line_and_exit_3(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    first = run(tmp_path, "serve", "--port", "0", "--db", str(db), "--check")
    assert first.returncode == 0, first.stderr
    db.write_bytes(b"")
    db.chmod(0o444)
    done = run(tmp_path, "serve", "--port", "0", "--db", str(db))
    assert_one_clear_line(done, str(db), "read-only")
