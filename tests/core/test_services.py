"""Supervised services: schedule, jitter, triggers, restarts with backoff, health, stop."""

from __future__ import annotations

import re
import statistics
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

import hyperqueue as hq
from hyperqueue._health import CheckResult, Health, HealthCheck, HealthStatus
from hyperqueue._services import Service, ServiceStats, Supervisor
from hyperqueue.testing import FakeClock

pytestmark = pytest.mark.anyio

HEALTHY, DEGRADED, UNHEALTHY = HealthStatus.HEALTHY, HealthStatus.DEGRADED, HealthStatus.UNHEALTHY
NO_JITTER = hq.Retry(backoff=1.0, multiplier=2.0, max_backoff=60.0, jitter=0.0)


@asynccontextmanager
async def guard(seconds: float = 10.0) -> AsyncIterator[None]:
    """A real-time safety net so a broken test fails instead of hanging."""
    with anyio.fail_after(seconds):
        yield


class Recorder:
    """A service function that records when it ran; fails while ``failing`` > 0."""

    def __init__(self, clock: FakeClock, *, takes: float = 0.0, failing: int = 0) -> None:
        self.clock = clock
        self.takes = takes
        self.failing = failing
        self.starts: list[float] = []
        self.ends: list[float] = []

    async def __call__(self) -> None:
        self.starts.append(self.clock.now())
        if self.takes:
            await self.clock.sleep(self.takes)
        self.ends.append(self.clock.now())
        if self.failing:
            self.failing -= 1
            raise ConnectionError("downstream refused")

    def offsets(self, t0: float) -> list[float]:
        return [round(t - t0, 6) for t in self.starts]


async def status(service: HealthCheck) -> tuple[HealthStatus, str | None]:
    result = await service.check()
    return (HEALTHY, None) if result is None else (result.status, result.message)


async def test_runs_at_start_then_every_interval(clock: FakeClock) -> None:
    fn = Recorder(clock)
    t0 = clock.now()
    async with guard(), Supervisor(clock=clock) as sup:
        sup.add(Service("tick", fn, interval=10.0, jitter=0.0))
        await clock.advance(35.0)
        assert fn.offsets(t0) == [0.0, 10.0, 20.0, 30.0]
        stats = sup["tick"].stats()
        assert stats.runs == 4 and stats.failures == 0 and stats.restarts == 0
        assert stats.last_run_at == t0 + 30.0 and stats.next_run_at == t0 + 40.0


async def test_the_interval_counts_from_the_end_of_a_run(clock: FakeClock) -> None:
    fn = Recorder(clock, takes=3.0)
    t0 = clock.now()
    async with guard(), Supervisor(clock=clock) as sup:
        sup.add(Service("slow", fn, interval=10.0, jitter=0.0, run_at_start=False))
        await clock.advance(38.0)
        assert fn.offsets(t0) == [10.0, 23.0, 36.0], "runs never overlap or pile up"
        stats = sup["slow"].stats()
        assert stats.running and stats.runs == 2 and stats.last_duration == pytest.approx(3.0)
        await clock.advance(1.0)  # let the run end: leaving would wait for it


async def test_jitter_spreads_runs_within_its_bound(clock: FakeClock) -> None:
    fn = Recorder(clock)
    async with guard(30), Supervisor(clock=clock) as sup:
        sup.add(Service("jittery", fn, interval=10.0, jitter=2.0))
        await clock.advance(12.0 * 40)
    gaps = [b - a for a, b in zip(fn.starts, fn.starts[1:], strict=False)]
    assert len(gaps) >= 39
    assert all(10.0 <= g <= 12.0 + 1e-9 for g in gaps), gaps
    assert len({round(g, 6) for g in gaps}) > 10, "the waits are random, not fixed"
    assert 10.5 < statistics.mean(gaps) < 11.5


async def test_default_jitter_is_a_tenth_of_the_interval(clock: FakeClock) -> None:
    fn = Recorder(clock)
    service = Service("d", fn, interval=20.0)
    assert service.jitter == 2.0
    async with guard(), Supervisor(clock=clock) as sup:
        sup.add(service)
        await clock.advance(22.0 * 10)
    gaps = [b - a for a, b in zip(fn.starts, fn.starts[1:], strict=False)]
    assert len(gaps) >= 9 and all(20.0 <= g <= 22.0 + 1e-9 for g in gaps), gaps


