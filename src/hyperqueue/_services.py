"""Supervised background services: periodic loops with their own health.

A :class:`Service` is an async function of no arguments that a :class:`Supervisor` runs
every ``interval`` seconds (plus jitter), and at once when :meth:`Service.trigger` is
called: the loop waits for the interval *or* a trigger, so change-driven services react
at once and nothing polls. The wait starts when a run ends, so runs never overlap and a
slow run delays the next one instead of piling up.

A run that raises is data: it is counted, logged, and the service is restarted after an
exponential backoff (:meth:`hyperqueue.Retry.delay`). After ``unhealthy_after``
failures in a row the service reports unhealthy and keeps trying every
``max_backoff`` seconds (plus the retry's jitter) until a run succeeds.

Health (:meth:`Service.check`, so a service can be added to a
:class:`~hyperqueue._health.Health` registry): healthy while it runs on schedule;
degraded when its last run failed; unhealthy when it failed ``unhealthy_after`` times in
a row, when no run has succeeded for ``stale_after`` periods (a period is ``interval +
jitter``; this catches a hung run), or when it is not running (not started, stopped).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from types import MappingProxyType, TracebackType

import anyio
import anyio.abc
import anyio.lowlevel
import msgspec

from ._clock import Clock, SystemClock
from ._health import CheckResult, HealthStatus
from ._retry import Retry

__all__ = ["Service", "ServiceStats", "Supervisor"]

_log = logging.getLogger("hyperqueue.services")

# the attempt number that stands for "far along the backoff curve": its maximum
_FAR = 1024


class ServiceStats(msgspec.Struct, frozen=True, kw_only=True):
    """Figures of one service. Times are seconds since the epoch on the clock.

    ``runs`` counts finished runs, failed ones included; ``failures`` the failed ones;
    ``restarts`` the runs started after a failure; ``last_duration`` is in seconds.
    """

    name: str
    status: HealthStatus
    running: bool
    runs: int
    failures: int
    consecutive_failures: int
    restarts: int
    last_run_at: float | None
    last_success_at: float | None
    last_duration: float | None
    last_error: str | None
    next_run_at: float | None


class Service:
    """A periodic background function, supervised; see the module docstring.

    Options, keyword-only, with their defaults:

    - ``interval``: seconds between the end of one run and the start of the next.
    - ``jitter``: up to this many seconds added at random to each interval (default
      10 % of ``interval``), so services started together do not run in lockstep.
    - ``run_at_start`` (True): run once as soon as the service starts.
    - ``timeout`` (None): a run that takes longer is cancelled and counted as failed;
      without it, a hung run shows as unhealthy after ``stale_after`` periods.
    - ``retry``: the backoff after a failure; default ``Retry(backoff=1.0,
      multiplier=2.0, max_backoff=60.0, jitter=1.0)``: about 1 s, 2 s, 4 s, ... 60 s.
      Only its waits are used: a service is restarted after any ``Exception``.
    - ``unhealthy_after`` (3): failures in a row that make the service unhealthy.
    - ``stale_after`` (3.0): periods without a successful run that make it unhealthy.
    - ``clock``: defaults to the supervisor's.
    """

    def __init__(
        self,
        name: str,
        fn: Callable[[], Awaitable[object]],
        *,
        interval: float,
        jitter: float | None = None,
        run_at_start: bool = True,
        timeout: float | None = None,
        retry: Retry | None = None,
        unhealthy_after: int = 3,
        stale_after: float = 3.0,
        clock: Clock | None = None,
    ) -> None:
        if not (interval > 0 and math.isfinite(interval)):
            raise ValueError("interval must be a finite number of seconds > 0")
        jitter = 0.1 * interval if jitter is None else jitter
        if not (jitter >= 0 and math.isfinite(jitter)):
            raise ValueError("jitter must be a finite number of seconds >= 0")
        if timeout is not None and not (timeout > 0 and math.isfinite(timeout)):
            raise ValueError("timeout must be a finite number of seconds > 0, or None")
        if unhealthy_after < 1:
            raise ValueError("unhealthy_after must be at least 1")
        if not (stale_after > 0 and math.isfinite(stale_after)):
            raise ValueError("stale_after must be a finite number of periods > 0")
        self.name = name
        self.fn = fn
        self.interval = interval
        self.jitter = jitter
        self.run_at_start = run_at_start
        self.timeout = timeout
        self.retry = retry if retry is not None else Retry()
        self.unhealthy_after = unhealthy_after
        self.stale_after = stale_after
        self.clock: Clock | None = clock
        # lifecycle
        self._supervised = False
        self._started_at: float | None = None
        self._stopping = False
        self._stopped = False
        self._done: anyio.Event | None = None
        # waiting: a trigger is remembered in _triggered; _wake ends a wait early
        self._triggered = False
        self._wake: anyio.Event | None = None
        self._trigger_wakes = False
        # running
        self._run_scope: anyio.CancelScope | None = None
        self._killed = False
        # figures
        self._runs = 0
        self._failures = 0
        self._consecutive = 0
        self._restarts = 0
        self._last_run_at: float | None = None
        self._last_success_at: float | None = None
        self._last_duration: float | None = None
        self._last_error: str | None = None
        self._next_run_at: float | None = None

    # -- public -------------------------------------------------------------------------

    def trigger(self) -> None:
        """Run as soon as possible instead of waiting for the interval.

        Triggers that arrive during a run coalesce into one more run right after it. A
        trigger during a failure's backoff is kept for the run that ends the backoff: a
        failing dependency is not hammered however often the service is triggered.
        """
        self._triggered = True
        if self._trigger_wakes and self._wake is not None:
            self._wake.set()

    @property
    def running(self) -> bool:
        """Whether a run is in progress."""
        return self._run_scope is not None

    def stats(self) -> ServiceStats:
        return ServiceStats(
            name=self.name,
            status=self._health()[0],
            running=self._run_scope is not None,
            runs=self._runs,
            failures=self._failures,
            consecutive_failures=self._consecutive,
            restarts=self._restarts,
            last_run_at=self._last_run_at,
            last_success_at=self._last_success_at,
            last_duration=self._last_duration,
            last_error=self._last_error,
            next_run_at=self._next_run_at,
        )

    async def check(self) -> CheckResult | None:
        """This service's health, as a :class:`~hyperqueue._health.HealthCheck`."""
        status, message = self._health()
        if status is HealthStatus.HEALTHY:
            return None
        return CheckResult(status=status, message=message)

    def __repr__(self) -> str:
        return f"Service({self.name!r}, interval={self.interval}, jitter={self.jitter})"

    # -- health -------------------------------------------------------------------------

    def _health(self) -> tuple[HealthStatus, str | None]:
        if self._started_at is None or self.clock is None:
            return HealthStatus.UNHEALTHY, "not started"
        if self._stopping or self._stopped:
            return HealthStatus.UNHEALTHY, "stopped"
        if self._consecutive >= self.unhealthy_after:
            return (
                HealthStatus.UNHEALTHY,
                f"failed {self._consecutive} times in a row; last error: {self._last_error}",
            )
        since = self._last_success_at if self._last_success_at is not None else self._started_at
        idle = self.clock.now() - since
        if idle > self.stale_after * (self.interval + self.jitter):
            when = (
                f"in the {idle:g} s since it started"
                if self._last_success_at is None
                else f"for {idle:g} s"
            )
            return HealthStatus.UNHEALTHY, f"no successful run {when} (every {self.interval:g} s)"
        if self._consecutive:
            return HealthStatus.DEGRADED, f"last run failed: {self._last_error}"
        return HealthStatus.HEALTHY, None

    # -- the loop -----------------------------------------------------------------------

    def _attach(self, clock: Clock) -> None:
        if self._supervised:
            raise RuntimeError(f"service {self.name!r} is already supervised")
        self._supervised = True
        if self.clock is None:
            self.clock = clock
        self._started_at = self.clock.now()
        self._done = anyio.Event()

    async def _loop(self) -> None:
        clock = self.clock
        assert clock is not None and self._done is not None
        try:
            first = True
            while not self._stopping:
                failing = self._consecutive > 0
                if failing:
                    attempt = (
                        self._consecutive if self._consecutive < self.unhealthy_after else _FAR
                    )
                    delay = self.retry.delay(attempt)
                elif first and self.run_at_start:
                    delay = 0.0
                else:
                    delay = self.interval + (
                        random.uniform(0.0, self.jitter) if self.jitter else 0.0
                    )
                first = False
                await self._wait(clock, delay, wake_on_trigger=not failing)
                if self._stopping:
                    break
                if failing:
                    self._restarts += 1
                await self._run_once(clock)
        finally:
            self._next_run_at = None
            self._stopped = True
            self._done.set()

    async def _wait(self, clock: Clock, delay: float, *, wake_on_trigger: bool) -> None:
        """Wait ``delay`` s, or less if triggered (when ``wake_on_trigger``) or stopped."""
        self._next_run_at = clock.now() + delay
        if delay <= 0 or (wake_on_trigger and self._triggered):
            await anyio.lowlevel.checkpoint()
            return
        wake = self._wake = anyio.Event()
        self._trigger_wakes = wake_on_trigger
        try:
            with clock.cancel_after(delay):
                await wake.wait()
        finally:
            self._wake = None
            self._trigger_wakes = False

    async def _run_once(self, clock: Clock) -> None:
        self._triggered = False  # this run serves every trigger so far
        self._next_run_at = None
        start = self._last_run_at = clock.now()
        scope = (
            clock.cancel_after(self.timeout) if self.timeout is not None else anyio.CancelScope()
        )
        self._run_scope = scope
        error: str | None = None
        try:
            with scope:
                try:
                    await self.fn()
                except Exception as exc:  # a failing run is data: count it and restart
                    error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                    _log.warning("service %r failed", self.name, exc_info=True)
        finally:
            self._run_scope = None
        end = clock.now()
        self._last_duration = max(end - start, 0.0)
        if scope.cancelled_caught and self._killed:
            return  # stopped by the supervisor at the end of its grace period: not a failure
        if scope.cancel_called and error is None and self.timeout is not None:
            error = f"timed out after {self.timeout:g} s"
            _log.warning("service %r timed out after %g s", self.name, self.timeout)
        self._runs += 1
        if error is None:
            self._consecutive = 0
            self._last_success_at = end
        else:
            self._failures += 1
            self._consecutive += 1
            self._last_error = error

    # -- stopping (called by the supervisor) ----------------------------------------------

    def _stop(self) -> None:
        self._stopping = True
        if self._wake is not None:
            self._wake.set()

    def _kill(self) -> None:
        if self._run_scope is not None:
            self._killed = True
            self._run_scope.cancel()


