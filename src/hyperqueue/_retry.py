"""Retry policy: how many attempts, how long to wait between them, which errors qualify.

The waits come from tenacity's strategies (``wait_exponential`` plus ``wait_random``), so
the formula is the well-known one: before attempt ``n + 1`` the queue waits
``min(backoff * multiplier ** (n - 1), max_backoff) + uniform(0, jitter)`` seconds.

The same :class:`Retry` object drives the queue's job retries and the standalone helper
(:func:`retry`, :meth:`Retry.wrap`, :meth:`Retry.attempting`). The standalone helper
calls the function once before it builds any tenacity machinery, because most calls
succeed the first time and tenacity costs tens of microseconds to set up; only after a
failure does tenacity take over, with the first outcome handed to it as attempt 1, so
its stop and wait strategies see the same history a plain tenacity loop would.

A :class:`~hyperqueue.CircuitOpenError` is never retried by the standalone helper: the
breaker has already said the operation is down, and backing off into it only delays the
caller. With ``breaker=``, a failure that leaves the breaker open stops the retries at
once too, re-raising that failure.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

import tenacity

from ._clock import Clock, SystemClock
from ._errors import CircuitOpenError

if TYPE_CHECKING:
    from ._breaker import CircuitBreaker

__all__ = ["Attempt", "Attempts", "Retry", "retry"]

P = ParamSpec("P")
R = TypeVar("R")
ExceptionTypes = type[BaseException] | tuple[type[BaseException], ...]

_UNSET: Any = object()
_SYSTEM_CLOCK = SystemClock()  # stateless; shared so a loop builds nothing it need not


class Retry:
    """A bounded retry policy, shared by the queue and usable on its own.

    ``attempts`` counts the first try: ``Retry(3)`` runs a job at most three times.
    Defaults: 3 attempts, first wait 1 s, doubling, at most 60 s, plus up to 1 s of jitter,
    on any ``Exception``. ``on_result`` (off by default) also retries a call that returned
    a value it accepts, e.g. ``on_result=lambda r: r.status_code in {429, 502, 503}``;
    when the attempts run out that way, the last value is returned.

    Standalone use: ``policy.wrap(fn)`` (or the :func:`retry` decorator), or a loop::

        async for attempt in policy.attempting():
            with attempt:
                response = await fetch()
                attempt.result = response  # only needed with on_result
    """

    __slots__ = (
        "_wait",
        "attempts",
        "backoff",
        "jitter",
        "max_backoff",
        "multiplier",
        "on",
        "on_result",
    )

    def __init__(
        self,
        attempts: int = 3,
        *,
        backoff: float = 1.0,
        multiplier: float = 2.0,
        max_backoff: float = 60.0,
        jitter: float = 1.0,
        on: ExceptionTypes = Exception,
        on_result: Callable[[Any], bool] | None = None,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1 (it counts the first try)")
        for name, value in (("backoff", backoff), ("max_backoff", max_backoff), ("jitter", jitter)):
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number of seconds >= 0")
        if not multiplier >= 1:
            raise ValueError("multiplier must be at least 1")
        self.attempts = attempts
        self.backoff = backoff
        self.multiplier = multiplier
        self.max_backoff = max_backoff
        self.jitter = jitter
        self.on = on
        self.on_result = on_result
        self._wait: tenacity.wait.wait_base = tenacity.wait_exponential(
            multiplier=backoff, exp_base=multiplier, max=max_backoff
        ) + tenacity.wait_random(0, jitter)

    def retries(self, exc: BaseException) -> bool:
        """Whether ``exc`` is one this policy retries on."""
        return isinstance(exc, self.on)

    def retries_result(self, result: object) -> bool:
        """Whether a call that returned ``result`` should be tried again."""
        return self.on_result is not None and bool(self.on_result(result))

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        state = tenacity.RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
        state.attempt_number = attempt
        return float(self._wait(state))

    # -- standalone use ------------------------------------------------------------------

    def wrap(
        self,
        fn: Callable[P, Awaitable[R]],
        *,
        clock: Clock | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> Callable[P, Coroutine[Any, Any, R]]:
        """``fn`` retried by this policy; waits are ``clock`` sleeps (the system clock's
        by default), and with ``breaker`` every attempt goes through the breaker."""
        policy = self
        sleep = (clock if clock is not None else _SYSTEM_CLOCK).sleep
        target: Callable[..., Awaitable[R]] = (
            fn if breaker is None else functools.partial(breaker.call, fn)
        )
        on_result = self.on_result
        single = self.attempts == 1

        @functools.wraps(fn)
        async def retried(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                result = await target(*args, **kwargs)
            except Exception as exc:
                if single or not policy._retryable(exc):
                    raise
                return await policy._again(target, args, kwargs, exc, _UNSET, sleep, breaker)
            if on_result is None or single or not on_result(result):
                return result
            return await policy._again(target, args, kwargs, None, result, sleep, breaker)

        return retried

    def attempting(
        self, *, clock: Clock | None = None, breaker: CircuitBreaker | None = None
    ) -> Attempts:
        """Attempts to run in an ``async for`` loop, each used as ``with attempt:``.

        The loop ends after the first attempt that succeeds; an exception that is not
        retried leaves the ``with`` block at once, and the last exception is raised
        from the loop when the attempts run out. Give ``breaker`` to stop as soon as a
        failure leaves it open (the calls inside are yours to route through it).
        """
        return Attempts(self, clock if clock is not None else _SYSTEM_CLOCK, breaker)

    def _retryable(self, exc: BaseException) -> bool:
        return isinstance(exc, self.on) and not isinstance(exc, CircuitOpenError)

    def _retrying(
        self, sleep: Callable[[float], Awaitable[None]], breaker: CircuitBreaker | None
    ) -> tenacity.AsyncRetrying:
        """Tenacity, configured as this policy; one per failed call, as it keeps state."""
        stop: tenacity.stop.stop_base = tenacity.stop_after_attempt(self.attempts)
        if breaker is not None:
            stop = stop | _StopWhenOpen(breaker)
        retry: tenacity.retry_base = tenacity.retry_if_exception(self._retryable)
        if self.on_result is not None:
            retry = retry | tenacity.retry_if_result(self.on_result)
        return tenacity.AsyncRetrying(
            sleep=sleep,
            stop=stop,
            wait=self._wait,
            retry=retry,
            retry_error_callback=_last_outcome,
        )

    async def _again(
        self,
        target: Callable[..., Awaitable[R]],
        args: Any,
        kwargs: Any,
        error: Exception | None,
        result: Any,
        sleep: Callable[[float], Awaitable[None]],
        breaker: CircuitBreaker | None,
    ) -> R:
        """Attempts 2 and later, by tenacity, with attempt 1's outcome replayed to it."""
        first = [True]

        async def attempt(*args: Any, **kwargs: Any) -> R:
            if first:
                first.clear()
                if error is not None:
                    raise error
                return cast(R, result)
            return await target(*args, **kwargs)

        return cast(R, await self._retrying(sleep, breaker)(attempt, *args, **kwargs))

    def __repr__(self) -> str:
        extra = f", on_result={self.on_result!r}" if self.on_result is not None else ""
        return (
            f"Retry({self.attempts}, backoff={self.backoff}, multiplier={self.multiplier}, "
            f"max_backoff={self.max_backoff}, jitter={self.jitter}, on={self.on!r}{extra})"
        )