async def test_trigger_runs_at_once_and_restarts_the_interval(clock: FakeClock) -> None:
    fn = Recorder(clock)
    t0 = clock.now()
    async with guard(), Supervisor(clock=clock) as sup:
        service = sup.add(Service("sync", fn, interval=60.0, jitter=0.0))
        await clock.advance(25.0)
        assert fn.offsets(t0) == [0.0]
        service.trigger()
        await anyio.wait_all_tasks_blocked()
        assert fn.offsets(t0) == [0.0, 25.0], "ran without time passing"
        await clock.advance(59.0)
        assert len(fn.starts) == 2
        await clock.advance(1.0)
        assert fn.offsets(t0) == [0.0, 25.0, 85.0]


async def test_triggers_during_a_run_coalesce_into_one_more_run(clock: FakeClock) -> None:
    fn = Recorder(clock, takes=5.0)
    t0 = clock.now()
    async with guard(), Supervisor(clock=clock) as sup:
        service = sup.add(Service("sync", fn, interval=60.0, jitter=0.0))
        await clock.advance(1.0)
        assert service.running
        for _ in range(3):
            service.trigger()
        await clock.advance(20.0)
        assert fn.offsets(t0) == [0.0, 5.0], "one extra run, right after the first"


async def test_a_trigger_before_the_first_run_is_kept(clock: FakeClock) -> None:
    fn = Recorder(clock)
    service = Service("lazy", fn, interval=60.0, jitter=0.0, run_at_start=False)
    service.trigger()
    async with guard(), Supervisor(clock=clock) as sup:
        sup.add(service)
        await anyio.wait_all_tasks_blocked()
        assert fn.starts == [clock.now()]


async def test_a_crash_restarts_with_exponential_backoff(clock: FakeClock) -> None:
    fn = Recorder(clock, failing=3)
    t0 = clock.now()
    async with guard(), Supervisor(clock=clock) as sup:
        service = sup.add(
            Service("flaky", fn, interval=100.0, jitter=0.0, retry=NO_JITTER, unhealthy_after=5)
        )
        await clock.advance(150.0)
        # fails at 0, waits 1 s; fails at 1, waits 2 s; fails at 3, waits 4 s; ok at 7
        assert fn.offsets(t0) == [0.0, 1.0, 3.0, 7.0, 107.0]
        stats = service.stats()
        assert stats == ServiceStats(
            name="flaky",
            status=HEALTHY,
            running=False,
            runs=5,
            failures=3,
            consecutive_failures=0,
            restarts=3,
            last_run_at=t0 + 107.0,
            last_success_at=t0 + 107.0,
            last_duration=0.0,
            last_error="ConnectionError: downstream refused",
            next_run_at=t0 + 207.0,
        )


async def test_after_the_failure_bound_it_keeps_trying_at_the_max_backoff(
    clock: FakeClock,
) -> None:
    fn = Recorder(clock, failing=10**6)
    retry = hq.Retry(backoff=1.0, multiplier=2.0, max_backoff=10.0, jitter=0.0)
    t0 = clock.now()
    async with guard(), Supervisor(clock=clock) as sup:
        service = sup.add(
            Service("down", fn, interval=5.0, jitter=0.0, retry=retry, unhealthy_after=3)
        )
        await clock.advance(2.0)
        assert await status(service) == (
            DEGRADED,
            "last run failed: ConnectionError: downstream refused",
        )
        await clock.advance(50.0)
        assert fn.offsets(t0) == [0.0, 1.0, 3.0, 13.0, 23.0, 33.0, 43.0]
        st, message = await status(service)
        assert st is UNHEALTHY
        assert message == (
            "failed 7 times in a row; last error: ConnectionError: downstream refused"
        )
        assert service.stats().restarts == 6


async def test_a_trigger_does_not_cut_a_backoff_short(clock: FakeClock) -> None:
    fn = Recorder(clock, failing=1)
    t0 = clock.now()
    async with guard(), Supervisor(clock=clock) as sup:
        service = sup.add(Service("s", fn, interval=100.0, jitter=0.0, retry=NO_JITTER))
        await clock.advance(0.5)
        service.trigger()
        service.trigger()
        await clock.advance(0.4)
        assert fn.offsets(t0) == [0.0]
        await clock.advance(0.1)
        assert fn.offsets(t0) == [0.0, 1.0], "the run that ends the backoff serves the triggers"
        await clock.advance(50.0)
        assert len(fn.starts) == 2


