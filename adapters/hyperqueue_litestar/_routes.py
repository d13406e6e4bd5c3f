"""The REST API over jobs, queues and dead letters (mounted under ``/api/v1``).

Every handler first asks the mode controller whether its operation may run, then calls
the queue; errors travel to the one exception table in :mod:`._errors`. The submission
path is the hot one: no key, no template means one storage call and no extra reads.
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Response, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.types import ControllerRouterHandler, Scope

import hyperqueue as hq
from hyperqueue import Operation

from ._errors import STATUS_BY_ERROR
from ._insights_routes import insights_routes
from ._queue_routes import queue_routes
from ._schedule_routes import schedule_routes
from ._schemas import (
    BatchItem,
    BatchRequest,
    BatchResponse,
    ErrorBody,
    JobRequest,
    QueueFigures,
    QueuesResponse,
)
from ._search_routes import search_routes
from ._worker_routes import worker_routes
from ._workflow_routes import workflow_routes

__all__ = ["LANE_FAILED", "MAX_DEPTH", "Submit", "api_routes"]

MAX_DEPTH = 32
"""How deeply arguments may nest (lists and objects inside each other)."""


def _errors(*codes: int) -> dict[int, ResponseSpec]:
    return {
        code: ResponseSpec(data_container=ErrorBody, description=_DESCRIPTIONS[code])
        for code in codes
    }


_DESCRIPTIONS = {
    404: "No job has this id",
    409: "The job's status does not allow this change",
    422: "Unknown task, arguments that do not fit its signature, or a bad option",
    503: "Refused by the current mode (Retry-After says when to try again)",
}


def _too_deep(value: Any) -> bool:
    """Whether ``value`` nests deeper than :data:`MAX_DEPTH`, without recursion."""
    level: list[Any] = [value]
    depth = 0
    while level:
        depth += 1
        if depth > MAX_DEPTH:
            return True
        nested: list[Any] = []
        for item in level:
            if isinstance(item, dict):
                nested.extend(v for v in item.values() if isinstance(v, list | dict))
            else:
                nested.extend(v for v in item if isinstance(v, list | dict))
        level = nested
    return False


def _submission(body: JobRequest) -> hq.Submission:
    """The core's submission for a request body: one options path (templates, checks
    and defaults are the queue's)."""
    if (body.args and _too_deep(body.args)) or (body.kwargs and _too_deep(body.kwargs)):
        raise hq.OptionError("args", f"arguments nest deeper than {MAX_DEPTH} levels")
    return hq.Submission(
        task=body.task,
        args=tuple(body.args),
        kwargs=body.kwargs,
        queue=body.queue,
        priority=body.priority,
        delay=body.delay,
        run_at=body.run_at,
        key=body.key,
        tenant=body.tenant,
        timeout=body.timeout,
        max_attempts=body.max_attempts,
        max_rescues=body.max_rescues,
        template=body.template,
    )


_SCALARS = frozenset({str, int, float, bool, type(None)})
"""The types of flat arguments (a decoded JSON body has exactly these, no subclass)."""


def _flat(args: list[Any]) -> bool:
    return _SCALARS.issuperset(map(type, args))


def _plain(body: JobRequest) -> bool:
    """A submission with no option, no keyword and flat arguments: nothing to check
    but the arguments against the task's signature."""
    return (
        body.queue is None
        and body.priority is None
        and body.delay is None
        and body.run_at is None
        and body.key is None
        and body.tenant is None
        and body.timeout is None
        and body.max_attempts is None
        and body.max_rescues is None
        and body.template is None
        and not body.kwargs  # (``**kwargs`` could collide with the call's own names)
        and _flat(body.args)
    )


_REFUSALS = (hq.UnknownTask, hq.ArgumentError, hq.OptionError)

LANE_FAILED = "hyperqueue.lane_failed"
"""Key in ``scope["state"]``: the exception the submission's fast lane met doing this
request's work (see :mod:`._lane`), for the handler to raise instead of doing it again."""


