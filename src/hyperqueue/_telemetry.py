"""OpenTelemetry traces and metrics of the core, through ``opentelemetry-api`` only.

Spans follow the messaging semantic conventions (v1.44, ``messaging.system`` =
``hyperqueue``; the queue is the destination, the job id the message id):

- enqueue of one job: a PRODUCER span ``send <queue>``;
- enqueue of several (:meth:`Queue.enqueue_many`, a workflow): one CLIENT span
  ``send`` (``send <queue>`` when they share one) with ``messaging.batch.message_count``,
  and under it a PRODUCER span ``create <queue>`` per job;
- each run of a job: a CONSUMER span ``process <queue>``, entered as an execution hook
  (so the task function's own spans are its children), *linked* to the context the job
  was created in (``trace_context="parent"`` makes that context its parent instead);
  ``error.type`` when the function raised, and span events for a retry
  (``hyperqueue.job.retry``), a deferral (``hyperqueue.job.deferred``), an interrupted
  run (``hyperqueue.job.interrupted``) and a job that lost its worker before this run
  (``hyperqueue.job.rescued``).

The creation context travels in the job (``Job.headers``: W3C ``traceparent``,
``tracestate``, ``baggage``, written by the global propagator while the producer span
records), so it crosses processes and hosts with the storage.

Nothing is recorded and nothing measurable is spent while no SDK is configured: no
provider was given to the queue and none was set globally (``trace.set_tracer_provider``,
``metrics.set_meter_provider``). Whether one was set is a read of the API's global
(:func:`_tracer_provider`), so a provider set after the queue was built is picked up by
the next job. This module never sets a global provider.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal

from opentelemetry import context as otel_context
from opentelemetry import metrics as otel_metrics
from opentelemetry import propagate
from opentelemetry import trace as otel_trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from ._hooks import JobRun
from ._models import Job, TaskBacklog

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation
    from opentelemetry.trace import Span, Tracer, TracerProvider

    from ._breaker import BreakerRegistry
    from ._clock import Clock

__all__ = ["SCHEMA_URL", "Telemetry", "TraceContext"]

SCHEMA_URL = "https://opentelemetry.io/schemas/1.44.0"
TraceContext = Literal["link", "parent"]

_log = logging.getLogger("hyperqueue.telemetry")
_SYSTEM = "hyperqueue"
_PRODUCER, _CLIENT, _CONSUMER = SpanKind.PRODUCER, SpanKind.CLIENT, SpanKind.CONSUMER
_EMPTY: dict[str, str] = {}


def _version() -> str:
    from . import __version__

    return __version__


# -- is an SDK configured? -----------------------------------------------------------------
# Through the public API only. A lookup (get_tracer_provider(), get_meter_provider())
# costs about 1 us, since it reads os.environ, so it runs on first use, then on every
# 64th use until a provider is found (a global provider, once set, stays), and at once
# when refresh() is called (hyperqueue_otel.configure does).

_LOOK_EVERY = 64


class _GlobalProviders:
    """The global tracer and meter providers once set, else ``None``."""

    __slots__ = ("_countdown", "meter", "tracer")

    def __init__(self) -> None:
        self.tracer: TracerProvider | None = None
        self.meter: MeterProvider | None = None
        self._countdown = 0

    def refresh(self) -> None:
        self._countdown = _LOOK_EVERY
        if self.tracer is None:
            tracer = otel_trace.get_tracer_provider()
            if not isinstance(
                tracer, otel_trace.ProxyTracerProvider | otel_trace.NoOpTracerProvider
            ):
                self.tracer = tracer
        if self.meter is None:
            meter = otel_metrics.get_meter_provider()
            # the API's stand-in until a provider is set is a private proxy class: its
            # name says so (no attribute of it is touched)
            if not isinstance(meter, otel_metrics.NoOpMeterProvider) and not type(
                meter
            ).__name__.startswith("_Proxy"):
                self.meter = meter

    def configured(self) -> bool:
        """Whether a global tracer or meter provider is set (cheap: see above)."""
        if self.tracer is None or self.meter is None:
            self._countdown -= 1
            if self._countdown <= 0:
                self.refresh()
        return self.tracer is not None or self.meter is not None


GLOBAL_PROVIDERS = _GlobalProviders()


def _tracer_provider() -> TracerProvider | None:
    """The global tracer provider once one was set, else ``None``."""
    GLOBAL_PROVIDERS.configured()
    return GLOBAL_PROVIDERS.tracer


def _meter_provider() -> MeterProvider | None:
    """The global meter provider once one was set, else ``None``."""
    GLOBAL_PROVIDERS.configured()
    return GLOBAL_PROVIDERS.meter


def _error_type(exc: BaseException) -> str:
    """``error.type``: the exception's fully qualified class name (builtins bare)."""
    kind = type(exc)
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