async def test_a_run_past_its_timeout_is_cancelled_and_counted_as_a_failure(
    clock: FakeClock,
) -> None:
    fn = Recorder(clock, takes=30.0)
    async with guard(), Supervisor(clock=clock) as sup:
        service = sup.add(
            Service("hang", fn, interval=60.0, jitter=0.0, timeout=10.0, retry=NO_JITTER)
        )
        await clock.advance(10.0)
        stats = service.stats()
        assert fn.ends == [], "the run was cancelled"
        assert stats.failures == 1 and stats.last_error == "timed out after 10 s"
        assert stats.last_duration == pytest.approx(10.0) and stats.status is DEGRADED


async def test_health_follows_the_service(clock: FakeClock) -> None:
    fn = Recorder(clock)
    retry = hq.Retry(backoff=1.0, multiplier=2.0, max_backoff=2.0, jitter=0.0)
    service = Service("svc", fn, interval=10.0, jitter=0.0, retry=retry, unhealthy_after=2)
    assert await status(service) == (UNHEALTHY, "not started")
    async with guard(), Supervisor(clock=clock) as sup:
        sup.add(service)
        await anyio.wait_all_tasks_blocked()
        assert await status(service) == (HEALTHY, None)
        fn.failing = 2
        await clock.advance(10.0)
        assert (await status(service))[0] is DEGRADED
        await clock.advance(1.0)
        assert (await status(service))[0] is UNHEALTHY
        fn.failing = 0
        await clock.advance(2.0)
        assert await status(service) == (HEALTHY, None), "one success heals it"
    assert await status(service) == (UNHEALTHY, "stopped")


async def test_a_hung_run_makes_the_service_unhealthy_after_stale_after_periods(
    clock: FakeClock,
) -> None:
    started = anyio.Event()

    async def hang() -> None:
        started.set()
        await anyio.sleep_forever()

    async with guard(), Supervisor(clock=clock, grace=0.0) as sup:
        service = sup.add(Service("hung", hang, interval=10.0, jitter=2.0, stale_after=3.0))
        await started.wait()
        await clock.advance(36.0)
        assert await status(service) == (HEALTHY, None), "3 periods of 12 s: not yet"
        await clock.advance(0.5)
        assert await status(service) == (
            UNHEALTHY,
            "no successful run in the 36.5 s since it started (every 10 s)",
        )


async def test_leaving_waits_for_a_run_in_progress_within_the_grace_period(
    clock: FakeClock,
) -> None:
    fn = Recorder(clock, takes=3.0)
    left_at: list[float] = []
    t0 = clock.now()

    async def body() -> None:
        async with Supervisor(clock=clock, grace=5.0) as sup:
            sup.add(Service("s", fn, interval=60.0))
            await clock.sleep(1.0)
        left_at.append(clock.now())
        assert sup["s"].stats().runs == 1

    async with guard(), anyio.create_task_group() as tg:
        tg.start_soon(body)
        await clock.advance(30.0)
    assert fn.ends == [t0 + 3.0], "the run finished"
    assert left_at == [t0 + 3.0], "left as soon as the run ended, not after the whole grace"


async def test_a_run_longer_than_the_grace_period_is_cancelled(clock: FakeClock) -> None:
    cancelled: list[float] = []
    left_at: list[float] = []
    t0 = clock.now()

    async def long_run() -> None:
        try:
            await clock.sleep(100.0)
        except anyio.get_cancelled_exc_class():
            cancelled.append(clock.now())
            raise

    async def body() -> None:
        async with Supervisor(clock=clock, grace=5.0) as sup:
            service = sup.add(Service("s", long_run, interval=60.0))
            await clock.sleep(1.0)
        left_at.append(clock.now())
        stats = service.stats()
        assert stats.runs == 0 and stats.failures == 0, "a stop is not a failure"

    async with guard(), anyio.create_task_group() as tg:
        tg.start_soon(body)
        await clock.advance(30.0)
    assert cancelled == [t0 + 6.0] and left_at == [t0 + 6.0]


