"""Execution hooks: code that takes part in each run of a job (tracing, plugins, resource
accounting), where events only report after the fact.

A hook is a callable that gets a :class:`JobRun` and may return a context manager, sync
or async, or ``None`` when it has nothing to wrap around this run. The worker enters the
context managers in order when a runner starts the job (before its arguments are
prepared and its rate limit and breaker are looked at) and exits them in reverse order
once the run's outcome is known, before it is stored. The task function is called
inside them, in the same task: context variables a hook sets (the current span) are
what the function sees.

What a hook cannot do, by design: change the outcome. Its exit gets the exception that
ended the task function (or ``None``) and cannot suppress it; an exception raised by a
hook (by the call, the enter or the exit) is logged on ``hyperqueue.worker`` and that
hook is left out of the run, which goes on as if it had no hook. Observability that
breaks must never fail, retry or lose a job.

With no hook registered (and no OpenTelemetry SDK configured) a run costs nothing
more: no record is built and nothing is called.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Literal, Protocol, runtime_checkable

from ._models import Job

__all__ = ["ExecutionHook", "JobRun", "RunOutcome"]

_log = logging.getLogger("hyperqueue.worker")

RunOutcome = Literal["completed", "retry", "failed", "deferred", "interrupted"]
"""How a run ended, as the worker decided it: ``retry`` (a failed attempt, or a result
that asks for one, scheduled to run again), ``deferred`` (handed back without spending
the attempt: an open breaker, a rate limit, a task this worker no longer has),
``interrupted`` (cancelled, drained, or its lease was lost)."""


class JobRun:
    """One run of a job, as execution hooks see it.

    ``job`` is the job as claimed (``job.attempts`` counts this run), ``attempt`` the
    same number, ``worker`` the name of the pool and ``queue`` the job's queue. The
    worker fills in the rest before it exits the hooks: ``outcome``, ``error`` (the
    exception that ended the task function, if any) and ``run_at`` (when a retried or
    deferred job is due again, seconds since the epoch on the queue's clock).
    """

    __slots__ = ("attempt", "error", "job", "outcome", "queue", "run_at", "worker")

    def __init__(self, job: Job, worker: str) -> None:
        self.job = job
        self.attempt = job.attempts
        self.worker = worker
        self.queue = job.queue
        self.outcome: RunOutcome | None = None
        self.error: BaseException | None = None
        self.run_at: float | None = None

    def __repr__(self) -> str:
        return (
            f"JobRun(job={self.job.id!r}, task={self.job.task!r}, attempt={self.attempt}, "
            f"worker={self.worker!r}, outcome={self.outcome!r})"
        )


Wrapper = AbstractContextManager[object] | AbstractAsyncContextManager[object]


@runtime_checkable
class ExecutionHook(Protocol):
    """Wraps each run of a job: ``hook(run)`` returns a context manager (sync or async)
    entered around the run, or ``None``. See :mod:`hyperqueue._hooks` for the rules."""

    def __call__(self, run: JobRun, /) -> Wrapper | None: ...


async def enter_hooks(
    hooks: Sequence[ExecutionHook], run: JobRun, entered: list[tuple[ExecutionHook, Wrapper]]
) -> None:
    """Call and enter each hook, appending those entered to ``entered`` (so a caller
    cancelled meanwhile still exits them); those that fail are logged and left out."""
    for hook in hooks:
        try:
            wrapper = hook(run)
            if wrapper is None:
                continue
            if hasattr(wrapper, "__aenter__"):
                await wrapper.__aenter__()
            else:
                wrapper.__enter__()
        except Exception:
            _log.exception("execution hook %r failed on entering %r; left out", hook, run)
            continue
        entered.append((hook, wrapper))


async def exit_hooks(
    entered: list[tuple[ExecutionHook, Wrapper]], run: JobRun, exc: BaseException | None
) -> None:
    """Exit the entered hooks in reverse order with ``exc``; a failing exit is logged."""
    kind = None if exc is None else type(exc)
    trace = None if exc is None else exc.__traceback__
    for hook, wrapper in reversed(entered):
        try:
            if hasattr(wrapper, "__aexit__"):
                await wrapper.__aexit__(kind, exc, trace)
            else:
                wrapper.__exit__(kind, exc, trace)
        except Exception:
            _log.exception("execution hook %r failed on exiting %r", hook, run)
