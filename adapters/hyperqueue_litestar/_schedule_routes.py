"""The periodic jobs' routes (mounted under ``/api/v1`` with the job routes).

``GET /schedules`` lists every schedule on the storage with its next slot; ``POST
/schedules/{name}/pause`` and ``/resume`` answer the schedule after the change. Reading
needs the viewer role, pausing and resuming the operator role (as cancelling a job does).
"""

from __future__ import annotations

import msgspec
from litestar import get, post
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import ResponseSpec
from litestar.params import FromPath

import hyperqueue as hq
from hyperqueue import Operation

from ._auth import ROLE_OPT
from ._schemas import ErrorBody

__all__ = ["ScheduleBody", "SchedulesResponse", "schedule_routes"]


class ScheduleBody(msgspec.Struct, frozen=True, kw_only=True):
    """A periodic job: its definition (``cron`` in ``timezone``, or ``every`` seconds)
    and its state. ``next_at`` is its next slot (null while paused); ``handled_until``
    the time up to which every slot was handled; ``last_job`` the id of the job of the
    latest fired slot; ``missed`` how many slots were missed in all."""

    name: str
    task: str
    queue: str
    cron: str | None
    every: float | None
    timezone: str | None
    catch_up: bool
    paused: bool
    next_at: float | None
    handled_until: float | None
    last_job: str | None
    missed: int


class SchedulesResponse(msgspec.Struct, frozen=True, kw_only=True):
    schedules: list[ScheduleBody]


def _body(schedule: hq.Schedule) -> ScheduleBody:
    return ScheduleBody(
        name=schedule.name,
        task=schedule.task,
        queue=schedule.queue,
        cron=schedule.cron,
        every=schedule.every,
        timezone=schedule.timezone,
        catch_up=schedule.catch_up,
        paused=schedule.paused,
        next_at=schedule.next_at,
        handled_until=schedule.handled_until,
        last_job=schedule.last_job,
        missed=schedule.missed,
    )


_CHANGE = {
    404: ResponseSpec(data_container=ErrorBody, description="No schedule has this name"),
    503: ResponseSpec(
        data_container=ErrorBody,
        description="Refused by the current mode (Retry-After says when to try again)",
    ),
}
_OPERATOR = {ROLE_OPT: "operator"}


def schedule_routes(queue: hq.Queue, modes: hq.ModeController) -> list[HTTPRouteHandler]:
    """The schedule routes over ``queue``, filtered by ``modes``."""

    @get(
        "/schedules",
        operation_id="listSchedules",
        summary="Periodic jobs with their next slot",
        tags=["schedules"],
    )
    async def list_schedules() -> SchedulesResponse:
        modes.check(Operation.READ)
        return SchedulesResponse(schedules=[_body(s) for s in await queue.schedules()])

    @post(
        "/schedules/{name:str}/pause",
        operation_id="pauseSchedule",
        summary="Stop firing a periodic job, in every process",
        status_code=200,
        responses=_CHANGE,
        opt=_OPERATOR,
        tags=["schedules"],
    )
    async def pause_schedule(name: FromPath[str]) -> ScheduleBody:
        modes.check(Operation.ADMIN)
        return _body(await queue.pause_schedule(name))

    @post(
        "/schedules/{name:str}/resume",
        operation_id="resumeSchedule",
        summary="Fire a paused periodic job again, from its next slot",
        description="The slots that passed while it was paused are not reported missed.",
        status_code=200,
        responses=_CHANGE,
        opt=_OPERATOR,
        tags=["schedules"],
    )
    async def resume_schedule(name: FromPath[str]) -> ScheduleBody:
        modes.check(Operation.ADMIN)
        return _body(await queue.resume_schedule(name))

    return [list_schedules, pause_schedule, resume_schedule]
