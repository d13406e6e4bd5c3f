"""Degradation modes: what the service still does when parts of it are unwell.

Every entry point classifies what it is about to do as an :class:`Operation` and asks
the :class:`ModeController` first (``controller.check(Operation.SUBMIT)``). The mode
decides, from this fixed table:

=============  ======  =====  ======  =======  =====  ========
mode           status  read   submit  execute  admin  optional
=============  ======  =====  ======  =======  =====  ========
normal         yes     yes    yes     yes      yes    yes
degraded       yes     yes    yes     yes      yes    no
read_only      yes     yes    no      no       no     no
maintenance    yes     no     no      no       no     no
=============  ======  =====  ======  =======  =====  ========

So *degraded* sheds only optional work (cache warming, archiving, reports, anything a
host marks optional) and keeps the job path whole; *read_only* changes nothing: no new
jobs, workers claim no new jobs (running ones finish), no admin changes; *maintenance*
answers health and status only. A refusal raises :class:`ModeRefused`, which an HTTP
layer turns into 503 with ``Retry-After``.

The mode follows health reports (:meth:`ModeController.update`), with hysteresis, and can
be set by hand (:meth:`ModeController.set`), which wins until cleared or until it expires.
Leaving a mode by hand is never refused: ``set`` and ``clear`` are not gated.
"""

from __future__ import annotations

import enum
import math

import msgspec

from ._clock import Clock, SystemClock
from ._errors import HyperqueueError
from ._events import Event, EventBus
from ._health import HealthReport, HealthStatus

__all__ = ["Mode", "ModeChanged", "ModeController", "ModeRefused", "ModeState", "Operation"]


class Mode(enum.StrEnum):
    """How much the service does; see the module docstring for the table."""

    NORMAL = "normal"
    DEGRADED = "degraded"
    READ_ONLY = "read_only"
    MAINTENANCE = "maintenance"


class Operation(enum.StrEnum):
    """The closed set of things a caller can ask for, as the modes filter them.

    ``status``: health, liveness, metrics and status reads. ``read``: reading jobs,
    queues, events. ``submit``: anything that creates work (enqueue, retry, replay,
    batches). ``execute``: workers claiming and running jobs. ``admin``: configuration,
    breaker resets, keys, pruning, cancelling. ``optional``: work that can be shed
    without losing anything (cache warming, archiving, reports).
    """

    STATUS = "status"
    READ = "read"
    SUBMIT = "submit"
    EXECUTE = "execute"
    ADMIN = "admin"
    OPTIONAL = "optional"


_ALLOWED: dict[Mode, frozenset[str]] = {
    Mode.NORMAL: frozenset(Operation),
    Mode.DEGRADED: frozenset(Operation) - {Operation.OPTIONAL},
    Mode.READ_ONLY: frozenset({Operation.STATUS, Operation.READ}),
    Mode.MAINTENANCE: frozenset({Operation.STATUS}),
}
_OPERATIONS = frozenset(Operation)

# the automatic modes, in order of severity
_AUTO = {
    HealthStatus.HEALTHY: Mode.NORMAL,
    HealthStatus.DEGRADED: Mode.DEGRADED,
    HealthStatus.UNHEALTHY: Mode.READ_ONLY,
}
_SEVERITY = {Mode.NORMAL: 0, Mode.DEGRADED: 1, Mode.READ_ONLY: 2}


class ModeRefused(HyperqueueError):
    """The current mode does not allow the operation; try again in ``retry_after`` s.

    ``retry_after`` is a hint: the time left of a mode set by hand with ``until``,
    otherwise the controller's ``retry_after`` option.
    """

    def __init__(
        self, mode: Mode, operation: Operation, *, retry_after: float, reason: str | None
    ) -> None:
        why = f" ({reason})" if reason else ""
        super().__init__(
            f"{operation} refused: the service is in {mode} mode{why}; retry in {retry_after:.0f} s"
        )
        self.mode = mode
        self.operation = operation
        self.retry_after = retry_after
        self.reason = reason


class ModeChanged(Event, frozen=True, kw_only=True, tag="mode.changed"):
    """The effective mode changed; ``manual`` when it was set or cleared by hand."""

    mode: Mode
    previous: Mode
    reason: str | None = None
    manual: bool = False
    until: float | None = None


class ModeState(msgspec.Struct, frozen=True, kw_only=True):
    """Where the controller stands: the effective mode and what it is made of.

    ``auto_mode`` is what health asks for; ``override`` the mode set by hand, if any,
    which wins until ``until`` (seconds since the epoch; None: until cleared).
    ``since`` is when the effective mode last changed.
    """

    mode: Mode
    auto_mode: Mode
    override: Mode | None
    reason: str | None
    until: float | None
    since: float


