"""A workflow survives ``kill -9`` of the worker running one of its steps: its
dependencies and results live in the SQLite file, not in any process."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import anyio
import pytest
from many_app import make_queue
from test_many_processes import (
    log_lines,
    short_lease,
    terminate,
    wait_registered,
    worker_process,
)

import hyperqueue as hq
from hyperqueue_sqlite import SQLiteStorage

pytestmark = pytest.mark.anyio


async def test_workflow_survives_kill_9_of_its_worker_mid_step(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    async with make_queue(SQLiteStorage(db)) as queue:
        await _kill_mid_workflow(tmp_path, db, queue)


async def _kill_mid_workflow(tmp_path: Path, db: Path, queue: hq.Queue) -> None:
    log = tmp_path / "runs.log"
    work, slow = queue.tasks["work"], queue.tasks["slow"]
    flow = hq.Workflow()
    first = flow.add(work, 1, name="first")
    middle = flow.add(slow, 1.0, name="middle", after=[first])
    flow.add(work, middle, name="last")  # receives the pid of the process that ran middle
    run = await queue.enqueue_workflow(flow)
    with anyio.fail_after(40):
        with worker_process(
            tmp_path, db, "queue", "a", MANY_APP_LOG=str(log), **short_lease()
        ) as a:
            await wait_registered(queue, a)
            middle_id = run.steps["middle"]
            while ("start", a.pid, middle_id) not in log_lines(log):  # noqa: ASYNC110
                await anyio.sleep(0.02)
            os.kill(a.pid, signal.SIGKILL)
            assert a.wait(10) == -signal.SIGKILL
        with worker_process(
            tmp_path, db, "queue", "b", MANY_APP_LOG=str(log), **short_lease()
        ) as b:
            await wait_registered(queue, b)
            done = await queue.wait_workflow(run.id, timeout=30)
            assert await terminate(b) == 0
    assert done.status is hq.WorkflowStatus.COMPLETED, done
    assert done.result == {"last": b.pid}
    jobs = await queue.workflow_jobs(run.id)
    assert jobs["middle"].rescues == 1 and jobs["middle"].attempts == 1
    assert jobs["first"].result == 1
    runs = log_lines(log)
    starts = {
        name: [pid for kind, pid, j in runs if kind == "start" and j == job.id]
        for name, job in jobs.items()
    }
    assert starts == {"first": [a.pid], "middle": [a.pid, b.pid], "last": [b.pid]}, starts