class _Instruments:
    """The metric instruments of one meter, made once."""

    __slots__ = ("jobs", "run_duration", "wait_duration")

    def __init__(self, meter: Meter, telemetry: Telemetry) -> None:
        self.jobs = meter.create_counter(
            "hyperqueue.jobs",
            unit="{job}",
            description="Runs of jobs by outcome: completed, retry, failed, deferred, interrupted",
        )
        self.run_duration = meter.create_histogram(
            "messaging.process.duration",
            unit="s",
            description="Run time of jobs, from the start of a run to its outcome",
        )
        self.wait_duration = meter.create_histogram(
            "hyperqueue.job.wait.duration",
            unit="s",
            description="Time jobs waited from being due to the start of their run",
        )
        meter.create_observable_gauge(
            "hyperqueue.queue.depth",
            callbacks=[telemetry._observe_depth],
            unit="{job}",
            description="Pending jobs by queue (read every refresh interval)",
        )
        meter.create_observable_gauge(
            "hyperqueue.queue.lag",
            callbacks=[telemetry._observe_lag],
            unit="s",
            description="Age of the oldest due pending job, by queue",
        )
        meter.create_observable_counter(
            "hyperqueue.breaker.trips",
            callbacks=[telemetry._observe_trips],
            unit="{trip}",
            description="Moves of each circuit breaker to open",
        )


