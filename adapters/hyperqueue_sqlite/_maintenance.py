"""Retention and upkeep of a job database, as a supervised background service."""

from __future__ import annotations

import hyperqueue as hq

from ._retention import RetentionPolicy
from ._storage import SQLiteStorage

__all__ = ["maintenance_service"]


def maintenance_service(
    storage: SQLiteStorage,
    *,
    policy: RetentionPolicy | None = None,
    interval: float = 3600.0,
    clock: hq.Clock | None = None,
    name: str = "sqlite-maintenance",
) -> hq.Service:
    """A service that, every ``interval`` seconds (default 1 h), prunes finished jobs by
    ``policy`` (archiving them first when it names a folder, pruning harder when disk
    runs low) and runs ``PRAGMA optimize``.

    Run it under an :class:`hyperqueue.Supervisor`, which restarts it with backoff after
    a failure and reports its health::

        async with hq.Supervisor() as services:
            services.add(maintenance_service(storage, policy=RetentionPolicy(...)))
    """
    rules = policy if policy is not None else RetentionPolicy()
    now = (clock if clock is not None else hq.SystemClock()).now

    async def upkeep() -> None:
        await storage.enforce_retention(rules, now=now())
        await storage.optimize()

    return hq.Service(name, upkeep, interval=interval)
