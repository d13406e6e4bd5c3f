"""Prometheus ``/metrics`` for the server (MISSION D3, D8), through prometheus-client.

Each app gets its own :class:`~prometheus_client.CollectorRegistry` (never the global
one), so two apps in one process, or one test after another, do not mix figures.
Every family is named ``hyperqueue_...``:

- HTTP: ``hyperqueue_http_requests_total``, ``..._request_duration_seconds`` and
  ``..._errors_total`` (status 5xx, and 4xx apart in the requests' status label) by
  method, route *template* (``/api/v1/jobs/{job_id}``, so ids never grow the label set)
  and status; ``hyperqueue_http_slow_requests_total`` for requests over
  ``slow_request_ms``, each also published as a :class:`SlowRequest` event and logged
  (a warning on ``hyperqueue.server``).
- Jobs, read at scrape time (one ``queue.stats()`` call): ``hyperqueue_jobs`` by queue
  and status, ``hyperqueue_queue_depth`` (pending) by queue.
- ``hyperqueue_job_duration_seconds`` by task: a histogram fed from the event bus
  (``JobCompleted`` / ``JobFailed`` carry ``started_at`` and ``finished_at``).
- Breakers: ``hyperqueue_breaker_state`` (1 for the state it is in), and
  ``hyperqueue_breaker_trips_total``.
- Process figures from prometheus-client's process collector, under the same prefix
  (``hyperqueue_process_resident_memory_bytes``, ``..._cpu_seconds_total``,
  ``..._open_fds``...), and ``hyperqueue_uptime_seconds``.
- A Server-Sent Events stream is counted as a request when it closes, but it is not
  timed and never counts as slow: it lasts as long as its client listens.

Request latency is read from the queue's clock, so a test drives it with a fake clock.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager

from litestar import Litestar, Response, get
from litestar.config.app import AppConfig
from litestar.plugins import InitPlugin
from litestar.types import Message
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

import hyperqueue as hq

from ._config import Config
from ._pipeline import Call, Layer
from ._security import SlowRequest

__all__ = ["Metrics"]

_log = logging.getLogger("hyperqueue.server")

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_JOB_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0)
_STATES = ("closed", "open", "half_open")


class _QueueCollector:
    """Figures read at scrape time: :meth:`Metrics.refresh` takes the async ones first,
    since a collector's ``collect`` cannot await."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.stats: dict[str, hq.QueueStats] = {}

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        jobs = GaugeMetricFamily(
            "hyperqueue_jobs", "Jobs by queue and status", labels=["queue", "status"]
        )
        depth = GaugeMetricFamily(
            "hyperqueue_queue_depth", "Pending jobs by queue", labels=["queue"]
        )
        for name, stats in self.stats.items():
            for status in hq.JobStatus:
                jobs.add_metric([name, status.value], getattr(stats, status.value))
            depth.add_metric([name], stats.pending)
        yield jobs
        yield depth
        state = GaugeMetricFamily(
            "hyperqueue_breaker_state",
            "1 for the state each breaker is in",
            labels=["breaker", "state"],
        )
        trips = CounterMetricFamily(
            "hyperqueue_breaker_trips", "Moves of each breaker to open", labels=["breaker"]
        )
        for b in m.queue.breakers.stats():
            for s in _STATES:
                state.add_metric([b.name, s], 1.0 if str(b.state) == s else 0.0)
            trips.add_metric([b.name], b.trips)
        yield state
        yield trips
        yield GaugeMetricFamily(
            "hyperqueue_uptime_seconds",
            "Seconds since the server started",
            value=max(m.clock.now() - m.started_at, 0.0),
        )


