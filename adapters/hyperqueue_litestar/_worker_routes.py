"""The worker protocol: a storage's claim, extend and finish as HTTP routes, so a worker
in another process, host or language takes jobs from a server (``/api/v1/worker``).

Leases and fencing tokens work exactly as for in-process workers: a claim gives each
job a new ``token`` and a lease until the server's ``now`` plus ``lease``; heartbeats
(``/extend``) renew it; ``/finish`` is accepted only while the job still runs under the
same token, else it answers 409 and changes nothing. The server's clock decides every
``now``: a remote clock never decides when a lease ends. A worker that stops
heartbeating loses its jobs to the storage's rescue, and another claimer runs them.

``/claim`` and ``/listen`` are long polls: they wait (at most :data:`MAX_WAIT` s) on the
storage's listener, so they answer as soon as work arrives from any process on the
storage. Every route here needs the ``worker`` role, which operator and admin keys also
have; the storage routes a Python client needs besides are in :mod:`._storage_routes`.
"""

from __future__ import annotations

from typing import Any

import anyio
from litestar import Request, Response, get, post
from litestar.params import FromPath, JSONBody
from litestar.types import ControllerRouterHandler

import hyperqueue as hq
from hyperqueue import Operation

from ._auth import ROLE_OPT
from ._errors import error_response
from ._storage_routes import storage_routes, tighter
from ._worker_schemas import (
    MAX_INT,
    MAX_LEASE,
    MAX_WAIT,
    ClaimRequest,
    ClaimResponse,
    ExtendRequest,
    ExtendResponse,
    FinishRequest,
    FinishResponse,
    ListenRequest,
    ListenResponse,
    NextRunRequest,
    NextRunResponse,
    ProgressRequest,
    RecordedResponse,
    StartedRequest,
    StartedResponse,
    UnregisterRequest,
)

__all__ = ["MIN_POLL", "publish_outcomes", "worker_routes"]

_WORKER = {ROLE_OPT: "worker"}

MIN_POLL = 0.05
"""The shortest a long poll sleeps before claiming again when a job is due but was not
claimed (a tenant at its running cap), so it never spins."""


def publish_outcomes(
    queue: hq.Queue, outcomes: list[hq.Outcome], jobs: list[hq.Job | None], now: float
) -> None:
    """Publish the finished jobs on the server's event bus, as an in-process worker
    does, so metrics and hooks of the server see remote workers' outcomes too."""
    events = queue.events
    if not events.active:
        return
    for outcome, job in zip(outcomes, jobs, strict=True):
        if job is None:
            continue
        if job.status is hq.JobStatus.COMPLETED:
            events.publish(hq.JobCompleted(at=now, job=job))
        elif job.status is hq.JobStatus.FAILED:
            events.publish(hq.JobFailed(at=now, job=job))
        elif job.status is hq.JobStatus.CANCELLED:
            events.publish(hq.JobCancelled(at=now, job=job))
        elif outcome.released:
            events.publish(hq.JobDeferred(at=now, job=job))
        else:
            events.publish(hq.JobRetrying(at=now, job=job))


