"""The REST API for search, exact counts, bulk actions and dead-letter groups (mounted
under ``/api/v1`` with the jobs; ``GET /jobs?q=`` itself is in :mod:`._routes`).

One query language everywhere (:meth:`hyperqueue.JobFilter.parse`); a query that does
not parse answers 422 naming the problem. A bulk action runs on the server in batches
of :data:`BULK_BATCH` jobs, one storage transaction each, each job changed as the
one-job route would change it (events, interruption of running jobs, workflow steps).
``dry_run`` answers the exact count and changes nothing; ``expected`` makes the action
honest about what the caller confirmed: when the count at the start differs, 409 with
the actual count in ``extra.count``. Each bulk action is one audit record
(``jobs.bulk_cancel``, ``jobs.bulk_retry``, ``jobs.bulk_discard``) with its query and
count.

Roles: reads need ``viewer``, bulk actions ``operator`` (as one job's cancel). A key
bound to a tenant only ever reaches its tenant's jobs: its tenant is ANDed with every
query here, whatever the query says.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from litestar import Request, get, post
from litestar.exceptions import HTTPException
from litestar.openapi import ResponseSpec
from litestar.params import JSONBody, QueryParameter
from litestar.types import ControllerRouterHandler

import hyperqueue as hq
from hyperqueue import Operation

from ._audit import AUDITED, Audit, AuditRecord
from ._auth import ROLE_OPT
from ._schemas import BulkRequest, BulkResponse, CountResponse, ErrorBody, GroupsResponse
from ._security import PRINCIPAL, Principal, actor_of, route_of

__all__ = ["BULK_BATCH", "search_routes"]

BULK_BATCH = 500
"""Jobs changed per storage transaction by a bulk action."""

_DESCRIPTIONS = {
    409: "`expected` was given and the query takes another number of jobs now "
    "(`extra.count` says how many)",
    422: "A query that does not parse (an unknown qualifier, a bad value)",
    503: "Refused by the current mode (Retry-After says when to try again)",
}
_OPERATOR = {ROLE_OPT: "operator"}
_OPERATIONS = {"cancel": Operation.ADMIN, "retry": Operation.SUBMIT, "discard": Operation.ADMIN}


def _errors(*codes: int) -> dict[int, ResponseSpec]:
    return {
        code: ResponseSpec(data_container=ErrorBody, description=_DESCRIPTIONS[code])
        for code in codes
    }


def _tenant_of(request: Request[Any, Any, Any]) -> str | None:
    """The tenant the caller's key is bound to, if any (resolved by the auth part)."""
    principal = (request.scope.get("state") or {}).get(PRINCIPAL)
    return principal.tenant if isinstance(principal, Principal) else None


def search_routes(
    queue: hq.Queue, modes: hq.ModeController, *, batch: int = BULK_BATCH
) -> list[ControllerRouterHandler]:
    """The search, count, bulk and dead-letter group handlers over ``queue``."""

    def where(request: Request[Any, Any, Any], q: str | None) -> hq.JobFilter | None:
        """The caller's filter, confined to its tenant; ``None`` when nothing can pass."""
        parsed = hq.JobFilter.parse(q or "", now=queue.clock.now())
        return parsed.narrowed(tenant=_tenant_of(request))

    async def audit(
        request: Request[Any, Any, Any], action: str, body: BulkRequest, count: int, at: float
    ) -> None:
        """One record for the whole action (the audit middleware then records nothing
        more for this request)."""
        try:
            plugin = request.app.plugins.get(Audit)
        except KeyError:
            return
        request.scope.setdefault("state", {})[AUDITED] = True
        await plugin.record(
            AuditRecord(
                at=at,
                event=f"jobs.bulk_{action}",
                actor=actor_of(request.scope),
                resource=f"query:{body.q}"[:500],
                action=f"bulk_{action}",
                result="success",
                metadata={
                    "method": "POST",
                    "route": route_of(request.scope),
                    "status": 200,
                    "q": body.q,
                    "count": count,
                },
            )
        )

    runs: dict[str, Callable[[hq.JobFilter], Awaitable[int]]] = {
        "cancel": lambda w: queue.cancel_matching(w, batch=batch),
        "retry": lambda w: queue.retry_matching(w, batch=batch),
        "discard": lambda w: queue.discard_matching(w, batch=batch),
    }

    async def bulk(request: Request[Any, Any, Any], body: BulkRequest, action: str) -> BulkResponse:
        modes.check(_OPERATIONS[action])
        started = queue.clock.now()
        found = where(request, body.q)
        found = None if found is None else found.for_action(action)
        count = 0 if found is None else await queue.count_jobs(found)
        if body.expected is not None and body.expected != count:
            raise HTTPException(
                status_code=409,
                detail=f"the query takes {count:,} jobs to {action} now, not the "
                f"{body.expected:,} expected",
                extra={"count": count, "expected": body.expected},
            )
        if not body.dry_run and found is not None and count:
            count = await runs[action](found)
        if not body.dry_run:
            await audit(request, action, body, count, started)
        return BulkResponse(count=count, dry_run=body.dry_run)

    def bulk_route(action: str, summary: str, description: str) -> ControllerRouterHandler:
        """``POST /jobs/<action>``: one handler per action, all through :func:`bulk`."""

        async def handler(
            request: Request[Any, Any, Any], data: JSONBody[BulkRequest]
        ) -> BulkResponse:
            return await bulk(request, data, action)

        handler.__name__ = f"{action}_jobs"
        return post(
            f"/jobs/{action}",
            operation_id=f"{action}Jobs",
            summary=summary,
            description=description + " `dry_run` counts only; `expected` guards the count.",
            status_code=200,
            responses=_errors(409, 422, 503),
            opt=_OPERATOR,
        )(handler)

    @get(
        "/jobs/count",
        operation_id="countJobs",
        summary="The exact number of jobs a query takes",
        responses=_errors(422),
    )
    async def count_jobs(
        request: Request[Any, Any, Any], q: Annotated[str | None, QueryParameter()] = None
    ) -> CountResponse:
        modes.check(Operation.READ)
        found = where(request, q)
        return CountResponse(count=0 if found is None else await queue.count_jobs(found))

    bulk_routes = [
        bulk_route(
            "cancel",
            "Cancel every pending or running job a query takes",
            "Running jobs are interrupted where they run.",
        ),
        bulk_route(
            "retry",
            "Run again every failed or cancelled job a query takes",
            "Each job as one job's retry: attempts counted afresh.",
        ),
        bulk_route(
            "discard",
            "Delete every completed, failed or cancelled job a query takes",
            "A step of a workflow that still runs is kept.",
        ),
    ]

    @get(
        "/dead-letters/groups",
        operation_id="deadLetterGroups",
        summary="Failed jobs grouped by error fingerprint, newest group first",
        description="A group's jobs are the query `fingerprint:<fingerprint>`.",
        responses=_errors(422),
    )
    async def dead_letter_groups(
        request: Request[Any, Any, Any],
        q: Annotated[str | None, QueryParameter()] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    ) -> GroupsResponse:
        modes.check(Operation.READ)
        found = where(request, q)
        if found is None:
            return GroupsResponse(groups=[])
        return GroupsResponse(groups=await queue.dead_letter_groups(found, limit=limit))

    return [count_jobs, *bulk_routes, dead_letter_groups]
