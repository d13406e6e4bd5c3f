"""The REST API over workflows and batches (mounted under ``/api/v1`` with the jobs).

A workflow is posted whole: its steps name their task, arguments and dependencies
(``after`` for order, ``inputs`` to receive a parent's result), and the queue checks it
whole before anything is stored (:meth:`hyperqueue.Queue.enqueue_workflow`). A batch is
a workflow whose steps have no edges. Every answer is a :class:`WorkflowResponse`: the
run's one status and result, with its steps' jobs.

Roles: submitting, cancelling and retrying need ``operator`` (as for jobs), reading
``viewer``. A key bound to a tenant puts its steps in its tenant, and a workflow with a
step of another tenant answers 404 to it (its existence is not revealed).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, get, post
from litestar.exceptions import HTTPException
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.types import ControllerRouterHandler

import hyperqueue as hq
from hyperqueue import Operation

from ._auth import ROLE_OPT
from ._schemas import MAX_ATTEMPTS, ErrorBody
from ._security import PRINCIPAL, Principal

__all__ = ["MAX_STEPS", "StepRequest", "WorkflowRequest", "WorkflowResponse", "workflow_routes"]

MAX_STEPS = 10_000
"""Steps one ``POST /workflows`` may carry; past it the answer is 422."""

_Attempts = Annotated[int, msgspec.Meta(le=MAX_ATTEMPTS)]

# keyword arguments that ``Workflow.add`` takes for itself: a task parameter of one of
# these names cannot be given by keyword through it
_ADD_OPTIONS = frozenset({"name", "after", "inputs", "on_parent_failure"})


class StepRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One step of ``POST /workflows``.

    ``name`` defaults to the task's name (a second step of the same task gets ``-2``,
    then ``-3``...). ``after`` lists steps to wait for; ``inputs`` maps a parameter of
    the task to the step whose result it receives when this step starts (that step is
    waited for too). ``on_parent_failure``: ``"cancel"`` (default) cancels this step
    when a parent fails or is cancelled, ``"run"`` runs it anyway with ``None`` for that
    parent's result. The job options are those of ``POST /jobs``, but a step takes no
    idempotency ``key``.
    """

    task: str
    name: str | None = None
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    after: list[str] = []
    inputs: dict[str, str] = {}
    on_parent_failure: Literal["cancel", "run"] = "cancel"
    queue: str | None = None
    priority: hq.Priority | None = None
    delay: float | None = None
    timeout: float | None = None
    max_attempts: _Attempts | None = None
    max_rescues: _Attempts | None = None
    tenant: str | None = None
    template: str | None = None


class WorkflowRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The body of ``POST /workflows``: the steps (at most 10,000) and ``concurrency``,
    the most steps released at once (none: every step whose parents are done)."""

    steps: list[StepRequest]
    concurrency: Annotated[int, msgspec.Meta(ge=1)] | None = None


class WorkflowResponse(msgspec.Struct, frozen=True, kw_only=True):
    """A workflow and where it stands: the fields of :class:`hyperqueue.WorkflowRun`
    (``steps`` maps each step's name to its job's id, ``statuses`` to its job's status;
    ``result`` maps each sink step to its result once every step completed; ``error``
    is the first failed step's) and ``jobs``, each step's job by name (left out with
    ``?jobs=false``)."""

    id: str
    status: hq.WorkflowStatus
    steps: dict[str, str]
    statuses: dict[str, hq.JobStatus]
    concurrency: int | None = None
    created_at: float = 0.0
    finished_at: float | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    jobs: dict[str, hq.Job] | None = None


_DESCRIPTIONS = {
    404: "No workflow has this id (or it is another tenant's)",
    409: "A step still runs: the workflow cannot be retried yet",
    422: "A bad workflow (cycle, unknown step or task, arguments that do not fit, a bad "
    "option, too many steps); the detail names the step",
    503: "Refused by the current mode (Retry-After says when to try again)",
}


def _errors(*codes: int) -> dict[int, ResponseSpec]:
    return {
        code: ResponseSpec(data_container=ErrorBody, description=_DESCRIPTIONS[code])
        for code in codes
    }


_OPERATOR = {ROLE_OPT: "operator"}


def _tenant_of(request: Request[Any, Any, Any]) -> str | None:
    """The tenant the caller's key is bound to, if any (resolved by the auth part)."""
    principal = (request.scope.get("state") or {}).get(PRINCIPAL)
    return principal.tenant if isinstance(principal, Principal) else None


def _response(run: hq.WorkflowRun, jobs: dict[str, hq.Job] | None) -> WorkflowResponse:
    return WorkflowResponse(**msgspec.structs.asdict(run), jobs=jobs)


def workflow_routes(queue: hq.Queue, modes: hq.ModeController) -> list[ControllerRouterHandler]:
    """The workflow route handlers over ``queue``, filtered by ``modes``."""
    # deferred: _routes registers these handlers, and both share its depth check
    from ._routes import MAX_DEPTH, _too_deep

    tasks = queue.tasks

    def target(step: StepRequest, tenant: str | None) -> str | hq.TaskCall[Any, Any]:
        """The step's task: its name alone when it sets no option (the queue resolves
        it), else the task with the options bound."""
        forced = tenant if tenant is not None else step.tenant
        if (
            step.queue is None
            and step.priority is None
            and step.delay is None
            and step.timeout is None
            and step.max_attempts is None
            and step.max_rescues is None
            and forced is None
            and step.template is None
        ):
            return step.task
        task = tasks.get(step.task)
        if task is None:
            raise hq.UnknownTask(step.task, tuple(tasks))
        return task.options(
            queue=step.queue,
            priority=step.priority,
            delay=step.delay,
            timeout=step.timeout,
            max_attempts=step.max_attempts,
            max_rescues=step.max_rescues,
            tenant=forced,
            template=step.template,
        )

    def build(data: WorkflowRequest, tenant: str | None) -> hq.Workflow:
        if len(data.steps) > MAX_STEPS:
            raise HTTPException(
                status_code=422,
                detail=f"a workflow has at most {MAX_STEPS:,} steps; this one has "
                f"{len(data.steps):,} (split it into several workflows)",
                extra={"limit": MAX_STEPS, "steps": len(data.steps)},
            )
        flow = hq.Workflow(concurrency=data.concurrency)
        for i, step in enumerate(data.steps):
            label = step.name or f"#{i + 1} ({step.task})"
            if (step.args and _too_deep(step.args)) or (step.kwargs and _too_deep(step.kwargs)):
                raise hq.WorkflowError(f"arguments nest deeper than {MAX_DEPTH} levels", step=label)
            taken = sorted(_ADD_OPTIONS.intersection(step.kwargs))
            if taken:
                raise hq.WorkflowError(
                    f"keyword argument {taken[0]!r} cannot be given to a step by name; "
                    "pass it in args",
                    step=label,
                )
            flow.add(
                target(step, tenant),
                *step.args,
                name=step.name,
                after=step.after,
                inputs=step.inputs,
                on_parent_failure=step.on_parent_failure,
                **step.kwargs,
            )
        return flow

    async def visible(workflow_id: str, tenant: str | None) -> dict[str, hq.Job]:
        """The workflow's jobs; WorkflowNotFound for a tenant-bound caller when a step
        belongs to another tenant."""
        jobs = await queue.workflow_jobs(workflow_id)
        if tenant is not None and any(job.tenant != tenant for job in jobs.values()):
            raise hq.WorkflowNotFound(workflow_id)
        return jobs

    async def answer(
        workflow_id: str, tenant: str | None, *, with_jobs: bool = True
    ) -> WorkflowResponse:
        run = await queue.get_workflow(workflow_id)
        jobs = await visible(workflow_id, tenant)  # read after the run: at least as new
        return _response(run, jobs if with_jobs else None)

    @post(
        "/workflows",
        operation_id="submitWorkflow",
        summary="Submit a workflow or a batch",
        description=(
            "Checks the steps whole (tasks, arguments against each task's signature, step "
            "names, cycles) and stores them at once; nothing is stored when one is wrong "
            "(422 naming the step). 201 with the run (status, steps, statuses, "
            "concurrency, created_at, finished_at, result, error) and `jobs`, each "
            "step's job by name. A batch is a workflow whose steps have no `after` or "
            f"`inputs`. At most {MAX_STEPS:,} steps."
        ),
        status_code=201,
        responses=_errors(422, 503),
        opt=_OPERATOR,
        tags=["workflows"],
    )
    async def submit_workflow(
        request: Request[Any, Any, Any], data: JSONBody[WorkflowRequest]
    ) -> Response[WorkflowResponse]:
        modes.check(Operation.SUBMIT)
        tenant = _tenant_of(request)
        run = await queue.enqueue_workflow(build(data, tenant))
        jobs = await queue.workflow_jobs(run.id)
        return Response(_response(run, jobs), status_code=201)

    @get(
        "/workflows/{workflow_id:str}",
        operation_id="getWorkflow",
        summary="One workflow, with its steps' jobs",
        description="`?jobs=false` leaves the steps' jobs out (for polling a large batch).",
        responses=_errors(404),
        tags=["workflows"],
    )
    async def get_workflow(
        request: Request[Any, Any, Any],
        workflow_id: FromPath[str],
        jobs: Annotated[bool, QueryParameter()] = True,
    ) -> WorkflowResponse:
        modes.check(Operation.READ)
        return await answer(workflow_id, _tenant_of(request), with_jobs=jobs)

    @post(
        "/workflows/{workflow_id:str}/cancel",
        operation_id="cancelWorkflow",
        summary="Cancel every step that has not ended",
        description="Running steps are interrupted where they run. The run after the change.",
        status_code=200,
        responses=_errors(404, 503),
        opt=_OPERATOR,
        tags=["workflows"],
    )
    async def cancel_workflow(
        request: Request[Any, Any, Any], workflow_id: FromPath[str]
    ) -> WorkflowResponse:
        modes.check(Operation.ADMIN)
        tenant = _tenant_of(request)
        await visible(workflow_id, tenant)
        await queue.cancel_workflow(workflow_id)
        return await answer(workflow_id, tenant)

    @post(
        "/workflows/{workflow_id:str}/retry",
        operation_id="retryWorkflow",
        summary="Run again the steps that did not complete, and what follows them",
        description=(
            "Completed steps keep their results and are not run again. 409 while a step "
            "has not ended. The run after the change."
        ),
        status_code=200,
        responses=_errors(404, 409, 503),
        opt=_OPERATOR,
        tags=["workflows"],
    )
    async def retry_workflow(
        request: Request[Any, Any, Any], workflow_id: FromPath[str]
    ) -> WorkflowResponse:
        modes.check(Operation.SUBMIT)
        tenant = _tenant_of(request)
        await visible(workflow_id, tenant)
        await queue.retry_workflow(workflow_id)
        return await answer(workflow_id, tenant)

    return [submit_workflow, get_workflow, cancel_workflow, retry_workflow]
