"""Periodic jobs: ``@queue.periodic(cron=... | every=...)``, fired by every worker pool.

A periodic job is a task plus a schedule of **slots**, the times it is due:

- ``every=s``: the multiples of ``s`` seconds since the epoch (``every=60.0`` fires on
  each minute), so every process computes the same slots without talking to the others.
- ``cron="m h dom mon dow"``: five-field cron (through the optional ``cronsim``
  library), in ``timezone`` (an IANA name, UTC by default) with its daylight saving
  time changes: ``0 9 * * *`` in ``Europe/Paris`` is at 09:00 Paris time, summer and
  winter.

Who fires: each worker pool runs a scheduler for the periodic jobs whose task it serves
(the task is registered on its queue, and the pool serves the job's queue). It saves
each definition in the storage (:meth:`Storage.save_schedule`), then sleeps on the
queue's clock until the next slot, re-reads the stored state and fires what is due.

The storage keeps ``handled_until``: every slot up to it is handled (fired, reported
missed, or skipped while paused). When a scheduler wakes at ``now``:

- the **due** slots are the slots ``s`` with ``handled_until < s <= now``; a schedule
  saved for the first time is marked handled up to the moment it was saved, so only
  slots after that count;
- the newest due slot is **on time** if ``now - s <= grace``, where ``grace`` is
  ``min(60 s, period)`` (the period is ``every``, or for cron the gap between the slot
  and the one after it); every other due slot is **missed**;
- one call, :meth:`Storage.fire_schedule` with the newest due slot, stores its job (if
  on time), adds the missed slots to the schedule's ``missed`` count and moves
  ``handled_until`` to the slot. With ``catch_up=True`` and missed slots, a first call
  handles up to the newest missed slot with one catch-up job (all missed slots together
  get one job), then a second call fires the on-time slot, if there is one.

Missed slots are counted exactly for ``every=``, and up to 10,000 for cron. The storage
accepts a call only if the schedule is not paused and not handled up to that slot yet,
in the same transaction that stores the job, so of all the processes that fire one slot
exactly one stores its job (whose key, ``periodic:<name>:<slot>``, is also unique to the
slot), and exactly one reports the missed slots: that one publishes
:class:`ScheduleMissed` on its queue's bus and logs a warning on the
``hyperqueue.periodic`` logger. No leader is elected; processes may come and go.

A paused schedule fires nothing; resuming it marks it handled up to that moment, so the
slots skipped while paused are not reported missed.
"""

from __future__ import annotations

import logging
import math
import zoneinfo
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING, Any, NamedTuple, ParamSpec, Protocol, TypeVar

import msgspec

from ._errors import ArgumentError, OptionError, ScheduleNotFound
from ._events import JobEnqueued, ScheduleMissed
from ._models import Job, Priority, Schedule
from ._task import JobOptions, Task

if TYPE_CHECKING:
    from ._queue import Queue
    from ._retry import Retry

# Nothing here is public: the API is Queue.periodic, Queue.schedules,
# Queue.pause_schedule and Queue.resume_schedule, and the records Schedule and
# ScheduleMissed.
__all__: list[str] = []

P = ParamSpec("P")
R = TypeVar("R")

GRACE = 60.0
"""Most seconds a slot may be fired late (less for periods shorter than a minute)."""
MAX_COUNTED = 10_000
"""Most missed cron slots counted one by one (``every=`` slots are counted exactly)."""
_MAX_NAME = 200  # the slot's key, periodic:<name>:<slot>, must fit in 256 characters
_CRON_EXTRA = "needs cronsim: pip install 'hyperqueue-jobs[cron]'"

_log = logging.getLogger("hyperqueue.periodic")


class Due(NamedTuple):
    """The due slots of one schedule at one moment."""

    first: float
    """The oldest due slot."""
    newest: float
    before: float | None
    """The due slot just before ``newest`` (None when only one is due)."""
    total: int
    """How many slots are due (at most :data:`MAX_COUNTED` for cron)."""
    grace: float
    """How late ``newest`` may be fired: min(60 s, its period)."""


class Timing(Protocol):
    """Where the slots of a schedule fall."""

    def next_after(self, t: float) -> float | None:
        """The first slot strictly after ``t`` (None: there is none)."""
        ...

    def due(self, after: float, now: float) -> Due | None:
        """The slots ``s`` with ``after < s <= now``, or None when there is none."""
        ...