def _last_outcome(state: tenacity.RetryCallState) -> Any:
    """When tenacity stops: raise the last exception itself, or return the last value."""
    assert state.outcome is not None
    return state.outcome.result()


class _StopWhenOpen(tenacity.stop.stop_base):
    """Stop retrying once the breaker is open: the next attempt would be refused."""

    def __init__(self, breaker: CircuitBreaker) -> None:
        self._breaker = breaker

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return self._breaker.retry_at is not None


def retry(
    attempts: int = 3,
    *,
    backoff: float = 1.0,
    multiplier: float = 2.0,
    max_backoff: float = 60.0,
    jitter: float = 1.0,
    on: ExceptionTypes = Exception,
    on_result: Callable[[Any], bool] | None = None,
    clock: Clock | None = None,
    breaker: CircuitBreaker | None = None,
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Coroutine[Any, Any, R]]]:
    """Decorate an async function to retry it, with the defaults of :class:`Retry`
    (3 attempts, 1 s doubling up to 60 s, up to 1 s of jitter, on ``Exception``).

    When the attempts run out, the last exception is raised as it is (not wrapped).
    """
    policy = Retry(
        attempts,
        backoff=backoff,
        multiplier=multiplier,
        max_backoff=max_backoff,
        jitter=jitter,
        on=on,
        on_result=on_result,
    )

    def decorate(fn: Callable[P, Awaitable[R]]) -> Callable[P, Coroutine[Any, Any, R]]:
        return policy.wrap(fn, clock=clock, breaker=breaker)

    return decorate


