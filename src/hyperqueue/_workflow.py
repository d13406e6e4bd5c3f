"""Workflows and batches: a DAG of jobs whose dependencies live in storage.

A :class:`Workflow` is built in memory (``flow.add`` returns a :class:`StepHandle`;
a handle passed as an argument hands that step's result to the parameter), then
:meth:`Queue.enqueue_workflow` checks it whole (tasks, arguments, names, cycles) and
stores every step as a job with its place in the graph (:class:`~hyperqueue.Step`).
From then on the storage alone moves the workflow on: a step that ends releases or
cancels its children in the same transaction, so a workflow survives the crash of any
process. A batch is a workflow whose steps have no edges.
"""

from __future__ import annotations

import graphlib
import heapq
from collections.abc import Mapping, Sequence
from typing import Any

from ._errors import ArgumentError, WorkflowError
from ._models import Job, JobStatus, WorkflowRecord, WorkflowRun, WorkflowStatus
from ._task import JobOptions, Task, TaskCall

__all__ = ["StepHandle", "Workflow"]

_ON_PARENT_FAILURE = ("cancel", "run")


class StepHandle:
    """A step of a :class:`Workflow`, as ``flow.add`` returns it.

    Pass it as an argument of a later step to hand it this step's result, or in
    ``after=`` to wait for it without its result.
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<StepHandle {self.name!r}>"


class _StepSpec:
    __slots__ = (
        "after",
        "args",
        "handles_at",
        "inputs",
        "kwargs",
        "name",
        "on_parent_failure",
        "task",
    )

    def __init__(
        self,
        name: str,
        task: str | Task[Any, Any] | TaskCall[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        inputs: dict[str, str],
        after: tuple[str, ...],
        on_parent_failure: str,
        handles_at: tuple[int, ...],
    ) -> None:
        self.name = name
        self.task = task
        self.handles_at = handles_at
        self.args = args
        self.kwargs = kwargs
        self.inputs = inputs
        self.after = after
        self.on_parent_failure = on_parent_failure


def _ref(value: StepHandle | str, what: str) -> str:
    if isinstance(value, StepHandle):
        return value.name
    if isinstance(value, str) and value:
        return value
    raise WorkflowError(f"{what} must name a step (a handle from flow.add or its name)")


_MAX_CONCURRENCY = 2**63 - 1  # what SQLite and PostgreSQL store


class Workflow:
    """A set of jobs with dependencies, enqueued at once by :meth:`Queue.enqueue_workflow`.

    ``concurrency`` caps how many of its steps are released at once (pending or
    running); ``None`` releases every step whose parents are done. A batch is a
    workflow whose steps have no edges: one status, one cancel, one retry.
    """

    __slots__ = ("_steps", "_suffixes", "concurrency")

    def __init__(self, *, concurrency: int | None = None) -> None:
        if concurrency is not None and (
            isinstance(concurrency, bool)
            or not isinstance(concurrency, int)
            or not 1 <= concurrency <= _MAX_CONCURRENCY
        ):
            raise WorkflowError(
                f"concurrency must be a whole number from 1 to {_MAX_CONCURRENCY}, or None"
            )
        self.concurrency = concurrency
        self._steps: dict[str, _StepSpec] = {}
        self._suffixes: dict[str, int] = {}  # the last suffix given to a task's steps

    def add(
        self,
        task: str | Task[Any, Any] | TaskCall[Any, Any],
        /,
        *args: Any,
        name: str | None = None,
        after: Sequence[StepHandle | str] = (),
        inputs: Mapping[str, StepHandle | str] | None = None,
        on_parent_failure: str = "cancel",
        **kwargs: Any,
    ) -> StepHandle:
        """Add a step: ``task`` (a task, ``task.options(...)``, or a task name) with the
        arguments of an enqueue, where a :class:`StepHandle` stands for that step's
        result. ``after`` adds parents whose results it does not take; ``inputs`` maps
        parameters to steps by name (the HTTP API's form). ``on_parent_failure``:
        ``"cancel"`` (default) or ``"run"``, a join that runs even when a parent failed,
        receiving ``None`` for that parent's result.

        The step's name is its task's name unless ``name`` is given; a second step of
        the same task gets ``-2``, then ``-3``...
        """
        if on_parent_failure not in _ON_PARENT_FAILURE:
            raise WorkflowError(
                f"on_parent_failure must be 'cancel' or 'run', not {on_parent_failure!r}"
            )
        if name is None:
            base = _task_name(task)
            n = self._suffixes.get(base, 1)
            name = base
            while name in self._steps:
                n += 1
                name = f"{base}-{n}"
            self._suffixes[base] = n
        elif not isinstance(name, str) or not name:
            raise WorkflowError("a step's name must be a non-empty string")
        elif name in self._steps:
            raise WorkflowError("a step of this name was added already", step=name)
        links: dict[str, str] = {}
        positional: list[Any] = []
        handles_at: list[int] = []
        for i, value in enumerate(args):
            if isinstance(value, StepHandle):
                handles_at.append(i)
            positional.append(value)
        keyword = dict(kwargs)
        for key, value in list(keyword.items()):
            if isinstance(value, StepHandle):
                links[key] = value.name
                del keyword[key]
        spec = _StepSpec(
            name,
            task,
            tuple(positional),
            keyword,
            links,
            tuple(_ref(a, "after=") for a in after),
            on_parent_failure,
            tuple(handles_at),
        )
        for param, ref in (inputs or {}).items():
            if param in links:
                raise WorkflowError("is given twice", step=name)
            links[param] = _ref(ref, "inputs=")
        spec.inputs = links
        self._steps[name] = spec
        return StepHandle(name)

    @property
    def steps(self) -> tuple[str, ...]:
        """The steps' names, in the order they were added."""
        return tuple(self._steps)

    def __len__(self) -> int:
        return len(self._steps)

    def __repr__(self) -> str:
        return f"Workflow(steps={list(self._steps)}, concurrency={self.concurrency})"


def _task_name(task: str | Task[Any, Any] | TaskCall[Any, Any]) -> str:
    if isinstance(task, str):
        return task
    if isinstance(task, TaskCall):
        return task.task.name
    return task.name


class PlannedStep:
    """One step resolved against the queue's tasks, ready to become a job."""

    __slots__ = ("args", "inputs", "kwargs", "name", "on_parent_failure", "options", "parents")

    def __init__(
        self,
        name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        inputs: dict[str, str],
        parents: tuple[str, ...],
        on_parent_failure: str,
        options: JobOptions | None,
    ) -> None:
        self.name = name
        self.args = args
        self.kwargs = kwargs
        self.inputs = inputs
        self.parents = parents
        self.on_parent_failure = on_parent_failure
        self.options = options


def plan(flow: Workflow, task_of: Any) -> list[tuple[Task[Any, Any], PlannedStep]]:
    """Resolve every step of ``flow`` against ``task_of`` (name -> Task, raising
    UnknownTask); check names, cycles and arguments. Steps come back parents first."""
    if not flow._steps:
        raise WorkflowError("a workflow needs at least one step")
    specs = flow._steps
    graph: dict[str, set[str]] = {}
    for spec in specs.values():
        parents = set(spec.after) | set(spec.inputs.values())
        parents.update(a.name for a in spec.args if isinstance(a, StepHandle))
        for parent in parents:
            if parent not in specs:
                raise WorkflowError(f"depends on an unknown step {parent!r}", step=spec.name)
            if parent == spec.name:
                raise WorkflowError("depends on itself", step=spec.name)
        graph[spec.name] = parents
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        cycle = " -> ".join(exc.args[1])
        raise WorkflowError(f"the steps form a cycle: {cycle}") from None
    # parents first, else the order the steps were added (the release order of steps
    # that are ready together)
    index = {name: i for i, name in enumerate(specs)}
    order = _stable_order(graph, index)
    out: list[tuple[Task[Any, Any], PlannedStep]] = []
    for name in order:
        spec = specs[name]
        task_ref = spec.task
        options: JobOptions | None = None
        if isinstance(task_ref, TaskCall):
            options = task_ref.options
            task = task_ref.task
        elif isinstance(task_ref, Task):
            task = task_ref
        else:
            task = task_of(task_ref)
        args = spec.args
        kwargs = dict(spec.kwargs)
        inputs = dict(spec.inputs)
        if spec.handles_at:  # a handle's position names its parameter: by name from there
            first = spec.handles_at[0]
            rest = args[first:]
            args = args[:first]
            for offset, value in enumerate(rest):
                param = task.signature.parameter_at(first + offset)
                if param is None:
                    raise WorkflowError(
                        "a step's result cannot be passed in *args; pass it by name",
                        step=name,
                    )
                if param in kwargs or param in inputs:
                    raise WorkflowError(f"parameter {param!r} is given twice", step=name)
                if isinstance(value, StepHandle):
                    inputs[param] = value.name
                else:
                    kwargs[param] = value
        try:
            args, kwargs = task.signature.check_partial(args, kwargs, frozenset(inputs))
        except ArgumentError as exc:
            raise WorkflowError(str(exc), step=name) from None
        ordered = tuple(sorted(graph[name], key=index.__getitem__))
        out.append(
            (
                task,
                PlannedStep(name, args, kwargs, inputs, ordered, spec.on_parent_failure, options),
            )
        )
    return out


def _stable_order(graph: Mapping[str, set[str]], index: Mapping[str, int]) -> list[str]:
    """Kahn's algorithm taking the earliest-added ready step first."""
    children: dict[str, list[str]] = {name: [] for name in graph}
    waiting = {name: len(parents) for name, parents in graph.items()}
    for name, parents in graph.items():
        for parent in parents:
            children[parent].append(name)
    ready = [(index[name], name) for name, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        _, name = heapq.heappop(ready)
        order.append(name)
        for child in children[name]:
            waiting[child] -= 1
            if waiting[child] == 0:
                heapq.heappush(ready, (index[child], child))
    return order


def summarize(record: WorkflowRecord, jobs: Sequence[Job]) -> WorkflowRun:
    """One status and result for a workflow, from its steps' jobs."""
    by_id = {job.id: job for job in jobs}
    statuses: dict[str, JobStatus] = {}
    has_children: set[str] = set()
    for name, job_id in record.steps.items():
        job = by_id.get(job_id)
        statuses[name] = job.status if job is not None else JobStatus.CANCELLED
        if job is not None and job.step is not None and job.step.children:
            has_children.add(name)
    values = statuses.values()
    finished_at: float | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    for name, job_id in record.steps.items():
        job = by_id.get(job_id)
        if job is not None and job.status is JobStatus.FAILED and error is None:
            error = f"step {name!r} failed: {job.error}"
    if all(status.is_final for status in values):
        ends = [job.finished_at for job in jobs if job.finished_at is not None]
        finished_at = max(ends) if ends else record.created_at
        if all(status is JobStatus.COMPLETED for status in values):
            status = WorkflowStatus.COMPLETED
            result = {
                name: by_id[job_id].result
                for name, job_id in record.steps.items()
                if name not in has_children
            }
        elif any(s is JobStatus.FAILED for s in values):
            status = WorkflowStatus.FAILED
        else:
            status = WorkflowStatus.CANCELLED
    elif all(s is JobStatus.PENDING for s in values) and not any(job.attempts for job in jobs):
        status = WorkflowStatus.PENDING
    else:
        status = WorkflowStatus.RUNNING
    return WorkflowRun(
        id=record.id,
        status=status,
        steps=dict(record.steps),
        statuses=statuses,
        concurrency=record.concurrency,
        created_at=record.created_at,
        finished_at=finished_at,
        result=result,
        error=error,
    )
