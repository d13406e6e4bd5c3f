"""Health endpoints and the checks every server has: storage, queue depth, workers,
memory.

``/health`` runs the registry (reusing a report younger than ``health_max_age``) and
answers 503 when it is unhealthy; ``/health/live`` only says the process answers (an
orchestrator restarts it when this fails); ``/health/ready`` says whether to send it
traffic: started, not shutting down, and not unhealthy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar import Response, get
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import ResponseSpec

import hyperqueue as hq

from ._process import resident_bytes
from ._schemas import HealthBody

if TYPE_CHECKING:
    from ._plugin import HyperqueuePlugin

__all__ = ["UNSERVED_AFTER", "health_routes", "standard_checks"]

UNSERVED_AFTER = 60.0
"""Seconds a job may wait for a worker that knows its task before health says so."""


def standard_checks(plugin: HyperqueuePlugin) -> None:
    """Add ``storage``, ``queue_depth``, ``workers``, ``unserved`` and ``memory`` to the registry;
    only storage and workers are critical (their failure makes the server unhealthy)."""
    queue = plugin.queue
    health = plugin.health

    async def storage() -> hq.CheckResult | None:
        probe = getattr(queue.storage, "health", None)
        if probe is None:
            await queue.storage.counts()
            return None
        reading: Any = await probe()
        return hq.CheckResult(
            status=hq.HealthStatus(reading.status), message=getattr(reading, "message", None)
        )

    async def queue_depth() -> hq.CheckResult | None:
        pending = sum(s.pending for s in (await queue.stats()).values())
        limit = plugin.max_queue_depth
        status = hq.HealthStatus.DEGRADED if pending > limit else hq.HealthStatus.HEALTHY
        return hq.CheckResult(status=status, message=f"{pending} pending (limit {limit})")

    async def workers() -> hq.CheckResult | None:
        if not plugin.workers:
            return hq.CheckResult(
                status=hq.HealthStatus.HEALTHY, message="no workers in this process"
            )
        worker = plugin.worker
        if worker is None:
            return hq.CheckResult(
                status=hq.HealthStatus.UNHEALTHY, message="the worker pool is not running"
            )
        stats = worker.stats()
        return hq.CheckResult(
            status=hq.HealthStatus.HEALTHY,
            message=f"{stats.running} of {stats.concurrency} runners busy",
        )

    async def unserved() -> hq.CheckResult | None:
        """Degraded while a job waits longer than ``unserved_after`` for a worker that
        knows its task (no live pool on the storage registered it)."""
        waiting = await queue.unserved()
        now = queue.clock.now()
        late = [
            item
            for item in waiting
            if item.oldest_run_at is not None and now - item.oldest_run_at > UNSERVED_AFTER
        ]
        if not late:
            return hq.CheckResult(status=hq.HealthStatus.HEALTHY, message="every task is served")
        names = ", ".join(sorted({f"{i.task!r} ({i.pending} in {i.queue!r})" for i in late}))
        return hq.CheckResult(
            status=hq.HealthStatus.DEGRADED,
            message=f"jobs wait for a worker that knows their task: {names}",
        )

    async def memory() -> hq.CheckResult | None:
        used = resident_bytes()
        limit = plugin.max_memory_bytes
        status = hq.HealthStatus.DEGRADED if used > limit else hq.HealthStatus.HEALTHY
        return hq.CheckResult(
            status=status, message=f"{used / 2**20:,.0f} MiB resident (limit {limit / 2**20:,.0f})"
        )

    checks = (
        ("storage", storage, True),
        ("queue_depth", queue_depth, False),
        ("workers", workers, True),
        ("unserved", unserved, False),
        ("memory", memory, False),
    )
    for name, check, critical in checks:
        if name not in health:
            health.add(name, check, critical=critical)


_UNHEALTHY = ResponseSpec(data_container=HealthBody, description="Unhealthy or not ready")


def health_routes(plugin: HyperqueuePlugin) -> list[HTTPRouteHandler]:
    from hyperqueue import __version__

    queue = plugin.queue
    path = plugin.health_path

    def body(report: hq.HealthReport | None, status: hq.HealthStatus) -> HealthBody:
        return HealthBody(
            status=status,
            version=__version__,
            uptime_seconds=round(max(queue.clock.now() - plugin.started_at, 0.0), 3),
            checks=report.checks if report is not None else {},
            mode=str(plugin.modes.mode),
        )

    def respond(content: HealthBody) -> Response[HealthBody]:
        code = 503 if content.status is hq.HealthStatus.UNHEALTHY else 200
        return Response(content, status_code=code, headers={"Cache-Control": "no-store"})

    @get(
        path,
        operation_id="health",
        summary="Health: every check with its latency; 503 when unhealthy",
        tags=["health"],
        responses={503: _UNHEALTHY},
    )
    async def health() -> Response[HealthBody]:
        report = await plugin.health.report(max_age=plugin.health_max_age)
        return respond(body(report, report.status))

    @get(
        f"{path}/live",
        operation_id="healthLive",
        summary="Liveness: the process answers",
        tags=["health"],
    )
    async def live() -> Response[HealthBody]:
        return respond(body(None, hq.HealthStatus.HEALTHY))

    @get(
        f"{path}/ready",
        operation_id="healthReady",
        summary="Readiness: started, not stopping, not unhealthy; else 503",
        tags=["health"],
        responses={503: _UNHEALTHY},
    )
    async def ready() -> Response[HealthBody]:
        if not plugin.ready:
            checks = {
                "lifespan": hq.CheckResult(
                    status=hq.HealthStatus.UNHEALTHY, message="starting or shutting down"
                )
            }
            return respond(
                HealthBody(
                    status=hq.HealthStatus.UNHEALTHY,
                    version=__version__,
                    uptime_seconds=0.0,
                    checks=checks,
                    mode=str(plugin.modes.mode),
                )
            )
        report = await plugin.health.report(max_age=plugin.health_max_age)
        return respond(body(report, report.status))

    return [health, live, ready]
