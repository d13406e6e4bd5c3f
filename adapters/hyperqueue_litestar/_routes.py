"""The REST API over jobs, queues and dead letters (mounted under ``/api/v1``).

Every handler first asks the mode controller whether its operation may run, then calls
the queue; errors travel to the one exception table in :mod:`._errors`. The submission
path is the hot one: no key, no template means one storage call and no extra reads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from litestar import Response, get, post
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.types import ControllerRouterHandler

import hyperqueue as hq
from hyperqueue import Operation

from ._errors import STATUS_BY_ERROR
from ._schemas import (
    BatchItem,
    BatchRequest,
    BatchResponse,
    ErrorBody,
    JobRequest,
    QueueFigures,
    QueuesResponse,
)

if TYPE_CHECKING:
    from ._plugin import HyperqueuePlugin

__all__ = ["MAX_DEPTH", "api_routes"]

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


def _options(plugin: HyperqueuePlugin, body: JobRequest) -> dict[str, Any]:
    """The enqueue options of a submission, its template's defaults filled in."""
    options: dict[str, Any] = {
        "queue": body.queue,
        "priority": body.priority,
        "delay": body.delay,
        "run_at": body.run_at,
        "key": body.key,
        "tenant": body.tenant,
        "timeout": body.timeout,
        "max_attempts": body.max_attempts,
    }
    if body.template is not None:
        template = plugin.template(body.template)
        for name in ("queue", "priority", "timeout", "max_attempts", "tenant"):
            if options[name] is None:
                options[name] = getattr(template, name)
        if options["delay"] is None and options["run_at"] is None:
            options["delay"] = template.delay
    if (body.args and _too_deep(body.args)) or (body.kwargs and _too_deep(body.kwargs)):
        raise hq.OptionError("args", f"arguments nest deeper than {MAX_DEPTH} levels")
    return options


_SCALARS = (str, int, float, bool, type(None))


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
        and body.template is None
        and not body.kwargs  # (``**kwargs`` could collide with the call's own names)
        and all(isinstance(a, _SCALARS) for a in body.args)
    )


async def _enqueue_batch(
    plugin: HyperqueuePlugin, data: BatchRequest
) -> list[hq.Job | hq.HyperqueueError]:
    """All in one storage round trip when every item is valid; else the valid ones one
    by one, each invalid one's error in its place."""
    queue = plugin.queue
    try:
        submissions = [
            hq.Submission(task=item.task, args=tuple(item.args), kwargs=item.kwargs, **opts)
            for item in data.jobs
            for opts in (_options(plugin, item),)
        ]
        return list(await queue.enqueue_many(submissions))
    except (hq.UnknownTask, hq.ArgumentError, hq.OptionError):
        jobs: list[hq.Job | hq.HyperqueueError] = []
        for item in data.jobs:
            try:
                opts = _options(plugin, item)
                jobs.append(
                    await queue.enqueue(item.task, args=item.args, kwargs=item.kwargs, **opts)
                )
            except (hq.UnknownTask, hq.ArgumentError, hq.OptionError) as exc:
                jobs.append(exc)
        return jobs


def _queue_figures(stats: hq.QueueStats) -> QueueFigures:
    return QueueFigures(
        queue=stats.queue,
        pending=stats.pending,
        running=stats.running,
        completed=stats.completed,
        failed=stats.failed,
        cancelled=stats.cancelled,
        total=stats.total,
    )


def api_routes(plugin: HyperqueuePlugin) -> list[ControllerRouterHandler]:
    """The API's route handlers, bound to ``plugin``'s queue and modes."""
    from ._plugin import recording_fresh

    queue = plugin.queue
    tasks = queue.tasks
    modes = plugin.modes

    @post(
        "/jobs",
        operation_id="submitJob",
        summary="Submit a job",
        description="201 with the new job; 200 with the existing job when its key was seen.",
        responses=_errors(422, 503),
    )
    async def submit_job(data: JSONBody[JobRequest]) -> Response[hq.Job]:
        modes.check(Operation.SUBMIT)
        if _plain(data):  # the hot path: the task's defaults, one storage call
            task = tasks.get(data.task)
            if task is None:
                raise hq.UnknownTask(data.task, tuple(tasks))
            return Response(await task.enqueue(*data.args), status_code=201)
        options = _options(plugin, data)
        if data.key is None:
            job = await queue.enqueue(data.task, args=data.args, kwargs=data.kwargs, **options)
            return Response(job, status_code=201)
        with recording_fresh() as created:
            job = await queue.enqueue(data.task, args=data.args, kwargs=data.kwargs, **options)
        return Response(job, status_code=201 if job.id in created else 200)

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
        with recording_fresh() as created:
            jobs = await _enqueue_batch(plugin, data)
        items: list[BatchItem] = []
        counts = {"created": 0, "existing": 0, "failed": 0}
        for outcome in jobs:
            if isinstance(outcome, hq.Job):
                fresh = outcome.id in created
                counts["created" if fresh else "existing"] += 1
                items.append(BatchItem(status_code=201 if fresh else 200, job=outcome))
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

    @get("/jobs", operation_id="listJobs", summary="List jobs, newest first")
    async def list_jobs(
        status: Annotated[hq.JobStatus | None, QueryParameter()] = None,
        queue_name: Annotated[str | None, QueryParameter(name="queue")] = None,
        task: Annotated[str | None, QueryParameter()] = None,
        tenant: Annotated[str | None, QueryParameter()] = None,
        cursor: Annotated[str | None, QueryParameter()] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    ) -> hq.Page:
        modes.check(Operation.READ)
        return await queue.list_jobs(
            status=status, queue=queue_name, task=task, tenant=tenant, cursor=cursor, limit=limit
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
        return QueuesResponse(queues=[_queue_figures(s) for s in stats.values()])

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
        plugin.streams.route(modes),
    ]
