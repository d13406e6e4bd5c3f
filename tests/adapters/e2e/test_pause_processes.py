"""Pausing a queue across processes: two ``hyperqueue worker`` processes on one SQLite
file claim nothing from a queue the test process paused (while they keep running another
queue's jobs), and run every job once it is resumed, woken without a new enqueue."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from many_app import make_queue
from test_many_processes import wait_registered, worker_process

import hyperqueue as hq
from hyperqueue_sqlite import SQLiteStorage

pytestmark = pytest.mark.anyio


async def test_two_worker_processes_hold_a_paused_queue_until_it_is_resumed(
    tmp_path: Path,
) -> None:
    db = tmp_path / "hq.db"
    log = tmp_path / "runs.log"
    queue = make_queue(SQLiteStorage(db))
    async with queue:
        with (
            worker_process(tmp_path, db, "queue", "w1", MANY_APP_LOG=str(log)) as one,
            worker_process(tmp_path, db, "queue", "w2", MANY_APP_LOG=str(log)) as two,
        ):
            with anyio.fail_after(30):
                await wait_registered(queue, one)
                await wait_registered(queue, two)
            await queue.pause_queue("held")
            held = [await queue.enqueue("work", args=(i,), queue="held") for i in range(20)]
            probe = await queue.enqueue("work", args=(99,), queue="free")
            # the workers are alive and claiming: a job enqueued after the held ones runs
            assert (await queue.wait(probe.id, timeout=15)).status is hq.JobStatus.COMPLETED
            await anyio.sleep(1.0)  # other processes, real time: give them a chance to err
            assert (await queue.stats())["held"].pending == 20
            assert all(str(job.id) not in log.read_text() for job in held)
            assert await queue.paused_queues() == ["held"]
            await queue.resume_queue("held")
            with anyio.fail_after(15):
                done = [await queue.wait(job.id) for job in held]
            assert {job.status for job in done} == {hq.JobStatus.COMPLETED}
            assert sorted(job.result for job in done) == list(range(20))
            assert await queue.paused_queues() == []
