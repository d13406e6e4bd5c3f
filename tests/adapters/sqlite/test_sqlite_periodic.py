"""Periodic jobs across processes: two ``hyperqueue worker`` processes on one SQLite
file run the same ``every=1.0`` job for a few seconds of real time, and the file holds
exactly one job per slot, with no slot left out."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

import hyperqueue as hq
from hyperqueue_sqlite import SQLiteStorage

pytestmark = pytest.mark.anyio

CLI = [sys.executable, "-m", "hyperqueue_cli"]

APP = '''
"""A queue with one periodic job, for ``hyperqueue worker periodic_app:queue``."""

import hyperqueue as hq

queue = hq.Queue()


@queue.periodic(every=1.0)
async def tick() -> None:
    pass
'''


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@contextmanager
def worker_process(folder: Path, db: Path, name: str) -> Iterator[subprocess.Popen[bytes]]:
    """``hyperqueue worker periodic_app:queue --db DB``; its stderr goes to ``NAME.err``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYPERQUEUE_")}
    with (folder / f"{name}.err").open("wb") as err:
        proc = subprocess.Popen(
            [*CLI, "worker", "periodic_app:queue", "--db", str(db)],
            cwd=folder,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


async def wait_registered(queue: hq.Queue, proc: subprocess.Popen[bytes]) -> None:
    while not any(info.pid == proc.pid for info in await queue.workers()):
        assert proc.poll() is None, f"worker {proc.pid} exited with {proc.returncode}"
        await anyio.sleep(0.05)


async def test_two_processes_make_exactly_one_job_per_slot(tmp_path: Path) -> None:
    (tmp_path / "periodic_app.py").write_text(APP)
    db = tmp_path / "jobs.db"
    async with hq.Queue(SQLiteStorage(db)) as queue:
        with ExitStack() as stack:
            procs = [stack.enter_context(worker_process(tmp_path, db, f"w{n}")) for n in (1, 2)]
            with anyio.fail_after(30):
                for proc in procs:
                    await wait_registered(queue, proc)
            await anyio.sleep(4.5)  # both fire every slot meanwhile
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            codes = [await anyio.to_thread.run_sync(proc.wait, 15) for proc in procs]
        errors = [(tmp_path / f"w{n}.err").read_text() for n in (1, 2)]
        assert codes == [0, 0], errors
        assert not any("Traceback" in e or "periodic" in e for e in errors), errors
        jobs = (await queue.list_jobs(task="tick", limit=1000)).items
        [schedule] = await queue.schedules()
    keys = [job.key for job in jobs]
    assert all(k is not None and k.startswith("periodic:tick:") for k in keys)
    assert len(set(keys)) == len(keys), "one job per slot"
    slots = sorted(float(k.rpartition(":")[2]) for k in keys if k is not None)
    assert len(slots) >= 4, slots
    assert [b - a for a, b in itertools.pairwise(slots)] == [1.0] * (len(slots) - 1)
    for job in jobs:
        slot = float((job.key or "").rpartition(":")[2])
        assert slot <= job.created_at <= slot + 1.0, "fired on time, within the grace"
    assert schedule.missed == 0
    assert schedule.handled_until == slots[-1]