async def _until_gone(request: Request[Any, Any, Any], gone: anyio.Event) -> None:
    """Set ``gone`` when the client disconnects (the body is read: the next message the
    server receives on this request is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            gone.set()
            return


async def _wait_for_work(listener: hq.abc.WorkListener, gone: anyio.Event, seconds: float) -> bool:
    """Wait until ``listener`` is signalled (``True``), the client is gone or ``seconds``
    passed (``False``)."""
    signalled = False
    with anyio.move_on_after(seconds):
        async with anyio.create_task_group() as tg:

            async def work() -> None:
                nonlocal signalled
                await listener.wait()
                signalled = True
                tg.cancel_scope.cancel()

            async def left() -> None:
                await gone.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(work)
            tg.start_soon(left)
    return signalled


def worker_routes(queue: hq.Queue, modes: hq.ModeController) -> list[ControllerRouterHandler]:
    """The worker protocol's route handlers over ``queue``'s storage, and the storage
    routes (:func:`._storage_routes.storage_routes`)."""
    storage = queue.storage
    clock = queue.clock

    @post(
        "/worker/claim",
        operation_id="workerClaim",
        summary="Claim due jobs under a lease (long poll)",
        status_code=200,
        opt=_WORKER,
        tags=["worker"],
    )
    async def claim(data: JSONBody[ClaimRequest], request: Request[Any, Any, Any]) -> ClaimResponse:
        modes.check(Operation.EXECUTE)
        caps = tighter(queue.tenant_limits, data.max_running or {})
        deadline = anyio.current_time() + min(data.wait, MAX_WAIT)
        gone = anyio.Event()  # a long poll whose client left claims nothing more
        async with anyio.create_task_group() as tg, storage.listen() as listener:
            if data.wait > 0:
                tg.start_soon(_until_gone, request, gone)
            try:
                while not gone.is_set():
                    listener.clear()
                    now = clock.now()
                    jobs = await storage.claim(
                        data.queues,
                        limit=data.limit,
                        now=now,
                        lease=data.lease,
                        worker=data.worker,
                        tasks=data.tasks,
                        max_running=caps or None,
                    )
                    remaining = deadline - anyio.current_time()
                    if jobs or remaining <= 0:
                        return ClaimResponse(jobs=jobs)
                    due = await storage.next_run_at(data.queues, data.tasks)
                    if due is not None:
                        remaining = min(remaining, max(due - now, MIN_POLL))
                    await _wait_for_work(listener, gone, remaining)
            finally:
                tg.cancel_scope.cancel()
        return ClaimResponse(jobs=[])

    @post(
        "/worker/extend",
        operation_id="workerExtend",
        summary="Renew leases (the heartbeat)",
        status_code=200,
        opt=_WORKER,
        tags=["worker"],
    )
    async def extend(data: JSONBody[ExtendRequest]) -> ExtendResponse:
        modes.check(Operation.EXECUTE)
        kept = await storage.extend(
            [(lease.id, lease.token) for lease in data.leases], now=clock.now(), lease=data.lease
        )
        return ExtendResponse(kept=kept)

    @post(
        "/worker/finish",
        operation_id="workerFinish",
        summary="Complete, fail or retry claimed jobs (fenced by their token)",
        description="200 when every outcome was accepted; 409 when one was refused "
        "(its claim is stale: expired and rescued, cancelled or finished already); the "
        "others of the batch are applied, the refused ones change nothing.",
        status_code=200,
        opt=_WORKER,
        tags=["worker"],
    )
    async def finish(data: JSONBody[FinishRequest]) -> Response[Any]:
        modes.check(Operation.EXECUTE)
        for outcome in data.outcomes:
            if not 0 <= outcome.token <= MAX_INT:
                raise hq.OptionError("token", f"{outcome.token} is not a token (0 to 2**63 - 1)")
        now = clock.now()
        jobs = await storage.finish(data.outcomes, now=now)
        publish_outcomes(queue, data.outcomes, jobs, now)
        refused = [o.id for o, job in zip(data.outcomes, jobs, strict=True) if job is None]
        if refused:
            return error_response(
                409,
                f"stale claim: {len(refused)} outcome(s) refused, the job is no longer "
                "running under that token (lease lost, cancelled or finished)",
                {"refused": refused, "jobs": jobs},
            )
        return Response(FinishResponse(jobs=jobs))

    @post(
        "/worker/started",
        operation_id="workerStarted",
        summary="Record that claimed jobs' functions were called",
        status_code=200,
        opt=_WORKER,
        tags=["worker"],
    )
    async def started(data: JSONBody[StartedRequest]) -> StartedResponse:
        modes.check(Operation.EXECUTE)
        marks = [(s.id, s.token, s.at) for s in data.starts]
        started = await storage.mark_started(marks)
        if queue.events.active:  # as an in-process worker publishes its starts
            for start, ok in zip(data.starts, started, strict=True):
                job = await storage.get(start.id) if ok else None
                if job is not None:
                    queue.events.publish(hq.JobStarted(at=start.at, job=job))
        return StartedResponse(started=started)

    @post(
        "/worker/progress",
        operation_id="workerProgress",
        summary="Record a running job's progress",
        status_code=200,
        opt=_WORKER,
        tags=["worker"],
    )
    async def progress(data: JSONBody[ProgressRequest]) -> RecordedResponse:
        modes.check(Operation.EXECUTE)
        now = clock.now()
        recorded = await storage.set_progress(data.id, data.token, data.progress, now=now)
        if recorded and queue.events.active:
            job = await storage.get(data.id)
            if job is not None:
                queue.events.publish(hq.JobProgress(at=now, job=job))
        return RecordedResponse(recorded=recorded)

    @post(
        "/worker/register",
        operation_id="workerRegister",
        summary="Record (or renew) a worker pool and the tasks it runs",
        status_code=204,
        opt=_WORKER,
        tags=["worker"],
    )
    async def register(data: JSONBody[hq.WorkerInfo]) -> None:
        modes.check(Operation.EXECUTE)
        # alive for as long as the worker asked, counted on the server's clock
        ttl = min(max(data.expires_at - data.seen_at, 0.0), MAX_LEASE)
        now = clock.now()
        await storage.register_worker(
            hq.WorkerInfo(
                name=data.name,
                host=data.host,
                pid=data.pid,
                tasks=data.tasks,
                queues=data.queues,
                concurrency=data.concurrency,
                started_at=data.started_at,
                seen_at=now,
                expires_at=now + ttl,
            )
        )

    @post(
        "/worker/unregister",
        operation_id="workerUnregister",
        summary="Forget a worker pool",
        status_code=204,
        opt=_WORKER,
        tags=["worker"],
    )
    async def unregister(data: JSONBody[UnregisterRequest]) -> None:
        modes.check(Operation.EXECUTE)
        await storage.unregister_worker(data.name)

    @post(
        "/worker/rescue",
        operation_id="workerRescue",
        summary="Return jobs whose lease expired to pending (or fail them)",
        status_code=200,
        opt=_WORKER,
        tags=["worker"],
    )
    async def rescue() -> ClaimResponse:
        modes.check(Operation.EXECUTE)
        now = clock.now()
        jobs = await storage.rescue(now=now)
        if jobs and queue.events.active:
            for job in jobs:
                queue.events.publish(hq.JobRescued(at=now, job=job))
        return ClaimResponse(jobs=jobs)

    @post(
        "/worker/next-run-at",
        operation_id="workerNextRunAt",
        summary="When the next pending job of these queues and tasks is due",
        status_code=200,
        opt=_WORKER,
        tags=["worker"],
    )
    async def next_run_at(data: JSONBody[NextRunRequest]) -> NextRunResponse:
        modes.check(Operation.EXECUTE)
        return NextRunResponse(run_at=await storage.next_run_at(data.queues, data.tasks))

    @post(
        "/worker/listen",
        operation_id="workerListen",
        summary="Wait until new work may be ready (long poll)",
        status_code=200,
        opt=_WORKER,
        tags=["worker"],
    )
    async def listen(
        data: JSONBody[ListenRequest], request: Request[Any, Any, Any]
    ) -> ListenResponse:
        modes.check(Operation.EXECUTE)
        seen = None if data.paused is None else sorted(set(data.paused))
        async with storage.listen() as listener:
            listener.clear()
            last = await storage.last_event_id()
            paused = sorted(await storage.paused_queues())
            moved = seen is not None and paused != seen  # a pause or resume: no event
            if data.after is None or last > data.after or moved or data.wait <= 0:
                changed = data.after is not None and (last > data.after or moved)
                return ListenResponse(event_id=last, changed=changed, paused=paused)
            gone = anyio.Event()
            async with anyio.create_task_group() as tg:
                tg.start_soon(_until_gone, request, gone)
                woke = await _wait_for_work(listener, gone, min(data.wait, MAX_WAIT))
                tg.cancel_scope.cancel()
            last = await storage.last_event_id()
            paused = sorted(await storage.paused_queues())
            return ListenResponse(
                event_id=last,
                changed=last > data.after or woke or (seen is not None and paused != seen),
                paused=paused,
            )

    @get(
        "/worker/jobs/{job_id:str}",
        operation_id="workerGetJob",
        summary="One job, by id (what a worker may read)",
        opt=_WORKER,
        tags=["worker"],
    )
    async def get_job(job_id: FromPath[str]) -> hq.Job:
        modes.check(Operation.EXECUTE)
        job = await storage.get(job_id)
        if job is None:
            raise hq.JobNotFound(job_id)
        return job

    return [
        claim,
        extend,
        finish,
        started,
        progress,
        register,
        unregister,
        rescue,
        next_run_at,
        listen,
        get_job,
        *storage_routes(queue, modes),
    ]