class ModeController:
    """Keeps the current mode and answers whether an operation is allowed.

    Health reports move the automatic mode (unhealthy -> read_only, degraded ->
    degraded, healthy -> normal) with hysteresis: it gets worse after ``enter_after``
    reports in a row that ask for a worse mode (default 1: at once) and better after
    ``recover_after`` reports in a row that ask for a better one (default 3), and it
    moves only as far as every report of that run agrees. So a flapping check keeps
    the worse mode instead of flapping it. ``retry_after`` (default 30 s) is the hint
    a refusal carries when no end time is known. Changes of the effective mode are
    published as :class:`ModeChanged` on ``events``.
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        events: EventBus | None = None,
        enter_after: int = 1,
        recover_after: int = 3,
        retry_after: float = 30.0,
    ) -> None:
        if enter_after < 1 or recover_after < 1:
            raise ValueError("enter_after and recover_after must be at least 1")
        if not (retry_after >= 0 and math.isfinite(retry_after)):
            raise ValueError("retry_after must be a finite number of seconds >= 0")
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.events = events
        self.enter_after = enter_after
        self.recover_after = recover_after
        self.retry_after = retry_after
        self._mode = Mode.NORMAL
        self._allowed = _ALLOWED[Mode.NORMAL]
        self._auto = Mode.NORMAL
        self._auto_reason: str | None = None
        self._override: Mode | None = None
        self._override_reason: str | None = None
        self._until: float | None = None
        self._since = self.clock.now()
        # the run of reports asking for another mode than the automatic one:
        # direction (+1 worse, -1 better), length, and the mode closest to the current
        self._streak_dir = 0
        self._streak_len = 0
        self._streak_mode = Mode.NORMAL

    # -- asking -------------------------------------------------------------------------

    @property
    def mode(self) -> Mode:
        """The effective mode: the one set by hand while it lasts, else the automatic."""
        if self._until is not None:
            self._expire()
        return self._mode

    def allows(self, operation: Operation | str) -> bool:
        """Whether ``operation`` may run now (one set lookup when nothing expires)."""
        if self._until is not None and self.clock.now() >= self._until:
            self._expire()
        if operation in self._allowed:
            return True
        if operation not in _OPERATIONS:
            raise ValueError(f"unknown operation {operation!r}; one of {sorted(_OPERATIONS)}")
        return False

    def check(self, operation: Operation | str) -> None:
        """Return if ``operation`` may run now, else raise :class:`ModeRefused`."""
        if (self._until is None and operation in self._allowed) or self.allows(operation):
            return
        mode = self._mode
        if self._until is not None:
            retry_after = max(self._until - self.clock.now(), 0.0)
        else:
            retry_after = self.retry_after
        raise ModeRefused(
            mode, Operation(operation), retry_after=retry_after, reason=self._reason()
        )

    def state(self) -> ModeState:
        """A snapshot for status pages and dashboards."""
        mode = self.mode
        return ModeState(
            mode=mode,
            auto_mode=self._auto,
            override=self._override,
            reason=self._reason(),
            until=self._until,
            since=self._since,
        )

    # -- changing -----------------------------------------------------------------------

    def update(self, report: HealthReport | HealthStatus | str) -> Mode:
        """Feed one health report (or just its status); returns the effective mode."""
        if isinstance(report, HealthReport):
            status, reason = report.status, report.problems()
        else:
            status = HealthStatus(report)
            reason = None if status is HealthStatus.HEALTHY else f"health is {status}"
        if self._until is not None:
            self._expire()
        target = _AUTO[status]
        current = self._auto
        if target is current:
            self._streak_dir = self._streak_len = 0
            if target is not Mode.NORMAL:
                self._auto_reason = reason  # same mode, fresher reason
            return self._mode
        direction = 1 if _SEVERITY[target] > _SEVERITY[current] else -1
        if direction != self._streak_dir:
            self._streak_dir, self._streak_len, self._streak_mode = direction, 0, target
        self._streak_len += 1
        # move only as far as every report of the run agrees: the mode closest to now
        if direction * (_SEVERITY[self._streak_mode] - _SEVERITY[target]) > 0:
            self._streak_mode = target
        if self._streak_len >= (self.enter_after if direction > 0 else self.recover_after):
            self._auto = self._streak_mode
            self._auto_reason = reason if self._auto is not Mode.NORMAL else None
            self._streak_dir = self._streak_len = 0
            if self._override is None:
                self._apply(self._auto, self._auto_reason, manual=False)
        return self._mode

    def set(
        self, mode: Mode | str, *, reason: str | None = None, until: float | None = None
    ) -> None:
        """Force ``mode`` until :meth:`clear` or until the clock reaches ``until``
        (seconds since the epoch); health reports are still followed underneath."""
        mode = Mode(mode)
        if until is not None and not math.isfinite(until):
            raise ValueError("until must be a finite time (seconds since the epoch) or None")
        self._override, self._override_reason, self._until = mode, reason, until
        self._apply(mode, reason, manual=True, until=until)

    def clear(self) -> None:
        """Drop the mode set by hand: back to what health asks for."""
        if self._override is None:
            return
        self._override = self._override_reason = self._until = None
        self._apply(self._auto, self._auto_reason or "set by hand: cleared", manual=True)

    # -- inside -------------------------------------------------------------------------

    def _reason(self) -> str | None:
        return self._override_reason if self._override is not None else self._auto_reason

    def _expire(self) -> None:
        assert self._until is not None
        if self.clock.now() < self._until:
            return
        self._override = self._override_reason = self._until = None
        self._apply(self._auto, self._auto_reason or "set by hand: expired", manual=True)

    def _apply(
        self, mode: Mode, reason: str | None, *, manual: bool, until: float | None = None
    ) -> None:
        previous = self._mode
        if mode is previous:
            return
        self._mode = mode
        self._allowed = _ALLOWED[mode]
        now = self._since = self.clock.now()
        events = self.events
        if events is not None and events.active:
            events.publish(
                ModeChanged(
                    at=now, mode=mode, previous=previous, reason=reason, manual=manual, until=until
                )
            )

    def __repr__(self) -> str:
        return f"ModeController(mode={self._mode}, auto={self._auto}, override={self._override})"
