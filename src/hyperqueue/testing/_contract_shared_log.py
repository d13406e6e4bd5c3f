"""The storage contract of a log shared by several storage objects (processes): for
backends that more than one process opens (SQLite's file, PostgreSQL's database).

Subclass :class:`SharedLogContract` next to
:class:`~hyperqueue.testing.StorageContract` and provide, besides ``storage``, a
``sibling`` fixture: a second opened storage object on the same backend, as another
process opens it (its own :attr:`~hyperqueue.abc.Storage.origin`).
"""

from __future__ import annotations

from hyperqueue.abc import Storage

from ._contract import T0, _Maker

__all__ = ["SharedLogContract"]


class SharedLogContract:
    """Cases that need entries of two origins in one event log."""

    async def test_a_read_skipping_an_origin_returns_every_other_entry_in_order(
        self, storage: Storage, sibling: Storage, make: _Maker
    ) -> None:
        """What an event relay relies on: reading only what other processes wrote, it
        misses none of it, and a short read covered the log up to the newest id taken
        before it (its own entries there are passed over once)."""
        assert sibling.origin != storage.origin
        start = await storage.last_event_id()
        a, b, c, d, e = (make() for _ in range(5))
        await storage.enqueue([a], now=T0, key_ttl=None)
        await sibling.enqueue([b], now=T0, key_ttl=None)
        await storage.enqueue([c], now=T0, key_ttl=None)
        await sibling.cancel(a.id, now=T0 + 1)
        await storage.cancel(b.id, now=T0 + 1)
        await sibling.enqueue([d, e], now=T0 + 2, key_ttl=None)
        await storage.cancel(c.id, now=T0 + 3)
        entries = await storage.read_events(after=start)
        newest = await storage.last_event_id()
        assert newest == entries[-1].id
        theirs = await storage.read_events(after=start, skip_origin=storage.origin)
        assert [(x.type, x.job.id) for x in theirs] == [
            ("job.enqueued", b.id),
            ("job.cancelled", a.id),
            ("job.enqueued", d.id),
            ("job.enqueued", e.id),
        ]
        assert theirs == [x for x in entries if x.origin == sibling.origin]
        mine = await sibling.read_events(after=start, skip_origin=sibling.origin)
        assert [(x.type, x.job.id) for x in mine] == [
            ("job.enqueued", a.id),
            ("job.enqueued", c.id),
            ("job.cancelled", b.id),
            ("job.cancelled", c.id),
        ]
        assert all(x.origin == storage.origin for x in mine)
        # the limit counts the entries returned, not those passed over
        skip = storage.origin
        assert await storage.read_events(after=start, limit=2, skip_origin=skip) == theirs[:2]
        assert await storage.read_events(after=theirs[1].id, skip_origin=skip) == theirs[2:]
        assert await storage.read_events(after=newest, skip_origin=skip) == []
        assert await sibling.read_events(after=theirs[-1].id, skip_origin=sibling.origin) == [
            mine[-1]
        ]