class Telemetry:
    """A queue's OpenTelemetry instrumentation: ``queue.telemetry``.

    ``tracer_provider`` / ``meter_provider``: providers to use instead of the global
    ones (tests, or an application that keeps its providers to itself).
    ``trace_context``: ``"link"`` (default) links each run's span to the context the
    job was created in; ``"parent"`` makes it the parent, so a job's runs show inside
    the trace that enqueued it. ``enabled=False`` turns the instrumentation off.

    The global providers are looked up on first use and then every 64th use until one
    is set; after setting one yourself, call :meth:`refresh_providers` to be seen at
    once (``hyperqueue_otel.configure`` does).
    """

    @staticmethod
    def refresh_providers() -> None:
        """Look up the global tracer and meter providers now."""
        GLOBAL_PROVIDERS.refresh()

    def __init__(
        self,
        *,
        clock: Clock,
        breakers: BreakerRegistry | None = None,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        trace_context: TraceContext = "link",
        enabled: bool = True,
    ) -> None:
        if trace_context not in ("link", "parent"):
            raise ValueError("trace_context must be 'link' or 'parent'")
        self.clock = clock
        self.breakers = breakers
        self.enabled = enabled
        self.trace_context: TraceContext = trace_context
        self._own_tracer_provider = tracer_provider
        self._own_meter_provider = meter_provider
        self._own = tracer_provider is not None or meter_provider is not None
        self._tracer_from: object = None
        self._tracer: Tracer | None = None
        self._meter_from: object = None
        self._instruments: _Instruments | None = None
        self.backlog: list[TaskBacklog] | None = None
        """Pending jobs per queue and task, as last read for the depth and lag gauges."""
        self.backlog_at = 0.0
        self.hook = _ProcessHook(self)
        """The execution hook that makes the ``process`` spans and run metrics."""

    # -- what is configured (hot: one global read each when nothing is) -------------

    @property
    def active(self) -> bool:
        """Whether a tracer or meter provider is there to record anything."""
        return self.enabled and (self._own or GLOBAL_PROVIDERS.configured())

    def tracer(self) -> Tracer | None:
        """The tracer to use now, or ``None`` when no tracer provider is configured."""
        provider = self._own_tracer_provider or _tracer_provider()
        if provider is None or not self.enabled:
            return None
        if provider is not self._tracer_from:
            self._tracer_from = provider
            self._tracer = provider.get_tracer("hyperqueue", _version(), schema_url=SCHEMA_URL)
        return self._tracer

    def instruments(self) -> _Instruments | None:
        """The metric instruments, or ``None`` when no meter provider is configured."""
        provider = self._own_meter_provider or _meter_provider()
        if provider is None or not self.enabled:
            return None
        if provider is not self._meter_from:
            self._meter_from = provider
            meter = provider.get_meter("hyperqueue", _version(), schema_url=SCHEMA_URL)
            self._instruments = _Instruments(meter, self)
        return self._instruments

    # -- enqueue ------------------------------------------------------------------------

    @contextmanager
    def sending(self, tracer: Tracer, jobs: Sequence[Job]) -> Iterator[list[Job]]:
        """Spans around storing ``jobs``; yields the jobs with their ``headers`` set
        (the trace context of each one's producer span, when it records)."""
        from msgspec.structs import replace

        queues = {job.queue for job in jobs}
        destination = next(iter(queues)) if len(queues) == 1 else None
        single = len(jobs) == 1
        attributes: dict[str, Any] = {
            "messaging.system": _SYSTEM,
            "messaging.operation.name": "send",
            "messaging.operation.type": "send",
        }
        if destination is not None:
            attributes["messaging.destination.name"] = destination
        if single:
            attributes["messaging.message.id"] = jobs[0].id
        else:
            attributes["messaging.batch.message_count"] = len(jobs)
        name = "send" if destination is None else f"send {destination}"
        span = tracer.start_span(name, kind=_PRODUCER if single else _CLIENT, attributes=attributes)
        token = otel_context.attach(otel_trace.set_span_in_context(span))
        try:
            if single:
                headers = _inject() if span.is_recording() else _EMPTY
                out = [replace(jobs[0], headers=headers)] if headers else list(jobs)
            else:
                out = [self._created(tracer, job, replace) for job in jobs]
            yield out
        except BaseException as exc:
            _failed(span, exc)
            raise
        finally:
            otel_context.detach(token)
            span.end()

    def _created(self, tracer: Tracer, job: Job, replace: Any) -> Job:
        span = tracer.start_span(
            f"create {job.queue}",
            kind=_PRODUCER,
            attributes={
                "messaging.system": _SYSTEM,
                "messaging.operation.name": "create",
                "messaging.operation.type": "create",
                "messaging.destination.name": job.queue,
                "messaging.message.id": job.id,
            },
        )
        try:
            if not span.is_recording():
                return job
            headers = _inject(otel_trace.set_span_in_context(span))
            return replace(job, headers=headers) if headers else job
        finally:
            span.end()

    # -- observable figures ---------------------------------------------------------------

    def _observe_depth(self, options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        depth: dict[str, int] = {}
        for item in self.backlog or ():
            depth[item.queue] = depth.get(item.queue, 0) + item.pending
        return [Observation(n, {"messaging.destination.name": queue}) for queue, n in depth.items()]

    def _observe_lag(self, options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        now = self.clock.now()
        oldest: dict[str, float] = {}
        for item in self.backlog or ():
            due = item.oldest_run_at
            if due is not None and due <= now:
                oldest[item.queue] = min(oldest.get(item.queue, due), due)
            else:
                oldest.setdefault(item.queue, now)
        return [
            Observation(max(now - at, 0.0), {"messaging.destination.name": queue})
            for queue, at in oldest.items()
        ]

    def _observe_trips(self, options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        if self.breakers is None:
            return []
        return [Observation(b.trips, {"hyperqueue.breaker": b.name}) for b in self.breakers.stats()]


def _inject(ctx: otel_context.Context | None = None) -> dict[str, str]:
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=ctx)
    return carrier


def _failed(span: Span, exc: BaseException) -> None:
    if span.is_recording():
        span.set_attribute("error.type", _error_type(exc))
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, str(exc) or type(exc).__name__))


