"""Slow jobs as events and log lines (MISSION E3): a run timed on the queue's clock."""

from __future__ import annotations

import logging

import anyio
import pytest

import hyperqueue as hq
from hyperqueue.testing import FakeClock

pytestmark = pytest.mark.anyio


async def test_a_run_over_the_threshold_is_an_event_and_a_warning(
    queue: hq.Queue, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    queue.hooks.append(hq.SlowJobs(queue, after=2.0))
    seen: list[hq.SlowJob] = []
    queue.events.subscribe(seen.append, hq.SlowJob)

    @queue.task
    async def nap(seconds: float) -> None:
        await clock.sleep(seconds)

    slow = await nap.enqueue(5.0)
    quick = await nap.enqueue(1.0)
    with caplog.at_level(logging.WARNING, logger="hyperqueue.worker"):
        async with queue.events, queue.worker(concurrency=2):
            await anyio.wait_all_tasks_blocked()
            await clock.advance(5.0)
            await queue.wait(slow.id, timeout=1)
            await queue.wait(quick.id, timeout=1)
    assert [(e.job.id, e.seconds, e.threshold, e.outcome) for e in seen] == [
        (slow.id, 5.0, 2.0, "completed")
    ]
    lines = [r.getMessage() for r in caplog.records if "slow job" in r.getMessage()]
    assert len(lines) == 1 and slow.id in lines[0] and "5.000 s" in lines[0]


def test_the_threshold_must_be_positive(queue: hq.Queue) -> None:
    with pytest.raises(ValueError, match="after"):
        hq.SlowJobs(queue, after=0)