async def test_an_error_leaving_the_block_cancels_runs_at_once_and_propagates(
    clock: FakeClock,
) -> None:
    cancelled = anyio.Event()
    started = anyio.Event()

    async def long_run() -> None:
        started.set()
        try:
            await clock.sleep(100.0)
        finally:
            cancelled.set()

    async def body() -> None:
        async with guard(), Supervisor(clock=clock, grace=5.0) as sup:
            sup.add(Service("s", long_run, interval=60.0))
            await started.wait()
            raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):  # as it was raised, not in a group
        await body()
    assert cancelled.is_set()


async def test_an_outer_cancellation_propagates(clock: FakeClock) -> None:
    fn = Recorder(clock, takes=100.0)
    async with guard():
        with anyio.CancelScope() as outer:
            async with Supervisor(clock=clock) as sup:
                sup.add(Service("s", fn, interval=60.0))
                await anyio.wait_all_tasks_blocked()
                outer.cancel()
                await anyio.sleep_forever()
    assert outer.cancelled_caught and fn.ends == []


async def test_a_failing_service_is_logged(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with guard(), Supervisor(clock=clock) as sup:
        sup.add(Service("loud", Recorder(clock, failing=1), interval=60.0))
        await anyio.wait_all_tasks_blocked()
    assert any(
        r.name == "hyperqueue.services" and "loud" in r.getMessage() and r.exc_info
        for r in caplog.records
    )


async def test_services_plug_into_a_health_registry(clock: FakeClock) -> None:
    health = Health(clock=clock)
    async with guard(), Supervisor(clock=clock) as sup:
        good = sup.add(Service("good", Recorder(clock), interval=10.0))
        bad = sup.add(Service("bad", Recorder(clock, failing=1), interval=10.0, retry=NO_JITTER))
        health.add(good)
        health.add(bad, critical=False)
        await anyio.wait_all_tasks_blocked()
        report = await health.report()
        assert report.status is DEGRADED
        assert report.checks["good"] == CheckResult(status=HEALTHY)
        assert (
            report.checks["bad"].message == "last run failed: ConnectionError: downstream refused"
        )
        assert [s.name for s in sup.stats()] == ["good", "bad"]
        assert list(sup.services) == ["good", "bad"]


async def test_supervisor_misuse_is_refused(clock: FakeClock) -> None:
    fn = Recorder(clock)
    sup = Supervisor(clock=clock)
    with pytest.raises(RuntimeError, match="inside"):
        sup.add(Service("a", fn, interval=1.0))
    async with guard(), sup:
        service = sup.add(Service("a", fn, interval=1.0))
        with pytest.raises(ValueError, match="already supervised"):
            sup.add(Service("a", fn, interval=1.0))
        async with Supervisor(clock=clock) as other:
            with pytest.raises(RuntimeError, match="already supervised"):
                other.add(service)
    with pytest.raises(RuntimeError):
        await sup.__aenter__()
    with pytest.raises(RuntimeError, match="inside"):
        sup.add(Service("b", fn, interval=1.0))


@pytest.mark.parametrize(
    ("options", "names"),
    [
        ({"interval": 0.0}, "interval"),
        ({"interval": float("nan")}, "interval"),
        ({"interval": 1.0, "jitter": -1.0}, "jitter"),
        ({"interval": 1.0, "timeout": 0.0}, "timeout"),
        ({"interval": 1.0, "unhealthy_after": 0}, "unhealthy_after"),
        ({"interval": 1.0, "stale_after": 0.0}, "stale_after"),
    ],
)
async def test_invalid_options(options: dict[str, float], names: str) -> None:
    async def fn() -> None:
        return None

    with pytest.raises(ValueError, match=names):
        Service("x", fn, **options)  # type: ignore[arg-type]


async def test_supervisor_rejects_a_bad_grace() -> None:
    with pytest.raises(ValueError, match="grace"):
        Supervisor(grace=-1.0)


async def test_the_guide_examples_run() -> None:
    """The code in docs/guides/services.md runs as written (on the system clock):
    its blocks, fragments too, in order, in one namespace."""
    guide = Path(__file__).parents[2] / "docs" / "guides" / "services.md"
    namespace: dict[str, Any] = {"__name__": "guide"}
    with anyio.fail_after(10):
        for block in re.findall(r"```python(?: fragment)?\n(.*?)```", guide.read_text(), re.DOTALL):
            exec(compile(block, str(guide), "exec"), namespace)
        await namespace["main"]()
        await namespace["with_health"]()
    assert namespace["runs"] == ["prune", "prune", "prune"]
    assert namespace["health"].last.checks["prune"].status == "healthy"