class Every:
    """Slots at the multiples of ``every`` seconds since the epoch."""

    __slots__ = ("every",)

    def __init__(self, every: float) -> None:
        self.every = every

    def _index(self, t: float) -> int:
        """The largest ``k`` with ``k * every <= t`` (exact despite float rounding)."""
        every = self.every
        k = math.floor(t / every)
        while k * every > t:
            k -= 1
        while (k + 1) * every <= t:
            k += 1
        return k

    def next_after(self, t: float) -> float:
        return (self._index(t) + 1) * self.every

    def due(self, after: float, now: float) -> Due | None:
        every = self.every
        first, last = self._index(after) + 1, self._index(now)
        if last < first:
            return None
        return Due(
            first=first * every,
            newest=last * every,
            before=(last - 1) * every if last > first else None,
            total=last - first + 1,
            grace=min(GRACE, every),
        )


class Cron:
    """Slots of a five-field cron expression in a time zone (computed by ``cronsim``)."""

    __slots__ = ("_cronsim", "expression", "zone")

    def __init__(self, expression: str, zone: tzinfo) -> None:
        try:
            from cronsim import CronSim, CronSimError
        except ImportError:
            raise OptionError("cron", _CRON_EXTRA) from None
        if not isinstance(expression, str):
            raise OptionError("cron", f"expected a cron expression (str), got {expression!r}")
        fields = len(expression.split())
        if fields != 5:
            raise OptionError(
                "cron",
                f"{expression!r} has {fields} fields; a cron expression has five: "
                "minute hour day-of-month month day-of-week",
            )
        try:
            CronSim(expression, datetime(2000, 1, 1, tzinfo=zone))
        except CronSimError as exc:
            raise OptionError(
                "cron", f"{expression!r} is not a valid cron expression: {exc}"
            ) from None
        self._cronsim = CronSim
        self.expression = expression
        self.zone = zone

    def _after(self, t: float) -> Iterator[float]:
        """Slots strictly after ``t``, in order (each later than the one before)."""
        last = t
        for when in self._cronsim(self.expression, datetime.fromtimestamp(t, self.zone)):
            slot = when.timestamp()
            if slot > last:  # guards against a repeated local time across a DST change
                last = slot
                yield slot

    def _latest(self, t: float) -> float | None:
        """The last slot at or before ``t``."""
        start = datetime.fromtimestamp(math.floor(t) + 1, self.zone)
        for when in self._cronsim(self.expression, start, reverse=True):
            slot = when.timestamp()
            if slot <= t:
                return slot
        return None  # pragma: no cover - cronsim gives up after 50 years

    def next_after(self, t: float) -> float | None:
        return next(self._after(t), None)

    def due(self, after: float, now: float) -> Due | None:
        first: float | None = None
        newest: float | None = None
        before: float | None = None
        count = 0
        for slot in self._after(after):
            if slot > now:
                break
            if first is None:
                first = slot
            before, newest = newest, slot
            count += 1
            if count == MAX_COUNTED:  # stop counting: find the newest from the end
                latest = self._latest(now)
                if latest is not None and latest > slot:
                    newest = latest
                    previous = self._latest(latest - 1)
                    before = previous if previous is not None and previous > first else None
                break
        if first is None or newest is None:
            return None
        following = self.next_after(newest)
        period = GRACE if following is None else following - newest
        return Due(first=first, newest=newest, before=before, total=count, grace=min(GRACE, period))


def _zone(timezone: str | None) -> tzinfo:
    if timezone is None:
        return UTC
    if not isinstance(timezone, str) or not timezone:
        raise OptionError("timezone", f"expected a time zone name, got {timezone!r}")
    try:
        return zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise OptionError(
            "timezone",
            f"unknown time zone {timezone!r}: give an IANA name such as 'Europe/Paris' "
            "(where the system has no time zone database, install the cron extra)",
        ) from None


def timing(cron: str | None, every: float | None, timezone: str | None) -> Timing:
    """The slots of a definition; raises :class:`OptionError` for one that cannot work."""
    if cron is not None and every is not None:
        raise OptionError("cron", "give cron= or every=, not both")
    if every is not None:
        if isinstance(every, bool) or not isinstance(every, int | float):
            raise OptionError("every", f"expected seconds as a number, got {every!r}")
        if not math.isfinite(every) or every <= 0:
            raise OptionError("every", "must be a finite number of seconds > 0")
        if timezone is not None:
            raise OptionError("timezone", "applies to cron= only (every= counts from the epoch)")
        return Every(float(every))
    if cron is None:
        raise OptionError("every", "a periodic job needs cron='...' or every=seconds")
    return Cron(cron, _zone(timezone))


