"""A small live demo of the hyperqueue core: tasks, priorities, retries, delays, cancel.

Run it with ``make serve`` (until the HTTP server lands, this is what it starts).
"""

from __future__ import annotations

import random

import anyio

import hyperqueue as hq

queue = hq.Queue(events=hq.EventBus())


@queue.task
async def resize(image: str, width: int = 640) -> str:
    await anyio.sleep(random.uniform(0.05, 0.3))
    return f"{image}@{width}px"


@queue.task(retry=hq.Retry(3, backoff=0.2, jitter=0.1, on=ConnectionError))
async def notify(user: str) -> str:
    if random.random() < 0.5:
        raise ConnectionError(f"mail server busy for {user}")
    return f"mailed {user}"


@queue.task(timeout=0.5)
async def report(pages: int) -> int:
    for page in range(pages):
        await hq.report_progress({"page": page + 1, "of": pages})
        await anyio.sleep(0.1)
    return pages


def show(event: hq.Event) -> None:
    if isinstance(event, hq.JobEvent):
        job = event.job
        name = type(event).__name__.removeprefix("Job").lower()
        if isinstance(event, hq.JobProgress):
            extra = job.progress
        else:
            extra = job.result if job.status == "completed" else job.error or ""
        print(f"  {name:<10} {job.task:<7} {job.priority:<8} attempt {job.attempts}  {extra}")


async def main() -> None:
    queue.events.subscribe(show)
    async with queue, queue.worker(concurrency=4) as worker:
        jobs = [await resize.enqueue(f"photo-{n}.jpg") for n in range(4)]
        jobs.append(await resize.options(priority="critical").enqueue("urgent.jpg", width=128))
        jobs += [await notify.enqueue(user) for user in ("ada", "grace")]
        jobs.append(await report.options(delay=0.3).enqueue(3))
        jobs.append(await report.enqueue(20))  # runs past its 0.5 s timeout
        doomed = await resize.options(priority="low").enqueue("never.jpg")
        await queue.cancel(doomed.id)
        for job in jobs:
            await queue.wait(job.id, timeout=10)
        print("\nworker:", worker.stats())
    for name, stats in (await queue.stats()).items():
        print(f"queue {name!r}:", stats)


if __name__ == "__main__":
    anyio.run(main)
