"""Health checks: concurrency, timeouts on the clock, latency, overall status, shapes."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import msgspec
import pytest

from hyperqueue._health import CheckResult, Health, HealthCheck, HealthReport, HealthStatus
from hyperqueue.testing import FakeClock

pytestmark = pytest.mark.anyio

T = TypeVar("T")
HEALTHY, DEGRADED, UNHEALTHY = HealthStatus.HEALTHY, HealthStatus.DEGRADED, HealthStatus.UNHEALTHY


async def drive(
    clock: FakeClock, fn: Callable[[], Awaitable[T]], seconds: float, *, step: float | None = None
) -> T:
    """Run ``fn`` while the fake clock moves ``seconds`` forward; return its result.

    ``step`` moves the clock in increments: on asyncio, FakeClock.advance can move time
    to its target before the host of a nested task group resumes, so a test that reads
    the clock after nested groups advances in steps that end where the timers fall.
    """
    out: list[T] = []

    async def run() -> None:
        out.append(await fn())

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            if step is None:
                await clock.advance(seconds)
            else:
                for _ in range(round(seconds / step)):
                    await clock.advance(step)
    assert out, "still running after the clock moved"
    return out[0]


def sleeper(clock: FakeClock, seconds: float, result: CheckResult | None = None) -> Any:
    async def check() -> CheckResult | None:
        await clock.sleep(seconds)
        return result

    return check


async def test_checks_run_concurrently_and_latency_comes_from_the_clock(clock: FakeClock) -> None:
    health = Health(clock=clock)
    health.add("db", sleeper(clock, 0.2))
    health.add("api", sleeper(clock, 0.5))
    health.add("cache", sleeper(clock, 0.1))
    start = clock.now()
    finished: list[float] = []

    async def report() -> HealthReport:
        r = await health.report()
        finished.append(clock.now())
        return r

    r = await drive(clock, report, 2.0)
    assert finished == [pytest.approx(start + 0.5)], "concurrent: the slowest check, not the sum"
    assert r.status is HEALTHY
    assert list(r.checks) == ["db", "api", "cache"], "the order checks were added in"
    assert r.checks["db"].latency_ms == pytest.approx(200.0)
    assert r.checks["api"].latency_ms == pytest.approx(500.0)
    assert r.checks["cache"].latency_ms == pytest.approx(100.0)
    assert r.checked_at == start
    assert health.last is r


async def test_a_check_that_times_out_is_unhealthy_and_does_not_hold_up_the_others(
    clock: FakeClock,
) -> None:
    health = Health(clock=clock, timeout=5.0)
    health.add("hung", sleeper(clock, 3600.0))
    health.add("slowish", sleeper(clock, 2.0), timeout=1.0)
    health.add("quick", sleeper(clock, 0.3))
    r = await drive(clock, health.report, 10.0)
    assert r.checks["hung"] == CheckResult(
        status=UNHEALTHY, latency_ms=pytest.approx(5000.0), message="timed out after 5 s"
    )
    assert r.checks["slowish"].status is UNHEALTHY
    assert r.checks["slowish"].message == "timed out after 1 s"
    assert r.checks["slowish"].latency_ms == pytest.approx(1000.0)
    assert r.checks["quick"] == CheckResult(status=HEALTHY, latency_ms=pytest.approx(300.0))
    assert r.status is UNHEALTHY


async def test_a_check_that_raises_is_unhealthy_with_the_error_in_its_message(
    clock: FakeClock,
) -> None:
    async def db() -> None:
        await clock.sleep(0.05)
        raise ConnectionError("connection refused")

    async def bare() -> None:
        raise KeyError

    health = Health(clock=clock)
    health.add("db", db)
    health.add("bare", bare, critical=False)
    r = await drive(clock, health.report, 1.0)
    assert r.checks["db"].status is UNHEALTHY
    assert r.checks["db"].message == "raised ConnectionError: connection refused"
    assert r.checks["db"].latency_ms == pytest.approx(50.0)
    assert r.checks["bare"].message == "raised KeyError"


async def test_a_returned_result_keeps_its_status_and_message_and_gets_the_latency(
    clock: FakeClock,
) -> None:
    health = Health(clock=clock)
    health.add("disk", sleeper(clock, 0.25, CheckResult(status=DEGRADED, message="92% full")))
    r = await drive(clock, health.report, 1.0)
    assert r.checks["disk"] == CheckResult(
        status=DEGRADED, latency_ms=pytest.approx(250.0), message="92% full"
    )
    assert r.status is DEGRADED


async def test_a_check_returning_something_else_is_unhealthy(clock: FakeClock) -> None:
    async def wrong() -> Any:
        return True

    health = Health(clock=clock)
    health.add("wrong", wrong)
    r = await health.report()
    assert r.checks["wrong"].status is UNHEALTHY
    assert "bool" in (r.checks["wrong"].message or "")


@pytest.mark.parametrize(
    ("checks", "overall"),
    [
        ([], HEALTHY),
        ([(HEALTHY, True), (HEALTHY, False)], HEALTHY),
        ([(HEALTHY, True), (DEGRADED, True)], DEGRADED),
        ([(HEALTHY, True), (DEGRADED, False)], DEGRADED),
        ([(HEALTHY, True), (UNHEALTHY, False)], DEGRADED),
        ([(UNHEALTHY, False), (UNHEALTHY, False)], DEGRADED),
        ([(DEGRADED, False), (UNHEALTHY, True)], UNHEALTHY),
        ([(UNHEALTHY, True), (HEALTHY, False)], UNHEALTHY),
        ([(UNHEALTHY, False), (DEGRADED, True), (UNHEALTHY, True)], UNHEALTHY),
    ],
)
async def test_overall_status_from_critical_and_non_critical_checks(
    clock: FakeClock, checks: list[tuple[HealthStatus, bool]], overall: HealthStatus
) -> None:
    health = Health(clock=clock)
    for i, (status, critical) in enumerate(checks):

        async def check(status: HealthStatus = status) -> CheckResult | None:
            if status is UNHEALTHY:
                raise RuntimeError("down")
            return None if status is HEALTHY else CheckResult(status=status)

        health.add(f"c{i}", check, critical=critical)
    r = await health.report()
    assert r.status is overall
    assert [c.status for c in r.checks.values()] == [s for s, _ in checks]


class Probe:
    """A check written as a class, the HealthCheck protocol."""

    def __init__(self, name: str, result: CheckResult | None) -> None:
        self.name = name
        self.result = result
        self.calls = 0

    async def check(self) -> CheckResult | None:
        self.calls += 1
        return self.result


async def test_objects_following_the_protocol_are_added_by_their_name(clock: FakeClock) -> None:
    probe = Probe("queue", CheckResult(status=DEGRADED, message="backlog"))
    assert isinstance(probe, HealthCheck)
    health = Health(clock=clock)
    health.add(probe, critical=False)
    assert "queue" in health and list(health) == ["queue"] and len(health) == 1
    r = await health.report()
    assert r.checks["queue"].message == "backlog" and probe.calls == 1


async def test_registries_compose_as_checks(clock: FakeClock) -> None:
    inner = Health(clock=clock, name="storage")
    inner.add("primary", sleeper(clock, 0.1, CheckResult(status=UNHEALTHY, message="gone")))
    inner.add("replica", sleeper(clock, 0.1))
    outer = Health(clock=clock)
    outer.add(inner)
    outer.add("api", sleeper(clock, 0.1))
    r = await drive(clock, outer.report, 1.0, step=0.1)
    assert r.status is UNHEALTHY
    assert r.checks["storage"].status is UNHEALTHY
    assert r.checks["storage"].message == "primary: unhealthy (gone)"
    assert r.checks["storage"].latency_ms == pytest.approx(100.0)
    assert inner.last is not None and inner.last.checks["replica"].status is HEALTHY


async def test_report_encodes_to_the_shape_of_the_health_endpoint(clock: FakeClock) -> None:
    health = Health(clock=clock)
    health.add("db", sleeper(clock, 0.0))
    health.add("disk", sleeper(clock, 0.0, CheckResult(status=DEGRADED, message="92% full")))
    data = msgspec.json.decode(msgspec.json.encode(await health.report()))
    assert data == {
        "status": "degraded",
        "checks": {
            "db": {"status": "healthy", "latency_ms": 0.0, "message": None},
            "disk": {"status": "degraded", "latency_ms": 0.0, "message": "92% full"},
        },
        "checked_at": clock.now(),
    }
    assert msgspec.json.decode(msgspec.json.encode(data), type=HealthReport).status is DEGRADED


async def test_max_age_reuses_a_fresh_report_and_reruns_a_stale_one(clock: FakeClock) -> None:
    probe = Probe("p", None)
    health = Health(clock=clock)
    health.add(probe)
    first = await health.report(max_age=10.0)
    await clock.advance(9.0)
    assert await health.report(max_age=10.0) is first
    assert probe.calls == 1
    assert await health.report() is not first, "without max_age every call runs the checks"
    assert probe.calls == 2
    await clock.advance(10.0)
    again = await health.report(max_age=10.0)
    assert again.checked_at == clock.now() and probe.calls == 3


async def test_cancelling_the_caller_propagates_and_is_not_a_check_timeout(
    clock: FakeClock,
) -> None:
    health = Health(clock=clock, timeout=5.0)
    health.add("a", sleeper(clock, 60.0))
    health.add("b", sleeper(clock, 60.0))

    async def caller() -> anyio.CancelScope:
        with clock.cancel_after(1.0) as scope:
            await health.report()
        return scope

    scope = await drive(clock, caller, 2.0)
    assert scope.cancelled_caught
    assert health.last is None, "no report was made of an interrupted run"


async def test_registration_errors(clock: FakeClock) -> None:
    health = Health(clock=clock)
    health.add("db", sleeper(clock, 0.0))
    with pytest.raises(ValueError, match="already registered"):
        health.add("db", sleeper(clock, 0.0))
    with pytest.raises(ValueError, match="timeout"):
        health.add("x", sleeper(clock, 0.0), timeout=0.0)
    with pytest.raises(ValueError, match="timeout"):
        Health(timeout=float("inf"))
    with pytest.raises(TypeError):
        health.add("y")  # type: ignore[call-overload]
    with pytest.raises(TypeError):
        health.add(Probe("z", None), sleeper(clock, 0.0))  # type: ignore[call-overload]
    health.remove("db")
    assert "db" not in health
    with pytest.raises(KeyError):
        health.remove("db")


async def test_report_problems_summarises_what_is_wrong(clock: FakeClock) -> None:
    health = Health(clock=clock)
    health.add("ok", sleeper(clock, 0.0))
    assert (await health.report()).problems() is None
    assert await health.check() is None
    health.add("disk", sleeper(clock, 0.0, CheckResult(status=DEGRADED)))
    health.add("db", sleeper(clock, 0.0, CheckResult(status=UNHEALTHY, message="down")))
    assert (await health.report()).problems() == "disk: degraded; db: unhealthy (down)"


async def test_the_guide_examples_run() -> None:
    """The code in docs/guides/health.md runs as written (on the system clock):
    its blocks, fragments too, in order, in one namespace."""
    guide = Path(__file__).parents[2] / "docs" / "guides" / "health.md"
    namespace: dict[str, Any] = {"__name__": "guide"}
    with anyio.fail_after(10):
        for block in re.findall(r"```python(?: fragment)?\n(.*?)```", guide.read_text(), re.DOTALL):
            main = namespace.get("main")
            exec(compile(block, str(guide), "exec"), namespace)
            if namespace.get("main") is not main:
                await namespace["main"]()
        await namespace["run"]()
    assert namespace["controller"].mode == "normal"
    assert namespace["health"].last.status == "degraded"
