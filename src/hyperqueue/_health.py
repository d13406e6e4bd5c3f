"""Health checks: small async probes, run together, each timed and bounded.

A host registers what its service depends on (storage, a downstream API, a supervised
service) in a :class:`Health` registry. :meth:`Health.report` runs every check at once,
each under its own timeout on the injected clock, and folds the results into one
:class:`HealthReport`, the record the HTTP ``/health`` endpoint serves and the
:class:`~hyperqueue._modes.ModeController` switches modes from.

The shape of a check, one rule for all: ``async def check() -> CheckResult | None``.
Returning ``None`` means healthy; a :class:`CheckResult` says degraded or unhealthy
with a message; raising an exception (or running past the timeout) is unhealthy, with
a message saying so. The registry measures the latency itself, so a check never needs
to time itself.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Awaitable, Callable, Iterator
from typing import Protocol, overload, runtime_checkable

import anyio
import msgspec

from ._clock import Clock, SystemClock

__all__ = ["CheckResult", "Health", "HealthCheck", "HealthReport", "HealthStatus"]


class HealthStatus(enum.StrEnum):
    """How well something works, worst last."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"


class CheckResult(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of one check.

    A check returns one without ``latency_ms``; the registry fills it in from the clock.
    The fields are those of one entry of ``checks`` in the HTTP ``/health`` response.
    """

    status: HealthStatus
    latency_ms: float = 0.0
    message: str | None = None


class HealthReport(msgspec.Struct, frozen=True, kw_only=True):
    """Every check's result and the overall status, at ``checked_at`` (when they started).

    Overall status: unhealthy if a critical check is unhealthy; degraded if any check is
    degraded or a non-critical check is unhealthy; healthy otherwise (and when there are
    no checks). ``checks`` keeps the order in which checks were added.
    """

    status: HealthStatus
    checks: dict[str, CheckResult]
    checked_at: float

    def problems(self) -> str | None:
        """A one-line summary of the checks that are not healthy, or None if all are."""
        parts = [
            f"{name}: {result.status}" + (f" ({result.message})" if result.message else "")
            for name, result in self.checks.items()
            if result.status is not HealthStatus.HEALTHY
        ]
        return "; ".join(parts) or None


@runtime_checkable
class HealthCheck(Protocol):
    """Something whose health can be checked: a name and one async method.

    ``check`` returns ``None`` when healthy, or a :class:`CheckResult` for degraded or
    unhealthy; raising counts as unhealthy. A :class:`Health` registry is a check too,
    so registries compose; so is a supervised :class:`~hyperqueue._services.Service`.
    """

    @property
    def name(self) -> str: ...

    async def check(self) -> CheckResult | None: ...


CheckFunction = Callable[[], Awaitable[CheckResult | None]]


class _Entry:
    __slots__ = ("critical", "fn", "name", "timeout")

    def __init__(self, name: str, fn: CheckFunction, critical: bool, timeout: float) -> None:
        self.name = name
        self.fn = fn
        self.critical = critical
        self.timeout = timeout


class Health:
    """A registry of health checks, run together into one :class:`HealthReport`.

    ``timeout`` (default 5 s) bounds each check unless :meth:`add` gives its own. The
    registry is itself a :class:`HealthCheck` named ``name`` (default ``"health"``), so
    one registry can be added to another as a single check.
    """

    def __init__(
        self, *, clock: Clock | None = None, timeout: float = 5.0, name: str = "health"
    ) -> None:
        _check_timeout(timeout)
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.timeout = timeout
        self._name = name
        self._entries: dict[str, _Entry] = {}
        self._last: HealthReport | None = None

    @property
    def name(self) -> str:
        return self._name

    @overload
    def add(
        self, check: HealthCheck, /, *, critical: bool = True, timeout: float | None = None
    ) -> None: ...

    @overload
    def add(
        self,
        name: str,
        check: CheckFunction,
        /,
        *,
        critical: bool = True,
        timeout: float | None = None,
    ) -> None: ...

    def add(
        self,
        check: HealthCheck | str,
        fn: CheckFunction | None = None,
        /,
        *,
        critical: bool = True,
        timeout: float | None = None,
    ) -> None:
        """Register a check: ``add(obj)`` for a :class:`HealthCheck`, or
        ``add("db", async_fn)`` for a plain async function of no arguments.

        A critical check (the default) that is unhealthy makes the whole report
        unhealthy; a non-critical one only degrades it. Names must be unique.
        """
        if isinstance(check, str):
            if fn is None:
                raise TypeError("add(name, fn) needs the check function")
            name = check
        else:
            if fn is not None:
                raise TypeError("add(check) takes no function: the check has its own")
            name, fn = check.name, check.check
        if name in self._entries:
            raise ValueError(f"a health check named {name!r} is already registered")
        if timeout is not None:
            _check_timeout(timeout)
        self._entries[name] = _Entry(
            name, fn, critical, self.timeout if timeout is None else timeout
        )

    def remove(self, name: str) -> None:
        """Unregister the check ``name``; raises KeyError if there is none."""
        del self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def last(self) -> HealthReport | None:
        """The most recent report, without running anything (None before the first)."""
        return self._last

    async def report(self, *, max_age: float = 0.0) -> HealthReport:
        """Run every check concurrently and fold the results.

        With ``max_age`` > 0 a report younger than that many seconds is returned again
        instead, so a busy ``/health`` endpoint does not hammer the dependencies.
        """
        clock = self.clock
        started = clock.now()
        last = self._last
        if last is not None and max_age > 0 and started - last.checked_at < max_age:
            return last
        entries = tuple(self._entries.values())
        results: dict[str, CheckResult] = {}
        if len(entries) == 1:
            await _run(entries[0], clock, results)
        elif entries:
            async with anyio.create_task_group() as tg:
                for entry in entries:
                    tg.start_soon(_run, entry, clock, results, name=f"health check {entry.name}")
        status = HealthStatus.HEALTHY
        checks: dict[str, CheckResult] = {}
        for entry in entries:
            result = checks[entry.name] = results[entry.name]
            if result.status is HealthStatus.HEALTHY:
                continue
            if result.status is HealthStatus.UNHEALTHY and entry.critical:
                status = HealthStatus.UNHEALTHY
            elif status is HealthStatus.HEALTHY:
                status = HealthStatus.DEGRADED
        report = HealthReport(status=status, checks=checks, checked_at=started)
        self._last = report
        return report

    async def check(self) -> CheckResult | None:
        """This registry as one check: its overall status, and what is wrong."""
        report = await self.report()
        if report.status is HealthStatus.HEALTHY:
            return None
        return CheckResult(status=report.status, message=report.problems())

    def __repr__(self) -> str:
        return f"Health(name={self._name!r}, checks={list(self._entries)!r})"


async def _run(entry: _Entry, clock: Clock, results: dict[str, CheckResult]) -> None:
    """Run one check under its timeout; an error or a timeout is an unhealthy result."""
    start = clock.now()
    result: CheckResult | None = None
    failure: str | None = None
    with clock.cancel_after(entry.timeout) as scope:
        try:
            result = await entry.fn()
        except Exception as exc:  # a failing check is data: the report says unhealthy
            failure = _describe(exc)
    latency_ms = max(clock.now() - start, 0.0) * 1000.0
    if scope.cancel_called:  # even if the check swallowed the cancellation
        failure = f"timed out after {entry.timeout:g} s"
    elif failure is None and result is not None and not isinstance(result, CheckResult):
        failure = f"the check returned {type(result).__name__}, not a CheckResult or None"
    if failure is not None:
        result = CheckResult(status=HealthStatus.UNHEALTHY, latency_ms=latency_ms, message=failure)
    elif result is None:
        result = CheckResult(status=HealthStatus.HEALTHY, latency_ms=latency_ms)
    else:
        result = msgspec.structs.replace(result, latency_ms=latency_ms)
    results[entry.name] = result


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"raised {type(exc).__name__}: {text}" if text else f"raised {type(exc).__name__}"


def _check_timeout(timeout: float) -> None:
    if not (timeout > 0 and math.isfinite(timeout)):
        raise ValueError("timeout must be a finite number of seconds > 0")
