"""Transactional enqueue from the queue's API: jobs built exactly as the queue builds
them (:meth:`hyperqueue.Queue.build`), stored on the application's own asyncpg
connection, inside its transaction."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ParamSpec, TypeVar

import msgspec

import hyperqueue as hq

__all__ = ["enqueue_in", "enqueue_many_in"]

P = ParamSpec("P")
R = TypeVar("R")


async def enqueue_many_in(
    connection: Any, queue: hq.Queue, submissions: Iterable[hq.Submission]
) -> list[hq.Enqueued]:
    """Store the jobs of ``submissions`` on ``connection`` (an asyncpg connection of
    the application, usually inside its transaction): they exist exactly when that
    transaction commits, and vanish if it rolls back.

    The jobs are checked and built as :meth:`hyperqueue.Queue.enqueue_many` builds
    them (tasks, arguments, options, templates, the queue's ``key_ttl`` and tenant
    quotas), all before any is stored. ``queue`` must be on a
    :class:`~hyperqueue_postgres.PostgresStorage` of the same database. Each result
    says whether it created its job or found the one its idempotency key made earlier
    (committed, or made earlier in this transaction). Workers are woken at the commit.

    The queue's in-process ``JobEnqueued`` events are not published (the transaction
    may still roll back); the stored event log has the ``job.enqueued`` entries from
    the commit on, so the server's SSE and webhooks see them.
    """
    from ._storage import PostgresStorage

    storage = queue.storage
    if not isinstance(storage, PostgresStorage):
        raise TypeError(
            f"enqueue_in needs a queue on PostgresStorage, not {type(storage).__name__}"
        )
    jobs = queue.build(submissions)
    if not jobs:
        return []
    await queue.open()  # opens the storage once; nothing after that
    stored = await storage.enqueue(
        jobs,
        now=jobs[0].created_at,
        key_ttl=queue.key_ttl,
        max_queued=queue.tenant_quotas or None,
        connection=connection,
    )
    return [
        hq.Enqueued(job=job, created=new.id == job.id)
        for new, job in zip(jobs, stored, strict=True)
    ]


async def enqueue_in(
    connection: Any,
    queue: hq.Queue,
    task: hq.Task[P, R] | hq.TaskCall[P, R],
    /,
    *args: P.args,
    **kwargs: P.kwargs,
) -> hq.Job:
    """Enqueue one job of ``task`` (with options: ``task.options(...)``) on
    ``connection``, inside the application's transaction; the stored job (or the one
    its idempotency key made earlier). ``args`` and ``kwargs`` are the task's, as in
    ``await task.enqueue(*args, **kwargs)``. See :func:`enqueue_many_in`::

        async with conn.transaction():
            await conn.execute("INSERT INTO orders ...")
            await enqueue_in(conn, queue, send_receipt.options(delay=60), order_id)
    """
    if isinstance(task, hq.TaskCall):
        options = msgspec.structs.asdict(task.options)
        name = task.task.name
    else:
        options, name = {}, task.name
    submission = hq.Submission(task=name, args=tuple(args), kwargs=dict(kwargs), **options)
    [enqueued] = await enqueue_many_in(connection, queue, [submission])
    return enqueued.job