class Submit:
    """What ``POST /jobs`` does with a body, shared by its handler and its fast lane:
    the job and the status to answer (201 created, 200 when its key was seen)."""

    __slots__ = ("modes", "queue", "tasks")

    def __init__(self, queue: hq.Queue, modes: hq.ModeController) -> None:
        self.queue = queue
        self.modes = modes
        self.tasks = queue.tasks

    async def __call__(self, data: JobRequest) -> tuple[hq.Job, int]:
        self.modes.check(Operation.SUBMIT)
        if _plain(data):  # the hot path: the task's defaults, one storage call
            task = self.tasks.get(data.task)
            if task is None:
                raise hq.UnknownTask(data.task, tuple(self.tasks))
            return await task.enqueue(*data.args), 201
        [result] = await self.queue.enqueue_many([_submission(data)])
        return result.job, 201 if result.created else 200

    @staticmethod
    def plain(data: JobRequest) -> bool:
        """Whether ``data`` takes the hot path (see ``_plain``)."""
        return _plain(data)


async def _enqueue_batch(
    queue: hq.Queue, data: BatchRequest
) -> list[hq.Enqueued | hq.HyperqueueError]:
    """All in one storage round trip when every item is valid; else the valid ones one
    by one, each invalid one's error in its place."""
    try:
        return list(await queue.enqueue_many([_submission(item) for item in data.jobs]))
    except _REFUSALS:
        results: list[hq.Enqueued | hq.HyperqueueError] = []
        for item in data.jobs:
            try:
                [result] = await queue.enqueue_many([_submission(item)])
                results.append(result)
            except _REFUSALS as exc:
                results.append(exc)
        return results


def _queue_figures(stats: hq.QueueStats, paused: set[str]) -> QueueFigures:
    return QueueFigures(
        queue=stats.queue,
        pending=stats.pending,
        running=stats.running,
        completed=stats.completed,
        failed=stats.failed,
        cancelled=stats.cancelled,
        total=stats.total,
        unserved=stats.unserved,
        paused=stats.queue in paused,
    )


