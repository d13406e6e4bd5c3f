"""Group commit: concurrent writes share one transaction.

SQLite has one writer at a time, and each trip to the connection thread costs more
than the statements of a small transaction. So while one transaction is in flight,
every write that arrives joins the next batch; when the lock frees, that batch runs as
one transaction and one trip. No background task is needed: the first caller of a batch
leads it (waits for the lock, runs it), the others wait for its result. A caller that
finds nothing in flight runs its op at once, as a batch of one that nobody can join
(a single producer awaiting one write after another pays for no batch machinery),
unless it asks to ``gather``: then it leads a batch and lets the event loop run twice
before closing it, so writes made in the same moment share it (a worker's claim and
the outcomes it stores as it claims: a transaction and its commit fewer per claim).

The leader runs shielded: a batch that others joined must run even if its leader is
cancelled, and an enqueue must not be half-known. The leader's cancellation is
re-raised once the batch committed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel

from ._sql import Op

__all__ = ["GroupCommit"]


class GroupCommit:
    """Runs ops in batches of at most ``max_batch`` through ``execute``."""

    __slots__ = ("_alone", "_done", "_execute", "_lock", "_max", "_next")

    def __init__(
        self, execute: Callable[[list[Op]], Awaitable[None]], *, max_batch: int = 1000
    ) -> None:
        self._execute = execute
        self._max = max_batch
        self._lock = anyio.Lock()
        self._next: list[Op] | None = None
        self._done: anyio.Event | None = None
        self._alone = True  # whether the last batch had one op

    async def submit(self, fn: Callable[..., Any], *args: Any, gather: bool = False) -> Any:
        op = Op(fn, args)
        ops = self._next
        if ops is None and self._alone and not gather and not self._lock.locked():
            # nothing in flight, no batch forming (its leader would hold or await the
            # lock) and the last batch was alone: run at once, with no event to wait on
            # nor batch to join. After a batch of many, its callers come back together,
            # and the first takes the path below, whose wait for the lock lets the
            # others join (else batches of one and of the rest would alternate).
            self._lock.acquire_nowait()
            try:
                with anyio.CancelScope(shield=True):
                    await self._execute([op])
            finally:
                self._lock.release()
            await anyio.lowlevel.checkpoint_if_cancelled()
        elif ops is not None and len(ops) < self._max:
            ops.append(op)
            done = self._done
            assert done is not None
            await done.wait()
        else:
            ops = self._next = [op]
            done = self._done = anyio.Event()
            with anyio.CancelScope(shield=True):
                if gather:  # two turns of the loop: trio runs ready tasks in any order
                    await anyio.lowlevel.cancel_shielded_checkpoint()
                    await anyio.lowlevel.cancel_shielded_checkpoint()
                async with self._lock:  # the batch before ours is in flight
                    if self._next is ops:  # close ours: later callers form the next
                        self._next = self._done = None
                    self._alone = len(ops) == 1
                    try:
                        await self._execute(ops)
                    finally:
                        done.set()
            await anyio.lowlevel.checkpoint_if_cancelled()
        if op.error is not None:
            raise op.error
        return op.result

    async def exclusive(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``fn`` between batches, with no transaction open (VACUUM needs that)."""
        async with self._lock:
            return await fn()
