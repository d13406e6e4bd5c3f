"""Tasks: async functions registered on a queue, and enqueue options bound to them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

import msgspec

from ._models import Job, Priority
from ._retry import Retry
from ._signature import Signature

if TYPE_CHECKING:
    from ._breaker import CircuitBreaker
    from ._queue import Queue
    from ._ratelimit import RateLimiter

__all__ = ["JobOptions", "Submission", "Task", "TaskCall"]

P = ParamSpec("P")
R = TypeVar("R")


class JobOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The options of one enqueue, in one place for every way in: ``task.options()``,
    ``queue.enqueue()``, a :class:`Submission`, the HTTP body, and templates.

    Unset options fall back to the named ``template`` (see :meth:`Queue.template`),
    then to the task's defaults. ``delay`` is in seconds from now; ``run_at`` is an
    absolute time on the queue's clock; give at most one. ``max_rescues`` is how many
    times the job may lose its worker before it fails (3).
    """

    queue: str | None = None
    priority: Priority | None = None
    delay: float | None = None
    run_at: float | None = None
    key: str | None = None
    tenant: str | None = None
    timeout: float | None = None
    max_attempts: int | None = None
    max_rescues: int | None = None
    template: str | None = None

    def merged(self, defaults: JobOptions) -> JobOptions:
        """These options, with the unset ones taken from ``defaults``."""
        fields = {
            name: value if value is not None else getattr(defaults, name)
            for name in JobOptions.__struct_fields__
            if name != "template"
            for value in (getattr(self, name),)
        }
        return JobOptions(**fields)


class Submission(JobOptions, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One job to enqueue by task name, with its options: the HTTP API's request body."""

    task: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = {}


class Task(Generic[P, R]):
    """An async function that a worker runs as a job. Calling it runs it directly.

    Its options (``queue``, ``priority``, ``timeout``, ``retry``, ``max_rescues``) are
    fixed when it is registered: each enqueue copies a job made from them then.
    """

    __slots__ = (
        "_owner",
        "_template",
        "breaker",
        "fn",
        "limit_key",
        "limiter",
        "max_attempts",
        "max_rescues",
        "name",
        "plain",
        "priority",
        "queue",
        "retry",
        "signature",
        "timeout",
    )

    def __init__(
        self,
        owner: Queue,
        fn: Callable[P, Awaitable[R]],
        *,
        name: str,
        queue: str,
        priority: Priority,
        timeout: float | None,
        retry: Retry | None,
        breaker: CircuitBreaker | None = None,
        limiter: RateLimiter | None = None,
        limit_key: Callable[..., str] | None = None,
        max_rescues: int = 3,
    ) -> None:
        self._owner = owner
        self.max_rescues = max_rescues
        self.breaker = breaker
        self.limiter = limiter
        self.limit_key = limit_key
        self.fn = fn
        self.name = name
        self.queue = queue
        self.priority = priority
        self.timeout = timeout
        self.retry = retry
        self.max_attempts = retry.attempts if retry is not None else 1
        self.signature = Signature(name, fn)
        self.plain = limiter is None and breaker is None and not self.signature.convert_at_run
        """Whether a run calls the function with the stored arguments and nothing
        before it: no rate limit, no breaker, no argument to convert (decided once)."""
        self._template = Job(
            id="",
            task=name,
            queue=queue,
            priority=priority,
            max_attempts=self.max_attempts,
            max_rescues=max_rescues,
            timeout=timeout,
        )
        """A job with the task's options: an enqueue with no options of its own
        replaces its id, arguments and times (cheaper than building every field)."""

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return await self.fn(*args, **kwargs)

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, Job]:
        """Enqueue one job of this task with the task's default options.

        A plain function returning the queue's coroutine (one frame less on the hot
        path); ``await task.enqueue(...)`` as with any async method.
        """
        return self._owner._enqueue_call(self, args, kwargs)

    def options(
        self,
        *,
        queue: str | None = None,
        priority: Priority | str | None = None,
        delay: float | None = None,
        run_at: float | None = None,
        key: str | None = None,
        tenant: str | None = None,
        timeout: float | None = None,
        max_attempts: int | None = None,
        max_rescues: int | None = None,
        template: str | None = None,
    ) -> TaskCall[P, R]:
        """The same task with options for the next enqueue (nothing is stored yet)."""
        options = JobOptions(
            queue=queue,
            priority=priority,  # type: ignore[arg-type]  # checked when enqueued
            delay=delay,
            run_at=run_at,
            key=key,
            tenant=tenant,
            timeout=timeout,
            max_attempts=max_attempts,
            max_rescues=max_rescues,
            template=template,
        )
        return TaskCall(self, options)

    def __repr__(self) -> str:
        return f"<Task {self.name!r} queue={self.queue!r}>"


class TaskCall(Generic[P, R]):
    """A task with enqueue options bound, from :meth:`Task.options`."""

    __slots__ = ("options", "task")

    def __init__(self, task: Task[P, R], options: JobOptions) -> None:
        self.task = task
        self.options = options

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, Job]:
        return self.task._owner._enqueue_call(self.task, args, kwargs, self.options)