def _stored_timing(schedule: Schedule) -> Timing | None:
    """The slots of a stored definition, or None when this process cannot compute them
    (a cron schedule saved by a process that has cronsim, read by one that has not)."""
    try:
        return timing(schedule.cron, schedule.every, schedule.timezone)
    except OptionError:
        return None


class Periodic:
    """One periodic job as its process defined it: the task and where its slots fall."""

    __slots__ = ("catch_up", "cron", "every", "name", "task", "timezone", "timing")

    def __init__(
        self,
        task: Task[Any, Any],
        *,
        cron: str | None,
        every: float | None,
        timezone: str | None,
        catch_up: bool,
        timing: Timing,
    ) -> None:
        self.name = task.name
        self.task = task
        self.cron = cron
        self.every = every
        self.timezone = timezone
        self.catch_up = catch_up
        self.timing = timing

    @property
    def queue(self) -> str:
        return self.task.queue

    def schedule(self) -> Schedule:
        """The definition as the storage keeps it (with no state yet)."""
        return Schedule(
            name=self.name,
            task=self.task.name,
            queue=self.task.queue,
            cron=self.cron,
            every=self.every,
            timezone=self.timezone,
            catch_up=self.catch_up,
        )

    def __repr__(self) -> str:
        when = f"cron={self.cron!r}" if self.cron is not None else f"every={self.every!r}"
        return f"<Periodic {self.name!r} {when}>"


