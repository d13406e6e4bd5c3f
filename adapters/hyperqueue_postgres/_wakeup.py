"""NOTIFY without serializing commits: at most one notifying transaction in flight.

PostgreSQL takes a global lock at the commit of every transaction that sent a NOTIFY
and holds it through the commit's WAL flush, so notifying transactions commit one
after another and lose group commit: with 100 producers enqueueing one job per call,
notifying every transaction halved the enqueue rate here. Workers need one wake-up
per burst, not one per transaction.

So a storage object lets one transaction at a time carry the NOTIFY. A transaction
that makes work ready while another notifying one is in flight commits without it,
and the gate owes a wake-up: once both that commit and the one in flight are done,
one more NOTIFY goes out on its own (the *trailing* notify), covering every
transaction that committed without one in the meantime. A job is therefore announced
at most one round trip after the later of its own commit and the in-flight one; at
most one NOTIFY per storage object is ever in flight. Within this process the
storage wakes its own workers directly, as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

__all__ = ["NotifyGate"]

_log = logging.getLogger("hyperqueue.postgres")


class NotifyGate:
    """``take`` before a commit that made work ready: whether this transaction carries
    the NOTIFY. Then ``landed`` when a transaction that took it ends (committed or
    not), or ``missed`` when one that did not take it has committed."""

    __slots__ = ("_flying", "_owed", "_send", "_trailing")

    def __init__(self, send: Callable[[], Awaitable[None]]) -> None:
        self._send = send
        self._flying = False
        self._owed = False
        self._trailing: asyncio.Task[None] | None = None

    def take(self) -> bool:
        if self._flying:
            return False
        self._flying = True
        return True

    def landed(self) -> None:
        self._flying = False
        if self._owed:
            self._start_trailing()

    def missed(self) -> None:
        self._owed = True
        if not self._flying:
            self._start_trailing()

    def _start_trailing(self) -> None:
        self._flying = True
        self._owed = False
        self._trailing = asyncio.get_running_loop().create_task(self._send_trailing())

    async def _send_trailing(self) -> None:
        try:
            await self._send()
        except Exception as exc:  # idle workers still poll: late, never lost
            _log.warning("a trailing NOTIFY failed (%s); idle workers poll", exc)
        finally:
            self.landed()

    async def aclose(self) -> None:
        """Wait for a trailing notify in flight (its connection goes back to the pool)."""
        while (task := self._trailing) is not None and not task.done():
            await asyncio.wait([task])