class Attempt:
    """One attempt of a retry loop; ``number`` counts from 1.

    Leaving ``with attempt:`` with an exception the policy retries hands it to the loop
    (the next attempt, or the loop raises it when none are left); any other exception,
    cancellation included, propagates at once. Set :attr:`result` inside the block for
    ``on_result`` to judge it.
    """

    __slots__ = ("_attempts", "_state", "number", "result")

    def __init__(
        self, attempts: Attempts, number: int, state: tenacity.RetryCallState | None
    ) -> None:
        self._attempts = attempts
        self._state = state
        self.number = number
        self.result: Any = _UNSET

    def __enter__(self) -> Attempt:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        owner = self._attempts
        if exc is not None:
            if not owner._policy._retryable(exc) or owner._policy.attempts == 1:
                return False
            if self._state is None:
                owner._first = (exc, _UNSET)
            else:
                self._state.set_exception((type(exc), exc, tb))
            return True
        result = None if self.result is _UNSET else self.result
        if self._state is None:
            if self.result is not _UNSET and owner._policy.retries_result(self.result):
                owner._first = (None, self.result)
        else:
            self._state.set_result(result)
        return False

    def __repr__(self) -> str:
        return f"Attempt({self.number})"


class Attempts:
    """The ``async for`` side of :meth:`Retry.attempting`.

    The first attempt is plain; tenacity is built only if it fails, and is told of that
    failure as its own attempt 1 before it runs the rest.
    """

    __slots__ = ("_breaker", "_first", "_policy", "_sleep", "_started", "_tenacity")

    def __init__(self, policy: Retry, clock: Clock, breaker: CircuitBreaker | None) -> None:
        self._policy = policy
        self._sleep = clock.sleep
        self._breaker = breaker
        self._started = False
        self._first: tuple[BaseException | None, Any] | None = None
        self._tenacity: tenacity.AsyncRetrying | None = None

    def __aiter__(self) -> Attempts:
        return self

    async def __anext__(self) -> Attempt:
        if not self._started:
            self._started = True
            return Attempt(self, 1, None)
        retrying = self._tenacity
        if retrying is None:
            first = self._first
            if first is None:  # the first attempt succeeded
                raise StopAsyncIteration
            self._first = None
            retrying = self._tenacity = self._policy._retrying(self._sleep, self._breaker)
            manager = await retrying.__aiter__().__anext__()
            error, result = first
            if error is not None:
                manager.retry_state.set_exception((type(error), error, error.__traceback__))
            else:
                manager.retry_state.set_result(result)
        manager = await retrying.__anext__()
        state = manager.retry_state
        return Attempt(self, state.attempt_number, state)