class _ProcessHook:
    """The execution hook of the ``process`` spans and the run metrics."""

    __slots__ = ("telemetry",)

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry

    def __call__(self, run: JobRun) -> _Processing | None:
        telemetry = self.telemetry
        tracer = telemetry.tracer()
        instruments = telemetry.instruments()
        if tracer is None and instruments is None:
            return None
        return _Processing(telemetry, tracer, instruments, run)

    def __repr__(self) -> str:
        return "hyperqueue tracing"


class _Processing:
    """One run's ``process`` span (entered as the current span) and its figures."""

    __slots__ = ("instruments", "run", "span", "started", "telemetry", "token", "tracer")

    def __init__(
        self,
        telemetry: Telemetry,
        tracer: Tracer | None,
        instruments: _Instruments | None,
        run: JobRun,
    ) -> None:
        self.telemetry = telemetry
        self.tracer = tracer
        self.instruments = instruments
        self.run = run
        self.span: Span | None = None
        self.token: object = None
        self.started = 0.0

    def __enter__(self) -> Span | None:
        run = self.run
        job = run.job
        self.started = now = self.telemetry.clock.now()
        if self.instruments is not None:
            self.instruments.wait_duration.record(
                max(now - job.run_at, 0.0), {"messaging.destination.name": job.queue}
            )
        tracer = self.tracer
        if tracer is None:
            return None
        created = propagate.extract(job.headers) if job.headers else None
        links: list[Link] = []
        parent = None
        if created is not None:
            if self.telemetry.trace_context == "parent":
                parent = created
            else:
                creation = otel_trace.get_current_span(created).get_span_context()
                if creation.is_valid:
                    links.append(Link(creation))
        attributes: dict[str, Any] = {
            "messaging.system": _SYSTEM,
            "messaging.operation.name": "process",
            "messaging.operation.type": "process",
            "messaging.destination.name": job.queue,
            "messaging.message.id": job.id,
            "messaging.client.id": run.worker,
            "hyperqueue.task": job.task,
            "hyperqueue.job.attempt": run.attempt,
        }
        span = tracer.start_span(
            f"process {job.queue}",
            context=parent,
            kind=_CONSUMER,
            links=links,
            attributes=attributes,
        )
        if job.rescues and span.is_recording():
            span.add_event("hyperqueue.job.rescued", {"hyperqueue.job.rescues": job.rescues})
        self.span = span
        self.token = otel_context.attach(otel_trace.set_span_in_context(span))
        return span

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        run = self.run
        job = run.job
        outcome = run.outcome or "interrupted"
        error = run.error
        instruments = self.instruments
        if instruments is not None:
            attributes: dict[str, str] = {
                "messaging.system": _SYSTEM,
                "messaging.operation.name": "process",
                "messaging.destination.name": job.queue,
                "hyperqueue.task": job.task,
                "hyperqueue.outcome": outcome,
            }
            instruments.jobs.add(1, attributes)
            duration = {"messaging.destination.name": job.queue, "hyperqueue.task": job.task}
            if error is not None:
                duration["error.type"] = _error_type(error)
            instruments.run_duration.record(
                max(self.telemetry.clock.now() - self.started, 0.0), duration
            )
        span = self.span
        if span is None:
            return
        try:
            if span.is_recording():
                if error is not None:
                    _failed(span, error)
                if outcome == "retry":
                    event: dict[str, Any] = {"hyperqueue.job.attempt": run.attempt}
                    if run.run_at is not None:
                        event["hyperqueue.job.run_at"] = run.run_at
                    span.add_event("hyperqueue.job.retry", event)
                elif outcome == "deferred":
                    deferred: dict[str, Any] = {}
                    if run.run_at is not None:
                        deferred["hyperqueue.job.run_at"] = run.run_at
                    span.add_event("hyperqueue.job.deferred", deferred)
                elif outcome == "interrupted":
                    span.add_event("hyperqueue.job.interrupted")
                span.set_attribute("hyperqueue.outcome", outcome)
        finally:
            otel_context.detach(self.token)  # type: ignore[arg-type]
            span.end()
