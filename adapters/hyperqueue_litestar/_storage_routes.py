"""The storage routes: what a remote :class:`hyperqueue.Queue` needs beyond the job API
to use a server as its storage (``hyperqueue_http.HttpStorage``), under
``/api/v1/storage``.

The public job routes build jobs from a task name and check them against the server's
tasks; a client queue builds and checks its jobs itself (its own tasks, ids and
defaults), so ``/storage/enqueue`` stores jobs as built, as
:meth:`hyperqueue.abc.Storage.enqueue` does, but only new ones (pending, no attempt, no
claim): a client cannot store a job as running or finished. Tenant caps are the
tighter of the client's and the server's. The other routes read the storage as it is
(counts, backlog, the event log, live workers) or carry workflows and schedules whole.

Roles: ``GET`` reads need ``viewer``, every ``POST`` ``operator`` (the searches too, as
the security guide's rule says: a viewer searches with ``GET /jobs?q=``);
``/storage/info`` (the storage's origin and the server's clock) is open to ``worker``
keys too, which open a client.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from litestar import get, post
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.types import ControllerRouterHandler

import hyperqueue as hq
from hyperqueue import Operation

from ._auth import ROLE_OPT
from ._schemas import MAX_ATTEMPTS
from ._worker_schemas import (
    MAX_INT,
    MAX_ITEMS,
    MAX_LEASE,
    MAX_WAIT,
    ClaimResponse,
    CountResponse,
    EnqueueRequest,
    FireRequest,
    FireResponse,
    ListenResponse,
    MatchingRequest,
    PauseRequest,
    SaveScheduleRequest,
    SearchRequest,
    StorageInfo,
    WorkflowBody,
)

__all__ = ["MAX_QUEUE_NAME", "check_queue_name", "storage_routes", "tighter"]

_VIEWER = {ROLE_OPT: "viewer"}
_OPERATOR = {ROLE_OPT: "operator"}
_WORKER = {ROLE_OPT: "worker"}


MAX_QUEUE_NAME = 200
"""The longest queue name that may be paused (:meth:`hyperqueue.Queue.pause_queue`'s)."""


def check_queue_name(name: str) -> None:
    """Refuse (422) a queue name the core would refuse, before it reaches the storage."""
    if not 0 < len(name) <= MAX_QUEUE_NAME:
        raise hq.OptionError("queue", f"must be a string of 1 to {MAX_QUEUE_NAME} characters")


def tighter(*caps: Mapping[str, int]) -> dict[str, int]:
    """Per tenant, the lowest of the caps given (a tenant missing from one has none
    there)."""
    merged: dict[str, int] = {}
    for each in caps:
        for tenant, cap in each.items():
            merged[tenant] = min(cap, merged.get(tenant, cap))
    return merged


def _check_new(jobs: list[hq.Job]) -> None:
    """Refuse (422) a job that is not new: storing it would skip the claim and its lease."""
    for job in jobs:
        if (
            job.status is not hq.JobStatus.PENDING
            or job.attempts
            or job.token
            or job.lease_until is not None
            or job.worker is not None
            or job.started_at is not None
            or job.finished_at is not None
            or job.rescues
        ):
            raise hq.OptionError(
                "jobs",
                f"job {job.id!r} is not new: only pending jobs with no attempt and no "
                "claim can be enqueued",
            )
        if not (0 < job.max_attempts <= MAX_ATTEMPTS and 0 <= job.max_rescues <= MAX_ATTEMPTS):
            raise hq.OptionError(
                "jobs", f"job {job.id!r}: max_attempts and max_rescues go up to {MAX_ATTEMPTS}"
            )


def _check_workflow(record: hq.WorkflowRecord, jobs: list[hq.Job]) -> None:
    """Refuse (422) a workflow whose steps and jobs do not match one to one, or whose
    caps the storage cannot hold (SQLite and PostgreSQL keep 64-bit integers)."""
    caps = [record.concurrency, *(j.step.concurrency for j in jobs if j.step is not None)]
    if any(c is not None and not 1 <= c <= MAX_INT for c in caps):
        raise hq.OptionError("workflow", f"concurrency goes from 1 to {MAX_INT}, or null")
    named = {
        (job.step.name, job.id)
        for job in jobs
        if job.step is not None and job.step.workflow == record.id
    }
    if len(named) != len(jobs) or named != set(record.steps.items()):
        raise hq.OptionError(
            "workflow",
            f"the steps of workflow {record.id!r} and the jobs sent must match one to one: "
            "each job a step of this workflow, named in its steps with the job's id",
        )
    for job in jobs:
        assert job.step is not None
        if not 0 <= job.step.waiting <= len(job.step.parents):
            raise hq.OptionError("jobs", f"job {job.id!r}: a step waits for at most its parents")


async def _check_unknown(storage: hq.abc.Storage, jobs: list[hq.Job]) -> None:
    """Refuse (409) jobs whose id is taken: storing one would replace a job, or fail."""
    seen: set[str] = set()
    for job in jobs:
        if job.id in seen or await storage.get(job.id) is not None:
            raise hq.InvalidTransition(job.id, "stored already", "enqueue")
        seen.add(job.id)


def storage_routes(queue: hq.Queue, modes: hq.ModeController) -> list[ControllerRouterHandler]:
    """The storage route handlers over ``queue``'s storage."""
    storage = queue.storage
    clock = queue.clock

    @get("/storage/info", operation_id="storageInfo", summary="The served storage", opt=_WORKER)
    async def info() -> StorageInfo:
        modes.check(Operation.STATUS)
        return StorageInfo(
            origin=storage.origin,
            now=clock.now(),
            max_wait=MAX_WAIT,
            max_lease=MAX_LEASE,
            max_items=MAX_ITEMS,
        )

    @post(
        "/storage/enqueue",
        operation_id="storageEnqueue",
        summary="Store jobs built by a client's queue",
        status_code=200,
        opt=_OPERATOR,
    )
    async def enqueue(data: JSONBody[EnqueueRequest]) -> ClaimResponse:
        modes.check(Operation.SUBMIT)
        _check_new(data.jobs)
        await _check_unknown(storage, data.jobs)
        now = clock.now()
        caps = tighter(queue.tenant_quotas, data.max_queued or {})
        stored = await storage.enqueue(
            data.jobs, now=now, key_ttl=data.key_ttl, max_queued=caps or None
        )
        if queue.events.active:
            for given, job in zip(data.jobs, stored, strict=True):
                if given.id == job.id:
                    queue.events.publish(hq.JobEnqueued(at=now, job=job))
        return ClaimResponse(jobs=stored)

    @get("/storage/jobs", operation_id="storageListJobs", summary="Jobs newest first", opt=_VIEWER)
    async def list_jobs(
        status: Annotated[hq.JobStatus | None, QueryParameter()] = None,
        queue_name: Annotated[str | None, QueryParameter(name="queue")] = None,
        task: Annotated[str | None, QueryParameter()] = None,
        tenant: Annotated[str | None, QueryParameter()] = None,
        cursor: Annotated[str | None, QueryParameter()] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_ITEMS)] = 100,
    ) -> hq.Page:
        modes.check(Operation.READ)
        return await storage.list(
            status=status, queue=queue_name, task=task, tenant=tenant, cursor=cursor, limit=limit
        )

    @get("/storage/counts", operation_id="storageCounts", summary="Jobs per status", opt=_VIEWER)
    async def counts() -> dict[str, dict[hq.JobStatus, int]]:
        modes.check(Operation.READ)
        return await storage.counts()

    @get("/storage/backlog", operation_id="storageBacklog", summary="Pending per task", opt=_VIEWER)
    async def backlog() -> list[hq.TaskBacklog]:
        modes.check(Operation.READ)
        return await storage.backlog()

    @get("/storage/events", operation_id="storageEvents", summary="The event log", opt=_VIEWER)
    async def events(
        after: Annotated[int, QueryParameter(ge=0, le=MAX_INT)] = 0,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_ITEMS)] = MAX_ITEMS,
    ) -> list[hq.StoredEvent]:
        modes.check(Operation.READ)
        return await storage.read_events(after=after, limit=limit)

    @get(
        "/storage/events/last",
        operation_id="storageLastEvent",
        summary="The newest id of the event log",
        opt=_VIEWER,
    )
    async def last_event() -> ListenResponse:
        modes.check(Operation.READ)
        return ListenResponse(event_id=await storage.last_event_id(), changed=False)

    @get("/storage/workers", operation_id="storageWorkers", summary="Live workers", opt=_VIEWER)
    async def workers() -> list[hq.WorkerInfo]:
        modes.check(Operation.READ)
        return await storage.workers(now=clock.now())

    # -- search and bulk actions ------------------------------------------------------

    @post(
        "/storage/search",
        operation_id="storageSearch",
        summary="Jobs that pass a filter",
        status_code=200,
        opt=_OPERATOR,
    )
    async def search(data: JSONBody[SearchRequest]) -> hq.Page:
        modes.check(Operation.READ)
        return await storage.search(data.where, cursor=data.cursor, limit=data.limit)

    @post(
        "/storage/count",
        operation_id="storageCount",
        summary="How many jobs pass a filter",
        status_code=200,
        opt=_OPERATOR,
    )
    async def count(data: JSONBody[SearchRequest]) -> CountResponse:
        modes.check(Operation.READ)
        return CountResponse(count=await storage.count(data.where))

    @post(
        "/storage/error-groups",
        operation_id="storageErrorGroups",
        summary="Failed jobs that pass a filter, by error fingerprint",
        status_code=200,
        opt=_OPERATOR,
    )
    async def error_groups(data: JSONBody[SearchRequest]) -> list[hq.ErrorGroup]:
        modes.check(Operation.READ)
        return await storage.error_groups(data.where, limit=data.limit)

    @post(
        "/storage/cancel-matching",
        operation_id="storageCancelMatching",
        summary="Cancel one batch of matching jobs",
        status_code=200,
        opt=_OPERATOR,
    )
    async def cancel_matching(data: JSONBody[MatchingRequest]) -> ClaimResponse:
        modes.check(Operation.ADMIN)
        jobs = await storage.cancel_matching(
            data.where, now=clock.now(), limit=data.limit, before=data.before
        )
        return ClaimResponse(jobs=jobs)

    @post(
        "/storage/retry-matching",
        operation_id="storageRetryMatching",
        summary="Retry one batch of matching jobs",
        status_code=200,
        opt=_OPERATOR,
    )
    async def retry_matching(data: JSONBody[MatchingRequest]) -> ClaimResponse:
        modes.check(Operation.SUBMIT)
        jobs = await storage.retry_matching(
            data.where, now=clock.now(), limit=data.limit, before=data.before
        )
        return ClaimResponse(jobs=jobs)

    @post(
        "/storage/discard-matching",
        operation_id="storageDiscardMatching",
        summary="Delete one batch of matching final jobs",
        status_code=200,
        opt=_OPERATOR,
    )
    async def discard_matching(data: JSONBody[MatchingRequest]) -> ClaimResponse:
        modes.check(Operation.ADMIN)
        jobs = await storage.discard_matching(data.where, limit=data.limit, before=data.before)
        return ClaimResponse(jobs=jobs)

    # -- workflows ------------------------------------------------------------------

    @post(
        "/storage/workflows",
        operation_id="storageEnqueueWorkflow",
        summary="Store a workflow and its steps as a client's queue built them",
        status_code=204,
        opt=_OPERATOR,
    )
    async def enqueue_workflow(data: JSONBody[WorkflowBody]) -> None:
        modes.check(Operation.SUBMIT)
        _check_new(data.jobs)
        _check_workflow(data.workflow, data.jobs)
        await _check_unknown(storage, data.jobs)
        if await storage.get_workflow(data.workflow.id) is not None:
            raise hq.WorkflowError(f"workflow {data.workflow.id!r} is stored already")
        caps = tighter(queue.tenant_quotas, data.max_queued or {})
        await storage.enqueue_workflow(
            data.workflow, data.jobs, now=clock.now(), max_queued=caps or None
        )

    @get(
        "/storage/workflows/{workflow_id:str}",
        operation_id="storageGetWorkflow",
        summary="A workflow and its steps' jobs",
        opt=_VIEWER,
    )
    async def get_workflow(workflow_id: FromPath[str]) -> WorkflowBody:
        modes.check(Operation.READ)
        found = await storage.get_workflow(workflow_id)
        if found is None:
            raise hq.WorkflowNotFound(workflow_id)
        return WorkflowBody(workflow=found[0], jobs=found[1])

    @post(
        "/storage/workflows/{workflow_id:str}/cancel",
        operation_id="storageCancelWorkflow",
        summary="Cancel every step not final yet",
        status_code=200,
        opt=_OPERATOR,
    )
    async def cancel_workflow(workflow_id: FromPath[str]) -> ClaimResponse:
        modes.check(Operation.ADMIN)
        return ClaimResponse(jobs=await storage.cancel_workflow(workflow_id, now=clock.now()))

    @post(
        "/storage/workflows/{workflow_id:str}/retry",
        operation_id="storageRetryWorkflow",
        summary="Run again the steps that did not complete",
        status_code=200,
        opt=_OPERATOR,
    )
    async def retry_workflow(workflow_id: FromPath[str]) -> ClaimResponse:
        modes.check(Operation.SUBMIT)
        return ClaimResponse(jobs=await storage.retry_workflow(workflow_id, now=clock.now()))

    # -- schedules --------------------------------------------------------------------

    @get("/storage/schedules", operation_id="storageSchedules", summary="Schedules", opt=_VIEWER)
    async def schedules() -> list[hq.Schedule]:
        modes.check(Operation.READ)
        return await storage.schedules()

    @post(
        "/storage/schedules",
        operation_id="storageSaveSchedule",
        summary="Create a schedule or update its definition",
        status_code=200,
        opt=_OPERATOR,
    )
    async def save_schedule(data: JSONBody[SaveScheduleRequest]) -> hq.Schedule:
        modes.check(Operation.SUBMIT)
        return await storage.save_schedule(data.schedule, now=clock.now())

    @post(
        "/storage/schedules/{name:str}/fire",
        operation_id="storageFireSchedule",
        summary="Mark a slot handled, storing its job",
        status_code=200,
        opt=_OPERATOR,
    )
    async def fire_schedule(name: FromPath[str], data: JSONBody[FireRequest]) -> FireResponse:
        modes.check(Operation.SUBMIT)
        if data.job is not None:
            _check_new([data.job])
            await _check_unknown(storage, [data.job])
        fired = await storage.fire_schedule(
            name, slot=data.slot, job=data.job, missed=data.missed, now=clock.now()
        )
        return FireResponse(fired=fired)

    @post(
        "/storage/schedules/{name:str}/pause",
        operation_id="storagePauseSchedule",
        summary="Pause or resume a schedule",
        status_code=200,
        opt=_OPERATOR,
    )
    async def pause_schedule(name: FromPath[str], data: JSONBody[PauseRequest]) -> hq.Schedule:
        modes.check(Operation.ADMIN)
        return await storage.pause_schedule(name, paused=data.paused, now=clock.now())

    # -- paused queues ----------------------------------------------------------------

    @get(
        "/storage/paused-queues",
        operation_id="storagePausedQueues",
        summary="The paused queues",
        opt=_VIEWER,
    )
    async def paused_queues() -> list[str]:
        modes.check(Operation.READ)
        return await storage.paused_queues()

    @post(
        "/storage/queues/{name:str}/pause",
        operation_id="storagePauseQueue",
        summary="Pause or resume a queue",
        status_code=204,
        opt=_OPERATOR,
    )
    async def pause_queue(name: FromPath[str], data: JSONBody[PauseRequest]) -> None:
        modes.check(Operation.ADMIN)
        check_queue_name(name)
        await storage.pause_queue(name, paused=data.paused, now=clock.now())

    return [
        info,
        enqueue,
        list_jobs,
        counts,
        backlog,
        events,
        last_event,
        workers,
        search,
        count,
        error_groups,
        cancel_matching,
        retry_matching,
        discard_matching,
        enqueue_workflow,
        get_workflow,
        cancel_workflow,
        retry_workflow,
        schedules,
        save_schedule,
        fire_schedule,
        pause_schedule,
        paused_queues,
        pause_queue,
    ]
