"""Pins the public types: mypy --strict checks this file; nothing runs it."""

from __future__ import annotations

from typing import assert_type

import hyperqueue as hq

queue = hq.Queue()


@queue.task
async def add(a: int, b: int) -> int:
    return a + b


@queue.task(queue="mail", retry=hq.Retry(3, on=ConnectionError))
async def send(to: str, *, subject: str = "") -> None:
    return None


async def usage() -> None:
    assert_type(await add(1, 2), int)
    assert_type(await add.enqueue(1, 2), hq.Job)
    assert_type(await add.options(priority="high", delay=1.0).enqueue(1, b=2), hq.Job)
    assert_type(await send.enqueue("a@b.c", subject="hi"), hq.Job)
    job = await queue.enqueue("add", args=[1, 2])
    assert_type(job.status, hq.JobStatus)
    assert_type(await queue.wait(job.id, timeout=1.0), hq.Job)
    assert_type(await queue.stats(), dict[str, hq.QueueStats])
    assert_type((await queue.list_jobs()).next_cursor, str | None)
    async with queue.worker(concurrency=2) as worker:
        assert_type(worker.stats(), hq.WorkerStats)
    breaker = hq.CircuitBreaker("db")
    assert_type(breaker.state, hq.BreakerState)


async def mistakes() -> None:
    await add.enqueue("1", 2)  # type: ignore[arg-type]
    await add.enqueue(1)  # type: ignore[call-arg]
    await send.enqueue("a", subject=3)  # type: ignore[arg-type]