class Metrics(InitPlugin):
    """A Litestar plugin: ``create_app(queue, plugins=[Metrics(queue)])``.

    ``path`` (default ``/metrics``) serves the figures; ``slow_request_ms`` (default
    500, as ``Config.server.slow_request_ms``) is the latency from which a request
    counts as slow and is published as a :class:`SlowRequest` event. Its middleware goes
    first in the app's stack, so refusals by the other middleware are counted too.
    """

    def __init__(
        self, queue: hq.Queue, *, path: str = "/metrics", slow_request_ms: float = 500.0
    ) -> None:
        if slow_request_ms < 0:
            raise ValueError("slow_request_ms must be >= 0")
        self.queue = queue
        self.clock = queue.clock
        self.path = path
        self.slow_request_ms = slow_request_ms
        self.started_at = self.clock.now()
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ["method", "route", "status"]
        self.requests = Counter(
            "hyperqueue_http_requests", "HTTP requests", labels, registry=self.registry
        )
        self.errors = Counter(
            "hyperqueue_http_errors", "HTTP requests answered 5xx", labels, registry=self.registry
        )
        self.durations = Histogram(
            "hyperqueue_http_request_duration_seconds",
            "Time to answer, by route template",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.slow = Counter(
            "hyperqueue_http_slow_requests",
            "Requests slower than the configured threshold",
            ["method", "route"],
            registry=self.registry,
        )
        self.job_durations = Histogram(
            "hyperqueue_job_duration_seconds",
            "Run time of finished jobs, by task",
            ["task", "status"],
            buckets=_JOB_BUCKETS,
            registry=self.registry,
        )
        # the children of each (method, route, status) seen, resolved once: counting an
        # answer is then one dict lookup and no label tuple per request
        self._children: dict[tuple[str, str, int], _Children] = {}
        self._durations: dict[tuple[str, str], Histogram] = {}  # by task and status
        self._collector = _QueueCollector(self)
        self.registry.register(self._collector)
        # hyperqueue_process_resident_memory_bytes, ..._cpu_seconds_total, ..._open_fds and
        # the rest, read by prometheus-client's collector (from /proc, where there is one)
        ProcessCollector(namespace="hyperqueue", registry=self.registry)
        self.middleware = _MetricsMiddleware(self)

    # -- Litestar ------------------------------------------------------------------------

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        metrics = self

        @get(self.path, include_in_schema=False, name="hyperqueue_metrics")
        async def scrape() -> Response[bytes]:
            await metrics.refresh()
            return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

        app_config.route_handlers.append(scrape)
        app_config.middleware.insert(0, self.middleware)
        app_config.lifespan.append(self.lifespan)
        return app_config

    @asynccontextmanager
    async def lifespan(self, app: Litestar) -> AsyncIterator[None]:
        self.started_at = self.clock.now()
        unsubscribe = self.queue.events.subscribe(
            self._job_finished, hq.JobCompleted, hq.JobFailed, name="metrics"
        )
        try:
            yield
        finally:
            unsubscribe()

    def apply(self, config: Config) -> None:
        """Take ``config.server.slow_request_ms`` as the slow-request threshold from the
        next answer on."""
        self.slow_request_ms = config.server.slow_request_ms

    # -- figures -------------------------------------------------------------------------

    def _job_finished(self, event: hq.JobCompleted | hq.JobFailed) -> None:
        job = event.job
        if job.started_at is not None and job.finished_at is not None:
            key = (job.task, job.status.value)
            child = self._durations.get(key)
            if child is None:
                child = self._durations[key] = self.job_durations.labels(*key)
            child.observe(max(job.finished_at - job.started_at, 0.0))

    async def refresh(self) -> None:
        """Read the queue's figures now (called by each scrape)."""
        self._collector.stats = await self.queue.stats()

    def render(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)

    def observe(
        self, method: str, route: str, status: int, seconds: float, *, streaming: bool = False
    ) -> None:
        """Count one answer. A ``streaming`` one (Server-Sent Events) lasts as long as
        its client stays: it is counted, but neither timed nor ever slow."""
        children = self._children.get((method, route, status))
        if children is None:
            children = self._resolve(method, route, status)
            if len(self._children) < 4096:  # methods come from clients: keep it bounded
                self._children[(method, route, status)] = children
        requests, durations, errors = children
        requests.inc()
        if errors is not None:
            errors.inc()
        if streaming:
            return
        durations.observe(seconds)
        ms = seconds * 1000.0
        if ms > self.slow_request_ms:
            self.slow.labels(method, route).inc()
            _log.warning(
                "slow request: %s %s answered %d in %.0f ms (threshold %.0f ms)",
                method,
                route,
                status,
                ms,
                self.slow_request_ms,
                extra={
                    "event": "http.slow_request",
                    "http.request.method": method,
                    "http.route": route,
                    "http.response.status_code": status,
                    "duration_ms": round(ms, 3),
                },
            )
            bus = self.queue.events
            if bus.active:
                bus.publish(
                    SlowRequest(
                        at=self.clock.now(),
                        method=method,
                        route=route,
                        status_code=status,
                        duration_ms=ms,
                        threshold_ms=self.slow_request_ms,
                    )
                )

    def _resolve(self, method: str, route: str, status: int) -> _Children:
        label = str(status)
        return (
            self.requests.labels(method, route, label),
            self.durations.labels(method, route, label),
            self.errors.labels(method, route, label) if status >= 500 else None,
        )


_Children = tuple[Counter, Histogram, Counter | None]


class _MetricsMiddleware(Layer):
    """Times every request and counts its answer (the first layer: refusals by the
    others are counted too)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    async def enter(self, call: Call) -> _Timed:
        return _Timed(self.metrics, call)


class _Timed:
    """One request being timed: its status and whether it is an event stream."""

    __slots__ = ("call", "metrics", "started", "status", "streaming")

    def __init__(self, metrics: Metrics, call: Call) -> None:
        self.metrics = metrics
        self.call = call
        self.started = metrics.clock.now()
        self.status = 500
        self.streaming = False

    def seen(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            for name, value in message.get("headers", ()):
                if name.lower() == b"content-type":
                    self.streaming = value.startswith(b"text/event-stream")

    def close(self) -> None:
        metrics, call = self.metrics, self.call
        metrics.observe(
            call.method,
            call.route,
            self.status,
            metrics.clock.now() - self.started,
            streaming=self.streaming,
        )


def families(text: str) -> Sequence[str]:
    """Names of the families in a Prometheus text document (for tests and tools)."""
    return sorted({family.name for family in text_string_to_metric_families(text)})