class Periodics(dict[str, Periodic]):
    """The periodic jobs defined on one queue, by name (:attr:`Queue.periodics`)."""

    def __init__(self, queue: Queue) -> None:
        super().__init__()
        self._queue = queue

    # -- definitions -------------------------------------------------------------------

    def decorator(
        self,
        *,
        cron: str | None,
        every: float | None,
        timezone: str | None,
        catch_up: bool,
        name: str | None,
        queue: str,
        priority: Priority | str,
        timeout: float | None,
        retry: Retry | None,
    ) -> Callable[[Callable[P, Awaitable[R]]], Task[P, R]]:
        """What :meth:`Queue.periodic` returns; every option is checked before any
        function is registered."""
        slots = timing(cron, every, timezone)
        if not isinstance(catch_up, bool):
            raise OptionError("catch_up", "must be True or False")
        if name is not None and (not isinstance(name, str) or not 0 < len(name) <= _MAX_NAME):
            raise OptionError("name", f"must be a string of 1 to {_MAX_NAME} characters")
        owner = self._queue

        def register(fn: Callable[P, Awaitable[R]]) -> Task[P, R]:
            task_name = name or str(getattr(fn, "__name__", ""))
            if len(task_name) > _MAX_NAME:
                raise OptionError("name", f"must be a string of 1 to {_MAX_NAME} characters")
            task = owner.task(
                name=name, queue=queue, priority=priority, timeout=timeout, retry=retry
            )(fn)
            try:
                task.signature.check((), {})
            except ArgumentError as exc:
                del owner.tasks[task.name]
                raise ArgumentError(
                    task.name,
                    "a periodic job is called with no arguments: give every parameter a "
                    f"default ({exc.reason})",
                    argument=exc.argument,
                ) from None
            self[task.name] = Periodic(
                task,
                cron=cron,
                every=None if every is None else float(every),
                timezone=timezone,
                catch_up=catch_up,
                timing=slots,
            )
            return task

        return register

    # -- the scheduler of one worker pool ------------------------------------------------

    async def run(self, queues: Sequence[str] | None) -> None:
        """Fire the periodic jobs a pool serving ``queues`` (None: all) runs, forever.

        A storage failure is logged and tried again after a backoff (50 ms doubling to
        5 s): the pool outlives a storage that is briefly unavailable.
        """
        tasks = self._queue.tasks
        mine = [
            p
            for p in self.values()
            if tasks.get(p.task.name) is p.task and (queues is None or p.queue in queues)
        ]
        if not mine:
            return
        clock = self._queue.clock
        saved = False
        failures = 0
        while True:
            try:
                if not saved:
                    await self._save(mine)
                    saved = True
                await self._tick(mine)
            except Exception:
                failures += 1
                _log.exception("periodic jobs: storage failed (failure %d)", failures)
                await clock.sleep(min(0.05 * 2 ** (failures - 1), 5.0))
                continue
            failures = 0
            now = clock.now()
            wake = min(
                (t for p in mine if (t := p.timing.next_after(now)) is not None), default=None
            )
            await clock.sleep(3600.0 if wake is None else wake - now)

    async def _save(self, periodics: Sequence[Periodic]) -> None:
        """Store the definitions; a schedule new to the storage counts its slots from now."""
        storage, clock = self._queue.storage, self._queue.clock
        for periodic in periodics:
            now = clock.now()
            stored = await storage.save_schedule(periodic.schedule(), now=now)
            if stored.handled_until is None and not stored.paused:
                await storage.fire_schedule(periodic.name, slot=now, job=None, missed=0, now=now)

    async def _tick(self, periodics: Sequence[Periodic]) -> None:
        """Read every schedule's state once, then fire what is due."""
        queue = self._queue
        states = {s.name: s for s in await queue.storage.schedules()}
        now = queue.clock.now()
        for periodic in periodics:
            state = states.get(periodic.name)
            if state is None:  # removed from the storage behind our back: define it again
                await self._save([periodic])
                continue
            if state.paused or state.handled_until is None:
                continue
            due = periodic.timing.due(state.handled_until, now)
            if due is not None:
                await self._fire(periodic, due, now)

    async def _fire(self, periodic: Periodic, due: Due, now: float) -> None:
        on_time = now - due.newest <= due.grace
        missed = due.total - 1 if on_time else due.total
        calls: list[tuple[float, Job | None, int]] = []
        last_missed = due.newest
        if missed and (periodic.catch_up or not on_time):
            if on_time:
                assert due.before is not None  # two slots or more are due
                last_missed = due.before
            catch_up = self._job(periodic, last_missed, now) if periodic.catch_up else None
            calls.append((last_missed, catch_up, missed))
            if on_time:
                calls.append((due.newest, self._job(periodic, due.newest, now), 0))
        else:
            if on_time and missed:
                assert due.before is not None
                last_missed = due.before
            calls.append((due.newest, self._job(periodic, due.newest, now), missed))
        queue = self._queue
        events = queue.events
        for slot, job, count in calls:
            fired = await queue.storage.fire_schedule(
                periodic.name, slot=slot, job=job, missed=count, now=now
            )
            if not fired:
                continue
            if job is not None and events.active:
                events.publish(JobEnqueued(at=now, job=job))
            if count:
                _log.warning(
                    "periodic job %r missed %d slot(s) from %s to %s%s",
                    periodic.name,
                    count,
                    _iso(due.first),
                    _iso(last_missed),
                    "; one catch-up job enqueued" if job is not None else "",
                )
                if events.active:
                    events.publish(
                        ScheduleMissed(
                            at=now,
                            schedule=periodic.name,
                            missed=count,
                            first_slot=due.first,
                            last_slot=last_missed,
                        )
                    )

    def _job(self, periodic: Periodic, slot: float, now: float) -> Job:
        """The job of one slot: an enqueue of the task with no arguments, due now."""
        key = f"periodic:{periodic.name}:{slot!r}"
        return self._queue._build(periodic.task, (), {}, now, JobOptions(key=key))

    # -- listing, pause and resume ----------------------------------------------------

    async def listing(self) -> list[Schedule]:
        """Stored schedules, and those defined here but not saved yet, with ``next_at``."""
        queue = self._queue
        stored = {s.name: s for s in await queue.storage.schedules()}
        for name, periodic in self.items():
            if name not in stored:
                stored[name] = periodic.schedule()
        now = queue.clock.now()
        return [_with_next(stored[name], now) for name in sorted(stored)]

    async def pause(self, name: str, *, paused: bool) -> Schedule:
        """Pause or resume ``name``; a schedule defined here but not saved yet is saved
        first. Raises :class:`ScheduleNotFound`."""
        queue = self._queue
        storage = queue.storage
        now = queue.clock.now()
        try:
            schedule = await storage.pause_schedule(name, paused=paused, now=now)
        except ScheduleNotFound:
            periodic = self.get(name)
            if periodic is None:
                raise
            await storage.save_schedule(periodic.schedule(), now=now)
            schedule = await storage.pause_schedule(name, paused=paused, now=now)
        return _with_next(schedule, now)


def _with_next(schedule: Schedule, now: float) -> Schedule:
    """``schedule`` with ``next_at``, its next slot (None while paused)."""
    slots = None if schedule.paused else _stored_timing(schedule)
    if slots is None:
        return msgspec.structs.replace(schedule, next_at=None)
    after = now if schedule.handled_until is None else max(now, schedule.handled_until)
    return msgspec.structs.replace(schedule, next_at=slots.next_after(after))


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()
