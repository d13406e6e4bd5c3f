"""Group commit: who joins which batch, and what a cancelled caller leaves behind."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from hyperqueue_sqlite._batch import GroupCommit
from hyperqueue_sqlite._sql import Op

pytestmark = pytest.mark.anyio


class Recorder:
    """Stands in for the database: each batch waits until the test lets it commit."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []
        self.release = anyio.Event()

    async def execute(self, ops: list[Op]) -> None:
        await self.release.wait()
        self.batches.append([op.args[0] for op in ops])
        for op in ops:
            op.result = op.fn(None, *op.args)


def double(_tx: object, x: int) -> int:
    return 2 * x


async def test_callers_arriving_during_a_write_form_the_next_batch() -> None:
    db = Recorder()
    commits = GroupCommit(db.execute)
    results: dict[int, int] = {}

    async def call(x: int) -> None:
        results[x] = await commits.submit(double, x)

    async with anyio.create_task_group() as tg:
        tg.start_soon(call, 0)
        await anyio.wait_all_tasks_blocked()  # 0 is in flight
        for x in range(1, 6):
            tg.start_soon(call, x)
        await anyio.wait_all_tasks_blocked()
        db.release.set()
    # who joins which batch; the order within one is the scheduler's (trio shuffles)
    assert [sorted(batch) for batch in db.batches] == [[0], [1, 2, 3, 4, 5]]
    assert results == {x: 2 * x for x in range(6)}


async def test_batches_are_bounded() -> None:
    db = Recorder()
    db.release.set()
    commits = GroupCommit(db.execute, max_batch=2)
    async with anyio.create_task_group() as tg:
        for x in range(5):
            tg.start_soon(commits.submit, double, x)
    assert max(len(batch) for batch in db.batches) <= 2
    assert sorted(x for batch in db.batches for x in batch) == list(range(5))


async def test_a_cancelled_leader_still_commits_its_batch_then_sees_the_cancel() -> None:
    db = Recorder()
    commits = GroupCommit(db.execute)
    follower_result: list[int] = []
    leader_finished = False

    async def leader() -> None:
        nonlocal leader_finished
        await commits.submit(double, 10)
        leader_finished = True

    async def follower() -> None:
        follower_result.append(await commits.submit(double, 11))

    async with anyio.create_task_group() as tg:
        tg.start_soon(commits.submit, double, 1)  # in flight
        await anyio.wait_all_tasks_blocked()
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as inner:
                inner.start_soon(leader)  # leads the next batch
                await anyio.wait_all_tasks_blocked()
                tg.start_soon(follower)  # joins it
                await anyio.wait_all_tasks_blocked()
                scope.cancel()
                db.release.set()
    assert db.batches == [[1], [10, 11]]  # the leader's batch ran despite the cancel
    assert follower_result == [22]
    assert not leader_finished  # and the leader's cancellation was not swallowed


async def test_a_lone_cancelled_caller_still_commits_then_sees_the_cancel() -> None:
    db = Recorder()
    commits = GroupCommit(db.execute)
    finished = False

    async def lone() -> None:
        nonlocal finished
        await commits.submit(double, 3)  # nothing in flight: runs at once, alone
        finished = True

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lone)
            await anyio.wait_all_tasks_blocked()
            scope.cancel()
            db.release.set()
    assert db.batches == [[3]]
    assert not finished


async def test_callers_back_from_a_batch_of_many_share_the_next_one() -> None:
    db = Recorder()
    db.release.set()
    commits = GroupCommit(db.execute)

    async def together(xs: range) -> None:
        async with anyio.create_task_group() as tg:
            for x in xs:
                tg.start_soon(commits.submit, double, x)

    await together(range(5))  # the first finds nothing in flight and runs alone
    await together(range(5, 10))  # after a batch of many: no lone run ahead of the rest
    # which caller runs alone is the scheduler's choice (trio shuffles)
    assert [len(batch) for batch in db.batches] == [1, 4, 5]
    assert sorted(db.batches[2]) == [5, 6, 7, 8, 9]


async def test_a_gathered_write_shares_its_batch_with_writes_of_the_same_moment() -> None:
    """A write with nothing in flight runs at once, alone (see above), unless it
    gathers: then the writes made in the same moment (a worker's claim and the outcomes
    it stores as it claims) share its transaction, whatever order the scheduler runs
    them in."""
    db = Recorder()
    db.release.set()
    commits = GroupCommit(db.execute)
    async with anyio.create_task_group() as tg:
        for x in range(1, 5):
            tg.start_soon(commits.submit, double, x)  # they run once this task waits
        assert await commits.submit(double, 0, gather=True) == 0
    assert [sorted(batch) for batch in db.batches] == [[0, 1, 2, 3, 4]]
