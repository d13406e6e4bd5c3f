"""Read routes the dashboard needs besides the API's own: the worker pools and the
caller's session (which key, which roles), under the API's prefix and guards.

``GET {api_prefix}/workers`` lists the pools alive on the storage, in every process
and host (``Queue.workers``), so any client sees who serves what; the dashboard's
Workers page is one of them. ``GET {api_prefix}/session`` tells a page whether to
show action buttons; it decides nothing: every action route checks the role itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import msgspec
from litestar import Request, Router, get
from litestar.types import Guard

import hyperqueue as hq
from hyperqueue import Operation
from hyperqueue_litestar._security import PRINCIPAL, Principal

__all__ = ["SessionInfo", "WorkersResponse", "dashboard_api_routes"]


class SessionInfo(msgspec.Struct, frozen=True, kw_only=True):
    """Who is calling: ``open`` when the server has no key (everyone may do everything);
    else the key's ``name``, ``roles`` and ``tenant``, and what they allow: ``operate``
    (cancel, retry, bulk actions, schedules) and ``admin`` (the audit log)."""

    open: bool
    name: str | None = None
    roles: tuple[str, ...] = ()
    tenant: str | None = None
    operate: bool = True
    admin: bool = True


class WorkersResponse(msgspec.Struct, frozen=True, kw_only=True):
    """The worker pools alive on the storage, and the storage's clock (``now``) so a
    client can tell how long ago each was seen."""

    workers: list[hq.WorkerInfo]
    now: float


def dashboard_api_routes(
    queue: hq.Queue,
    modes: hq.ModeController,
    *,
    api_prefix: str = "/api/v1",
    guards: Sequence[Guard] = (),
    is_open: Callable[[], bool] = lambda: True,
) -> Router:
    """A router at ``api_prefix`` with ``GET /workers`` and ``GET /session``."""

    @get("/workers", operation_id="listWorkers", summary="Worker pools alive on the storage")
    async def list_workers() -> WorkersResponse:
        modes.check(Operation.READ)
        return WorkersResponse(workers=await queue.workers(), now=queue.clock.now())

    @get("/session", operation_id="getSession", summary="The caller's key and what it may do")
    async def session(request: Request[Any, Any, Any]) -> SessionInfo:
        if is_open():
            return SessionInfo(open=True)
        found = request.scope.get("state", {}).get(PRINCIPAL)
        if not isinstance(found, Principal):  # the guard let it in: only an open server
            return SessionInfo(open=True)
        return SessionInfo(
            open=False,
            name=found.name,
            roles=tuple(found.roles),
            tenant=found.tenant,
            operate=found.may("operator"),
            admin=found.may("admin"),
        )

    return Router(
        path="/" + api_prefix.strip("/"),
        route_handlers=[list_workers, session],
        guards=list(guards),
        tags=["dashboard"],
    )
