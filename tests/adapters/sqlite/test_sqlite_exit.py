"""A program that uses the storage and never closes it exits when its main returns.

aiosqlite's connection thread was not a daemon, so such a program never exited. The
storage's connections now live in daemon threads of their own, which never hold the
interpreter; what was committed before is in the file. Real processes, since the point is whether
the interpreter exits.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import sys

import anyio

import hyperqueue as hq
from hyperqueue_sqlite import SQLiteStorage


async def write(db: str) -> None:
    queue = hq.Queue(SQLiteStorage(db))  # never closed, no async with

    @queue.task
    async def work(n: int) -> int:
        return n

    job = await work.enqueue(7)
    print(job.id, flush=True)


async def read(db: str, job_id: str) -> None:
    async with hq.Queue(SQLiteStorage(db)) as queue:
        job = await queue.get(job_id)
        print(job.status.value, job.task, job.args, flush=True)


mode, backend, *args = sys.argv[1:]
anyio.run({"write": write, "read": read}[mode], *args, backend=backend)
"""

EXIT_WITHIN = 10.0  # seconds, interpreter start and imports included (about 1 s here)


def run(script: Path, *args: str) -> str:
    try:
        done = subprocess.run(
            [sys.executable, str(script), *args],
            capture_output=True,
            text=True,
            timeout=EXIT_WITHIN,
        )
    except subprocess.TimeoutExpired as exc:  # subprocess.run killed it
        raise AssertionError(f"{args} did not exit within {EXIT_WITHIN} s: {exc.stderr!r}") from exc
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr
    return done.stdout


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_program_that_never_closes_the_storage_exits(tmp_path: Path, backend: str) -> None:
    script = tmp_path / "app.py"
    script.write_text(SCRIPT)
    db = str(tmp_path / "jobs.db")
    job_id = run(script, "write", backend, db).strip()
    assert job_id
    # a second process finds the job the first one enqueued and never closed
    out = run(script, "read", backend, db, job_id)
    assert out.split() == ["pending", "work", "(7,)"]
