"""The exception tree of hyperqueue.

Every error hyperqueue raises on purpose derives from :class:`HyperqueueError`, so a
host can catch them all in one place. Where the meaning matches a builtin, the builtin
is mixed in (``JobNotFound`` is a ``LookupError``, ``JobTimeout`` a ``TimeoutError``)
so code that already handles the builtin keeps working.
"""

from __future__ import annotations

__all__ = [
    "ArgumentError",
    "CircuitOpenError",
    "HyperqueueError",
    "InvalidTransition",
    "JobNotFound",
    "JobTimeout",
    "OptionError",
    "QuotaExceeded",
    "ScheduleNotFound",
    "StorageError",
    "UnknownTask",
    "WorkflowError",
    "WorkflowNotFound",
]


class HyperqueueError(Exception):
    """Base class of every error raised by hyperqueue."""


class JobNotFound(HyperqueueError, LookupError):
    """No job has the given id (or it was pruned)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id!r}")
        self.job_id = job_id


class WorkflowNotFound(HyperqueueError, LookupError):
    """No workflow with this id is stored."""

    def __init__(self, workflow_id: str) -> None:
        super().__init__(f"no workflow with id {workflow_id!r}")
        self.workflow_id = workflow_id


class ScheduleNotFound(HyperqueueError, LookupError):
    """No periodic job with this name is stored."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no schedule named {name!r}")
        self.name = name


class UnknownTask(HyperqueueError, LookupError):
    """A job names a task that is not registered on the queue."""

    def __init__(self, task: str, known: tuple[str, ...] = ()) -> None:
        hint = f"; registered tasks: {', '.join(sorted(known))}" if known else ""
        super().__init__(f"unknown task {task!r}{hint}")
        self.task = task


class ArgumentError(HyperqueueError, TypeError):
    """The arguments of a job do not match its task's signature.

    ``argument`` names the offending parameter when one can be named.
    """

    def __init__(self, task: str, message: str, *, argument: str | None = None) -> None:
        where = f" (argument {argument!r})" if argument else ""
        super().__init__(f"invalid arguments for task {task!r}{where}: {message}")
        self.task = task
        self.argument = argument
        self.reason = message


class OptionError(HyperqueueError, ValueError):
    """An enqueue option (priority, delay, timeout, ...) has a value that cannot work."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"invalid option {option!r}: {message}")
        self.option = option


class InvalidTransition(HyperqueueError, ValueError):
    """The job is not in a status that allows the requested change."""

    def __init__(self, job_id: str, status: str, action: str) -> None:
        super().__init__(f"cannot {action} job {job_id!r}: it is {status}")
        self.job_id = job_id
        self.status = status
        self.action = action


class WorkflowError(HyperqueueError, ValueError):
    """A workflow that cannot run as built: a cycle, an unknown step, a step result
    passed where it cannot go. ``step`` names the step at fault, when there is one."""

    def __init__(self, message: str, *, step: str | None = None) -> None:
        super().__init__(message if step is None else f"step {step!r}: {message}")
        self.step = step


class JobTimeout(HyperqueueError, TimeoutError):
    """A job ran past its timeout, or :meth:`Queue.wait` gave up waiting."""


class StorageError(HyperqueueError):
    """A storage backend could not do what was asked (corrupt, locked, newer schema...)."""


class CircuitOpenError(HyperqueueError):
    """A circuit breaker is open: the call was refused without being tried.

    ``retry_at`` is when (seconds since the epoch, on the breaker's clock) the breaker
    lets a trial call through again; ``retry_after`` is the same as seconds from the
    moment the error was raised.
    """

    def __init__(self, name: str, retry_at: float, retry_after: float) -> None:
        super().__init__(f"circuit {name!r} is open; retry in {max(retry_after, 0.0):.3f} s")
        self.name = name
        self.retry_at = retry_at
        self.retry_after = max(retry_after, 0.0)


class QuotaExceeded(HyperqueueError):
    """A tenant's quota refused a submission: storing it would pass ``max_queued``.

    ``tenant`` is the tenant, ``limit`` its cap, ``queued`` how many of its jobs wait.
    Nothing of the refused call was stored.
    """

    def __init__(self, tenant: str, limit: int, queued: int) -> None:
        super().__init__(
            f"tenant {tenant!r} has {queued} jobs waiting; its quota is {limit} (max_queued)"
        )
        self.tenant = tenant
        self.limit = limit
        self.queued = queued
