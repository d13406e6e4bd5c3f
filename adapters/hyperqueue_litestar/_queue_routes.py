"""Pausing and resuming a whole queue (mounted under ``/api/v1`` with the job routes).

``POST /queues/{name}/pause`` stops every worker, in every process and host on the
storage, from claiming the queue's jobs; ``/resume`` lets them claim again and wakes
idle workers. Jobs still enqueue and running jobs finish. A queue exists by its name, so
one with no jobs yet may be paused; both are idempotent and answer the queue's state
after the change. ``GET /queues`` says which queues are paused. Changing needs the
operator role (as pausing a schedule does) and the audit log records it as
``queue.pause`` / ``queue.resume`` on ``queue:{name}``.
"""

from __future__ import annotations

import msgspec
from litestar import post
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import ResponseSpec
from litestar.params import FromPath

import hyperqueue as hq
from hyperqueue import Operation

from ._auth import ROLE_OPT
from ._schemas import ErrorBody

__all__ = ["QueueState", "queue_routes"]


class QueueState(msgspec.Struct, frozen=True, kw_only=True):
    """A queue's name and whether it is paused, after a change."""

    queue: str
    paused: bool


_CHANGE = {
    422: ResponseSpec(
        data_container=ErrorBody, description="Not a queue name (1 to 200 characters)"
    ),
    503: ResponseSpec(
        data_container=ErrorBody,
        description="Refused by the current mode (Retry-After says when to try again)",
    ),
}
_OPERATOR = {ROLE_OPT: "operator"}


def queue_routes(queue: hq.Queue, modes: hq.ModeController) -> list[HTTPRouteHandler]:
    """The pause and resume routes over ``queue``, filtered by ``modes``."""

    @post(
        "/queues/{name:str}/pause",
        operation_id="pauseQueue",
        summary="Stop claiming a queue's jobs, in every process",
        description="Jobs still enqueue and running jobs finish; pausing twice is harmless.",
        status_code=200,
        responses=_CHANGE,
        opt=_OPERATOR,
        tags=["queues"],
    )
    async def pause_queue(name: FromPath[str]) -> QueueState:
        modes.check(Operation.ADMIN)
        await queue.pause_queue(name)
        return QueueState(queue=name, paused=True)

    @post(
        "/queues/{name:str}/resume",
        operation_id="resumeQueue",
        summary="Claim a paused queue's jobs again, in every process",
        description="Idle workers wake at once; resuming a queue not paused is harmless.",
        status_code=200,
        responses=_CHANGE,
        opt=_OPERATOR,
        tags=["queues"],
    )
    async def resume_queue(name: FromPath[str]) -> QueueState:
        modes.check(Operation.ADMIN)
        await queue.resume_queue(name)
        return QueueState(queue=name, paused=False)

    return [pause_queue, resume_queue]
