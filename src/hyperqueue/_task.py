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

__all__ = ["Submission", "Task", "TaskCall"]

P = ParamSpec("P")
R = TypeVar("R")


class Submission(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One job to enqueue by task name: the shape of the HTTP API's request body.

    Unset options fall back to the task's defaults. ``delay`` is in seconds from now;
    ``run_at`` is an absolute time on the queue's clock; give at most one.
    """

    task: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = {}
    queue: str | None = None
    priority: Priority | None = None
    delay: float | None = None
    run_at: float | None = None
    key: str | None = None
    tenant: str | None = None
    timeout: float | None = None
    max_attempts: int | None = None


class Task(Generic[P, R]):
    """An async function that a worker runs as a job. Calling it runs it directly."""

    __slots__ = (
        "_owner",
        "breaker",
        "fn",
        "limit_key",
        "limiter",
        "max_attempts",
        "name",
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
    ) -> None:
        self._owner = owner
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
    ) -> TaskCall[P, R]:
        """The same task with options for the next enqueue (nothing is stored yet)."""
        options = {
            "queue": queue,
            "priority": priority,
            "delay": delay,
            "run_at": run_at,
            "key": key,
            "tenant": tenant,
            "timeout": timeout,
            "max_attempts": max_attempts,
        }
        return TaskCall(self, {k: v for k, v in options.items() if v is not None})

    def __repr__(self) -> str:
        return f"<Task {self.name!r} queue={self.queue!r}>"


class TaskCall(Generic[P, R]):
    """A task with enqueue options bound, from :meth:`Task.options`."""

    __slots__ = ("_options", "task")

    def __init__(self, task: Task[P, R], options: dict[str, Any]) -> None:
        self.task = task
        self._options = options

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, Job]:
        return self.task._owner._enqueue_call(self.task, args, kwargs, **self._options)