def api_routes(
    queue: hq.Queue,
    modes: hq.ModeController,
    events: HTTPRouteHandler,
    submit: Submit | None = None,
) -> list[ControllerRouterHandler]:
    """The API's route handlers over ``queue``, filtered by ``modes``; ``events`` is the
    event stream's route, ``submit`` what ``POST /jobs`` does (shared with its fast
    lane)."""
    do_submit = submit if submit is not None else Submit(queue, modes)

    @post(
        "/jobs",
        operation_id="submitJob",
        summary="Submit a job",
        description="201 with the new job; 200 with the existing job when its key was seen.",
        responses=_errors(422, 503),
    )
    async def submit_job(data: JSONBody[JobRequest], scope: Scope) -> Response[hq.Job]:
        state = scope.get("state")
        failed = state.pop(LANE_FAILED, None) if state else None
        if failed is not None:  # the fast lane did the work and met this: answer it
            raise failed
        job, status = await do_submit(data)
        return Response(job, status_code=status)

    @post(
        "/jobs/batch",
        operation_id="submitJobs",
        summary="Submit many jobs",
        description="One result per item, in order: the job, or an error with its status.",
        status_code=200,
        responses=_errors(422, 503),
    )
    async def submit_batch(data: JSONBody[BatchRequest]) -> BatchResponse:
        modes.check(Operation.SUBMIT)
        results = await _enqueue_batch(queue, data)
        items: list[BatchItem] = []
        counts = {"created": 0, "existing": 0, "failed": 0}
        for outcome in results:
            if isinstance(outcome, hq.Enqueued):
                fresh = outcome.created
                counts["created" if fresh else "existing"] += 1
                items.append(BatchItem(status_code=201 if fresh else 200, job=outcome.job))
            else:
                counts["failed"] += 1
                items.append(
                    BatchItem(
                        status_code=STATUS_BY_ERROR.get(type(outcome), 422),
                        detail=str(outcome),
                        extra={"error": type(outcome).__name__},
                    )
                )
        return BatchResponse(items=items, **counts)

    @get(
        "/jobs",
        operation_id="listJobs",
        summary="List jobs, newest first",
        description="`q` is a search query (`status:failed task:send_* since:1h`), "
        "ANDed with the other filters; a query that does not parse answers 422.",
        responses=_errors(422),
    )
    async def list_jobs(
        status: Annotated[hq.JobStatus | None, QueryParameter()] = None,
        queue_name: Annotated[str | None, QueryParameter(name="queue")] = None,
        task: Annotated[str | None, QueryParameter()] = None,
        tenant: Annotated[str | None, QueryParameter()] = None,
        cursor: Annotated[str | None, QueryParameter()] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
        q: Annotated[str | None, QueryParameter(max_length=2000)] = None,
    ) -> hq.Page:
        modes.check(Operation.READ)
        where = None if q is None else hq.JobFilter.parse(q, now=queue.clock.now())
        return await queue.list_jobs(
            status=status,
            queue=queue_name,
            task=task,
            tenant=tenant,
            cursor=cursor,
            limit=limit,
            where=where,
        )

    @get("/jobs/{job_id:str}", operation_id="getJob", summary="One job", responses=_errors(404))
    async def get_job(job_id: FromPath[str]) -> hq.Job:
        modes.check(Operation.READ)
        return await queue.get(job_id)

    @post(
        "/jobs/{job_id:str}/cancel",
        operation_id="cancelJob",
        summary="Cancel a pending or running job",
        status_code=200,
        responses=_errors(404, 409, 503),
    )
    async def cancel_job(job_id: FromPath[str]) -> hq.Job:
        modes.check(Operation.ADMIN)
        return await queue.cancel(job_id)

    @post(
        "/jobs/{job_id:str}/retry",
        operation_id="retryJob",
        summary="Run a failed or cancelled job again",
        status_code=200,
        responses=_errors(404, 409, 503),
    )
    async def retry_job(job_id: FromPath[str]) -> hq.Job:
        modes.check(Operation.SUBMIT)
        return await queue.retry(job_id)

    @get("/queues", operation_id="listQueues", summary="Jobs by status, per queue")
    async def list_queues() -> QueuesResponse:
        modes.check(Operation.STATUS)
        stats = await queue.stats()
        paused = set(await queue.paused_queues())
        figures = [_queue_figures(s, paused) for s in stats.values()]
        figures += [  # a paused queue with no jobs is listed too, to be resumed
            QueueFigures(
                queue=name,
                pending=0,
                running=0,
                completed=0,
                failed=0,
                cancelled=0,
                total=0,
                paused=True,
            )
            for name in sorted(paused - stats.keys())
        ]
        return QueuesResponse(queues=figures)

    @get(
        "/dead-letters",
        operation_id="listDeadLetters",
        summary="Failed jobs (attempts used up), newest first",
    )
    async def dead_letters(
        queue_name: Annotated[str | None, QueryParameter(name="queue")] = None,
        cursor: Annotated[str | None, QueryParameter()] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    ) -> hq.Page:
        modes.check(Operation.READ)
        return await queue.dead_letters(queue=queue_name, cursor=cursor, limit=limit)

    return [
        submit_job,
        submit_batch,
        list_jobs,
        get_job,
        cancel_job,
        retry_job,
        list_queues,
        dead_letters,
        events,
        *workflow_routes(queue, modes),
        *schedule_routes(queue, modes),
        *queue_routes(queue, modes),
        *worker_routes(queue, modes),
        *insights_routes(queue, modes),
        *search_routes(queue, modes),
    ]