class Supervisor:
    """Runs services in a task group it owns; leaving the ``async with`` stops them.

    On a normal exit, a run in progress gets ``grace`` seconds (default 5 s, on the
    clock) to finish, then it is cancelled; on an error or a cancellation leaving the
    block, runs are cancelled at once.
    """

    def __init__(self, *, clock: Clock | None = None, grace: float = 5.0) -> None:
        if not (grace >= 0 and math.isfinite(grace)):
            raise ValueError("grace must be a finite number of seconds >= 0")
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.grace = grace
        self._services: dict[str, Service] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self._stack: AsyncExitStack | None = None
        self._closing = False

    async def __aenter__(self) -> Supervisor:
        if self._stack is not None or self._closing:
            raise RuntimeError("a Supervisor can be entered once")
        async with AsyncExitStack() as stack:
            self._tg = await stack.enter_async_context(anyio.create_task_group())
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._stack is not None
        self._closing = True
        with anyio.CancelScope(shield=exc_type is not None):
            await self._stop_all(self.grace if exc_type is None else 0.0)
        # every service loop has returned: close the task group as if the body had
        # succeeded, so the body's own exception propagates as it is, not in a group
        await self._stack.__aexit__(None, None, None)
        return None

    def add(self, service: Service) -> Service:
        """Start supervising ``service`` (names are unique); returns it."""
        if self._tg is None or self._closing:
            raise RuntimeError("add services inside `async with Supervisor(...)`")
        if service.name in self._services:
            raise ValueError(f"a service named {service.name!r} is already supervised")
        service._attach(self.clock)
        self._services[service.name] = service
        self._tg.start_soon(service._loop, name=f"service {service.name}")
        return service

    @property
    def services(self) -> Mapping[str, Service]:
        """The supervised services by name (a read-only view)."""
        return MappingProxyType(self._services)

    def __getitem__(self, name: str) -> Service:
        return self._services[name]

    def stats(self) -> list[ServiceStats]:
        """Figures of every service, in the order they were added."""
        return [service.stats() for service in self._services.values()]

    async def _stop_all(self, grace: float) -> None:
        services = tuple(self._services.values())
        for service in services:
            service._stop()
        if grace > 0 and any(s.running for s in services):
            with self.clock.cancel_after(grace):
                for service in services:
                    assert service._done is not None
                    await service._done.wait()
        for service in services:
            service._kill()
        for service in services:
            assert service._done is not None
            await service._done.wait()
