"""Degradation modes: what each mode allows, switching from health with hysteresis,
overrides by hand, expiry on the clock, refusals and events."""

from __future__ import annotations

import msgspec
import pytest

import hyperqueue as hq
from hyperqueue._health import CheckResult, HealthReport, HealthStatus
from hyperqueue._modes import (
    Mode,
    ModeChanged,
    ModeController,
    ModeRefused,
    ModeState,
    Operation,
)
from hyperqueue.testing import FakeClock

pytestmark = pytest.mark.anyio

HEALTHY, DEGRADED, UNHEALTHY = HealthStatus.HEALTHY, HealthStatus.DEGRADED, HealthStatus.UNHEALTHY
S, R, SUB, X, A, OPT = (
    Operation.STATUS,
    Operation.READ,
    Operation.SUBMIT,
    Operation.EXECUTE,
    Operation.ADMIN,
    Operation.OPTIONAL,
)

ALLOWED = {
    Mode.NORMAL: {S, R, SUB, X, A, OPT},
    Mode.DEGRADED: {S, R, SUB, X, A},
    Mode.READ_ONLY: {S, R},
    Mode.MAINTENANCE: {S},
}


def recorder(bus: hq.EventBus) -> list[ModeChanged]:
    seen: list[ModeChanged] = []
    bus.subscribe(seen.append, ModeChanged)
    return seen


@pytest.mark.parametrize("mode", list(Mode))
async def test_each_mode_allows_its_documented_operations(clock: FakeClock, mode: Mode) -> None:
    controller = ModeController(clock=clock)
    controller.set(mode)
    assert controller.mode is mode
    for op in Operation:
        assert controller.allows(op) is (op in ALLOWED[mode]), op
        assert controller.allows(str(op)) is (op in ALLOWED[mode]), "plain strings work too"
        if op in ALLOWED[mode]:
            controller.check(op)
        else:
            with pytest.raises(ModeRefused):
                controller.check(op)


async def test_a_refusal_carries_mode_operation_reason_and_retry_hint(clock: FakeClock) -> None:
    controller = ModeController(clock=clock, retry_after=45.0)
    controller.set("read_only", reason="disk full")
    with pytest.raises(ModeRefused) as info:
        controller.check("submit")
    err = info.value
    assert isinstance(err, hq.HyperqueueError)
    assert err.mode is Mode.READ_ONLY and err.operation is Operation.SUBMIT
    assert err.retry_after == 45.0 and err.reason == "disk full"
    assert "submit refused" in str(err) and "read_only" in str(err) and "disk full" in str(err)


async def test_an_unknown_operation_is_an_error_not_a_refusal(clock: FakeClock) -> None:
    controller = ModeController(clock=clock)
    controller.set(Mode.MAINTENANCE)
    with pytest.raises(ValueError, match="unknown operation"):
        controller.allows("sumbit")
    with pytest.raises(ValueError, match="unknown operation"):
        controller.check("sumbit")


async def test_health_moves_the_mode_worse_at_once_and_better_after_three_reports(
    clock: FakeClock,
) -> None:
    controller = ModeController(clock=clock)
    assert controller.update(UNHEALTHY) is Mode.READ_ONLY, "worse at once"
    assert not controller.allows(SUB)
    assert controller.update(HEALTHY) is Mode.READ_ONLY
    assert controller.update(HEALTHY) is Mode.READ_ONLY
    assert controller.update(HEALTHY) is Mode.NORMAL, "better after 3 healthy reports in a row"
    assert controller.update(DEGRADED) is Mode.DEGRADED
    assert not controller.allows(OPT) and controller.allows(SUB)


async def test_a_flapping_check_does_not_flap_the_mode(clock: FakeClock) -> None:
    bus = hq.EventBus()
    seen = recorder(bus)
    controller = ModeController(clock=clock, events=bus)
    for _ in range(10):
        controller.update(UNHEALTHY)
        controller.update(HEALTHY)
        controller.update(HEALTHY)
    assert controller.mode is Mode.READ_ONLY
    assert [(e.previous, e.mode) for e in seen] == [(Mode.NORMAL, Mode.READ_ONLY)]
    controller.update(HEALTHY)
    assert controller.mode is Mode.NORMAL
    assert len(seen) == 2


async def test_recovery_goes_only_as_far_as_every_report_of_the_run_agrees(
    clock: FakeClock,
) -> None:
    controller = ModeController(clock=clock)
    controller.update(UNHEALTHY)
    for status in (HEALTHY, DEGRADED, HEALTHY):
        controller.update(status)
    assert controller.mode is Mode.DEGRADED, "one of the three asked for degraded only"
    for _ in range(2):
        controller.update(HEALTHY)
    assert controller.mode is Mode.DEGRADED
    controller.update(HEALTHY)
    assert controller.mode is Mode.NORMAL


async def test_a_report_asking_for_the_current_mode_breaks_a_run(clock: FakeClock) -> None:
    controller = ModeController(clock=clock, recover_after=2)
    controller.update(DEGRADED)
    controller.update(HEALTHY)
    controller.update(DEGRADED)  # same as now: the run of better reports starts again
    controller.update(HEALTHY)
    assert controller.mode is Mode.DEGRADED
    controller.update(HEALTHY)
    assert controller.mode is Mode.NORMAL


