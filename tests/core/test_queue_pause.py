"""Queue.pause_queue / resume_queue on the fake clock: a running pool claims nothing from
a paused queue and runs its jobs once resumed, the events each change publishes, and the
names refused."""

from __future__ import annotations

import anyio
import msgspec
import pytest

import hyperqueue as hq
from hyperqueue.testing import FakeClock

pytestmark = pytest.mark.anyio


async def test_a_pool_runs_nothing_of_a_paused_queue_until_it_is_resumed(
    queue: hq.Queue, clock: FakeClock
) -> None:
    ran: list[str] = []

    @queue.task
    async def note(text: str) -> None:
        ran.append(text)

    await queue.pause_queue("held")
    held = await queue.enqueue("note", args=("held",), queue="held")
    free = await queue.enqueue("note", args=("free",))
    with anyio.fail_after(10):
        async with queue.worker(concurrency=2):
            assert (await queue.wait(free.id)).status is hq.JobStatus.COMPLETED
            await clock.advance(60)  # a minute passes: the paused job stays
            await anyio.wait_all_tasks_blocked()
            assert ran == ["free"]
            assert (await queue.get(held.id)).status is hq.JobStatus.PENDING  # type: ignore[union-attr]
            assert (await queue.stats())["held"].pending == 1
            await queue.resume_queue("held")
            assert (await queue.wait(held.id)).status is hq.JobStatus.COMPLETED
    assert ran == ["free", "held"]


async def test_each_change_publishes_an_event(queue: hq.Queue, clock: FakeClock) -> None:
    seen: list[hq.Event] = []
    queue.events.subscribe(seen.append, hq.QueuePaused, hq.QueueResumed)
    await queue.pause_queue("mail")
    await clock.advance(5)
    await queue.resume_queue("mail")
    assert seen == [
        hq.QueuePaused(at=clock.now() - 5, queue="mail"),
        hq.QueueResumed(at=clock.now(), queue="mail"),
    ]
    assert msgspec.json.decode(msgspec.json.encode(seen[0]))["type"] == "queue.paused"


@pytest.mark.parametrize("name", ["", "q" * 201, None, 3])
async def test_a_bad_name_is_an_option_error_and_changes_nothing(
    queue: hq.Queue, name: object
) -> None:
    with pytest.raises(hq.OptionError, match="queue"):
        await queue.pause_queue(name)  # type: ignore[arg-type]
    assert await queue.paused_queues() == []
