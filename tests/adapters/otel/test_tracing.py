"""Spans and metrics of the core with the SDK's in-memory exporter and reader, by the
messaging semantic conventions (v1.44)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import hyperqueue as hq
from hyperqueue.testing import FakeClock

pytestmark = pytest.mark.anyio


def by_name(exporter: InMemorySpanExporter) -> dict[str, list[ReadableSpan]]:
    out: dict[str, list[ReadableSpan]] = {}
    for span in exporter.get_finished_spans():
        out.setdefault(span.name, []).append(span)
    return out


def traceparent(span: ReadableSpan) -> str:
    ctx = span.get_span_context()
    assert ctx is not None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}"


async def test_producer_and_consumer_spans_by_the_conventions(
    tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    queue = hq.Queue(tracer_provider=tracer_provider)
    inner = tracer_provider.get_tracer("app")

    @queue.task(queue="mail")
    async def send(to: str) -> str:
        with inner.start_as_current_span("smtp"):
            return to

    async with queue, queue.worker(name="w1"):
        with inner.start_as_current_span("request") as request:
            job = await send.enqueue("a@example.org")
        done = await queue.wait(job.id, timeout=5)
    assert done.result == "a@example.org"
    spans = by_name(exporter)
    [producer] = spans["send mail"]
    [consumer] = spans["process mail"]
    [smtp] = spans["smtp"]
    assert producer.kind is SpanKind.PRODUCER
    assert producer.parent is not None
    assert producer.parent.span_id == request.get_span_context().span_id
    assert dict(producer.attributes or {}) == {
        "messaging.system": "hyperqueue",
        "messaging.operation.name": "send",
        "messaging.operation.type": "send",
        "messaging.destination.name": "mail",
        "messaging.message.id": job.id,
    }
    assert job.headers["traceparent"][:-3] == traceparent(producer)
    assert done.headers == job.headers  # stored with the job
    assert consumer.kind is SpanKind.CONSUMER
    assert consumer.parent is None  # a new trace, linked to the creation context
    [link] = consumer.links
    assert link.context.trace_id == producer.context.trace_id
    assert link.context.span_id == producer.context.span_id
    attributes = dict(consumer.attributes or {})
    assert attributes == {
        "messaging.system": "hyperqueue",
        "messaging.operation.name": "process",
        "messaging.operation.type": "process",
        "messaging.destination.name": "mail",
        "messaging.message.id": job.id,
        "messaging.client.id": "w1",
        "hyperqueue.task": "send",
        "hyperqueue.job.attempt": 1,
        "hyperqueue.outcome": "completed",
    }
    assert consumer.status.status_code is StatusCode.UNSET
    assert smtp.parent is not None and smtp.parent.span_id == consumer.context.span_id


async def test_parent_option_puts_the_run_in_the_producers_trace(
    tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    queue = hq.Queue(tracer_provider=tracer_provider, trace_context="parent")

    @queue.task
    async def noop() -> None:
        return None

    async with queue, queue.worker():
        job = await noop.enqueue()
        await queue.wait(job.id, timeout=5)
    spans = by_name(exporter)
    [producer], [consumer] = spans["send default"], spans["process default"]
    assert consumer.parent is not None
    assert consumer.parent.span_id == producer.context.span_id
    assert consumer.context.trace_id == producer.context.trace_id
    assert list(consumer.links) == []


async def test_a_batch_is_one_client_send_and_a_create_span_per_job(
    tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    queue = hq.Queue(tracer_provider=tracer_provider)

    @queue.task
    async def square(x: int) -> int:
        return x * x

    results = await queue.enqueue_many(
        hq.Submission(task="square", args=(i,), queue=q) for i, q in enumerate(["a", "b", "a"])
    )
    spans = by_name(exporter)
    [send] = spans["send"]  # two queues: no destination in the name
    assert send.kind is SpanKind.CLIENT
    assert dict(send.attributes or {})["messaging.batch.message_count"] == 3
    assert "messaging.destination.name" not in dict(send.attributes or {})
    creates = spans["create a"] + spans["create b"]
    assert len(creates) == 3
    for create in creates:
        assert create.kind is SpanKind.PRODUCER
        assert create.parent is not None and create.parent.span_id == send.context.span_id
        assert dict(create.attributes or {})["messaging.operation.type"] == "create"
    by_id = {dict(c.attributes or {})["messaging.message.id"]: c for c in creates}
    for result in results:
        assert result.job.headers["traceparent"][:-3] == traceparent(by_id[result.job.id])


async def test_failure_retry_and_error_type(
    tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    queue = hq.Queue(tracer_provider=tracer_provider)

    @queue.task(retry=hq.Retry(2, backoff=0.0, jitter=0.0))
    async def flaky() -> None:
        raise ConnectionError("refused")

    async with queue, queue.worker():
        job = await flaky.enqueue()
        assert (await queue.wait(job.id, timeout=5)).status is hq.JobStatus.FAILED
    first, second = sorted(
        by_name(exporter)["process default"],
        key=lambda s: dict(s.attributes or {})["hyperqueue.job.attempt"],
    )
    for span in (first, second):
        assert dict(span.attributes or {})["error.type"] == "ConnectionError"
        assert span.status.status_code is StatusCode.ERROR
        assert "exception" in [e.name for e in span.events]
    assert "hyperqueue.job.retry" in [e.name for e in first.events]
    assert dict(first.attributes or {})["hyperqueue.outcome"] == "retry"
    assert dict(second.attributes or {})["hyperqueue.outcome"] == "failed"


async def test_a_deferral_is_an_event(
    tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    clock = FakeClock()
    queue = hq.Queue(tracer_provider=tracer_provider, clock=clock)
    breaker = hq.CircuitBreaker(name="b", failure_threshold=1, clock=clock)

    @queue.task(breaker=breaker)
    async def call() -> None:
        return None

    breaker.record_failure(RuntimeError("down"))
    async with queue, queue.worker():
        await call.enqueue()
        with anyio.fail_after(5):
            while not by_name(exporter).get("process default"):  # noqa: ASYNC110
                await anyio.sleep(0.01)
    span = by_name(exporter)["process default"][0]
    assert [e.name for e in span.events] == ["hyperqueue.job.deferred"]
    assert dict(span.attributes or {})["hyperqueue.outcome"] == "deferred"


def points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    out: dict[str, list[Any]] = {}
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                out.setdefault(metric.name, []).extend(metric.data.data_points)
    return out


async def test_metrics_by_outcome_durations_depth_and_breaker_trips(
    meter_provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    breakers = hq.BreakerRegistry(failure_threshold=1)
    queue = hq.Queue(meter_provider=meter_provider, metrics_interval=0.01, breakers=breakers)
    breaker = breakers.get("mail")

    @queue.task
    async def ok() -> None:
        return None

    @queue.task
    async def bad() -> None:
        raise ValueError("x")

    @queue.task(queue="later")
    async def waiting() -> None:
        return None

    async with queue:
        await waiting.enqueue()  # no worker serves it yet: the depth is 1
        async with queue.worker(queues=["default"]):
            jobs = [await ok.enqueue(), await ok.enqueue(), await bad.enqueue()]
            for job in jobs:
                await queue.wait(job.id, timeout=5)
        breaker.record_failure(RuntimeError("down"))
        with anyio.fail_after(5):
            while queue.telemetry.backlog is None:  # noqa: ASYNC110
                await anyio.sleep(0.01)
    figures = points(reader)
    outcomes = {
        (p.attributes["hyperqueue.task"], p.attributes["hyperqueue.outcome"]): p.value
        for p in figures["hyperqueue.jobs"]
    }
    assert outcomes == {("ok", "completed"): 2, ("bad", "failed"): 1}
    durations = {
        p.attributes.get("error.type"): p.count for p in figures["messaging.process.duration"]
    }
    assert durations == {None: 2, "ValueError": 1}
    assert sum(p.count for p in figures["hyperqueue.job.wait.duration"]) == 3
    depth = {
        p.attributes["messaging.destination.name"]: p.value
        for p in figures["hyperqueue.queue.depth"]
    }
    assert depth == {"later": 1}
    assert next(p.value for p in figures["hyperqueue.queue.lag"]) >= 0
    trips = {
        p.attributes["hyperqueue.breaker"]: p.value for p in figures["hyperqueue.breaker.trips"]
    }
    assert trips["mail"] >= 1


async def test_with_the_sdk_installed_but_not_configured_nothing_is_recorded() -> None:
    import hyperqueue_otel  # importing it configures nothing

    queue = hq.Queue()

    @queue.task
    async def noop() -> None:
        return None

    async with queue, queue.worker():
        job = await noop.enqueue()
        done = await queue.wait(job.id, timeout=5)
    assert done.headers == {}
    assert hyperqueue_otel.current() is None
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    assert not queue.telemetry.active