async def test_enter_after_needs_that_many_bad_reports_in_a_row(clock: FakeClock) -> None:
    controller = ModeController(clock=clock, enter_after=2)
    controller.update(UNHEALTHY)
    assert controller.mode is Mode.NORMAL
    controller.update(HEALTHY)
    controller.update(UNHEALTHY)
    assert controller.mode is Mode.NORMAL, "not in a row"
    controller.update(DEGRADED)
    assert controller.mode is Mode.DEGRADED, "two worse reports; the milder of the two wins"
    controller.update(UNHEALTHY)
    controller.update(UNHEALTHY)
    assert controller.mode is Mode.READ_ONLY


async def test_a_health_report_gives_the_reason(clock: FakeClock) -> None:
    bus = hq.EventBus()
    seen = recorder(bus)
    controller = ModeController(clock=clock, events=bus)
    report = HealthReport(
        status=UNHEALTHY,
        checks={
            "db": CheckResult(status=UNHEALTHY, message="timed out after 5 s"),
            "api": CheckResult(status=HEALTHY),
        },
        checked_at=clock.now(),
    )
    await clock.advance(3.0)
    controller.update(report)
    assert seen == [
        ModeChanged(
            at=clock.now(),
            mode=Mode.READ_ONLY,
            previous=Mode.NORMAL,
            reason="db: unhealthy (timed out after 5 s)",
            manual=False,
        )
    ]
    with pytest.raises(ModeRefused) as info:
        controller.check(SUB)
    assert info.value.reason == "db: unhealthy (timed out after 5 s)"
    assert info.value.retry_after == 30.0


async def test_set_by_hand_wins_over_health_until_cleared(clock: FakeClock) -> None:
    bus = hq.EventBus()
    seen = recorder(bus)
    controller = ModeController(clock=clock, events=bus)
    controller.set(Mode.MAINTENANCE, reason="upgrade")
    controller.update(UNHEALTHY)
    assert controller.mode is Mode.MAINTENANCE, "health is followed underneath only"
    assert controller.state() == ModeState(
        mode=Mode.MAINTENANCE,
        auto_mode=Mode.READ_ONLY,
        override=Mode.MAINTENANCE,
        reason="upgrade",
        until=None,
        since=clock.now(),
    )
    controller.clear()
    assert controller.mode is Mode.READ_ONLY, "back to what health asked for meanwhile"
    assert [(e.mode, e.manual) for e in seen] == [
        (Mode.MAINTENANCE, True),
        (Mode.READ_ONLY, True),
    ]
    controller.clear()  # nothing set: harmless
    assert len(seen) == 2


async def test_a_mode_set_until_a_time_expires_on_the_clock(clock: FakeClock) -> None:
    bus = hq.EventBus()
    seen = recorder(bus)
    controller = ModeController(clock=clock, events=bus)
    until = clock.now() + 600.0
    controller.set("maintenance", reason="migration", until=until)
    await clock.advance(200.0)
    with pytest.raises(ModeRefused) as info:
        controller.check(R)
    assert info.value.retry_after == pytest.approx(400.0), "the time left, not the default"
    await clock.advance(399.0)
    assert controller.mode is Mode.MAINTENANCE
    await clock.advance(1.0)
    assert controller.allows(SUB), "expired: back to normal"
    assert controller.state().override is None
    assert [(e.mode, e.until) for e in seen] == [(Mode.MAINTENANCE, until), (Mode.NORMAL, None)]
    assert seen[1].at == until


async def test_setting_the_current_mode_publishes_nothing(clock: FakeClock) -> None:
    bus = hq.EventBus()
    seen = recorder(bus)
    controller = ModeController(clock=clock, events=bus)
    controller.set(Mode.NORMAL, reason="pinned")
    controller.update(UNHEALTHY)
    assert controller.mode is Mode.NORMAL and seen == []


async def test_mode_changed_is_a_tagged_event(clock: FakeClock) -> None:
    event = ModeChanged(at=clock.now(), mode=Mode.DEGRADED, previous=Mode.NORMAL)
    data = msgspec.json.decode(msgspec.json.encode(event))
    assert data["type"] == "mode.changed" and data["mode"] == "degraded"
    assert isinstance(event, hq.Event)


async def test_invalid_options(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ModeController(recover_after=0)
    with pytest.raises(ValueError, match="retry_after"):
        ModeController(retry_after=-1.0)
    controller = ModeController(clock=clock)
    with pytest.raises(ValueError, match="until"):
        controller.set(Mode.MAINTENANCE, until=float("inf"))
    with pytest.raises(ValueError, match="offline"):
        controller.set("offline")


async def test_an_expired_override_gives_way_to_the_next_health_report(clock: FakeClock) -> None:
    controller = ModeController(clock=clock)
    controller.set(Mode.NORMAL, reason="ignore health for a minute", until=clock.now() + 60.0)
    controller.update(UNHEALTHY)
    assert controller.allows(SUB), "overridden"
    await clock.advance(60.0)
    assert controller.update(UNHEALTHY) is Mode.READ_ONLY
    assert controller.state().reason == "health is unhealthy"
