"""OpenTelemetry set-up for hyperqueue: one call that configures the SDK (extra ``otel``).

The core instruments itself with ``opentelemetry-api`` only and records nothing until an
SDK is configured; choosing the SDK and the exporters is the application's business, or
this module's when asked::

    import hyperqueue_otel

    telemetry = hyperqueue_otel.configure(service_name="billing-worker",
                                          endpoint="http://collector:4318")
    ...
    telemetry.shutdown()   # flushes the spans and figures still buffered

:func:`configure` builds a ``TracerProvider`` (a ``BatchSpanProcessor`` per exporter: OTLP
over HTTP when an endpoint is given or ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set) and a
``MeterProvider`` (a Prometheus reader served on ``prometheus_port``, and OTLP when
there is an endpoint), with the resource attributes (``service.name`` and yours, merged
with ``OTEL_RESOURCE_ATTRIBUTES``) and the sampler. It sets them as the global providers
only when ``set_global=True`` (the default): importing this module sets nothing, and
nothing else in hyperqueue ever sets a global provider.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import hyperqueue as hq

try:
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
    from opentelemetry.sdk.trace.sampling import (
        ParentBased,
        Sampler,
        TraceIdRatioBased,
    )
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f"hyperqueue_otel needs the OpenTelemetry SDK ({exc.name} is missing): "
        "pip install 'hyperqueue-jobs[otel]'"
    ) from exc

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["OtelSetup", "configure", "current"]

_PROMETHEUS_PORT = 9464  # the port OpenTelemetry's Prometheus exporter conventionally uses
_current: OtelSetup | None = None


@dataclass(kw_only=True)
class OtelSetup:
    """What :func:`configure` built: the providers (hand them to ``hq.Queue(...)`` when
    they are not global), and where the figures go."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    resource: Resource
    otlp_endpoint: str | None = None
    prometheus_port: int | None = None
    is_global: bool = False
    _servers: list[Any] = field(default_factory=list)

    def shutdown(self) -> None:
        """Flush and stop the providers (and the Prometheus endpoint)."""
        global _current
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers.clear()
        if _current is self:
            _current = None


def current() -> OtelSetup | None:
    """The set-up of the latest :func:`configure` call in this process, if any."""
    return _current


def _otlp_base(endpoint: str | None) -> str | None:
    base = endpoint or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None
    return base.rstrip("/") if base else None


def configure(
    service_name: str = "hyperqueue",
    *,
    endpoint: str | None = None,
    prometheus: bool = True,
    prometheus_port: int = _PROMETHEUS_PORT,
    prometheus_host: str = "127.0.0.1",
    prometheus_registry: CollectorRegistry | None = None,
    sampler: Sampler | float | None = None,
    resource_attributes: Mapping[str, str | int | float | bool] | None = None,
    span_exporters: Sequence[SpanExporter] = (),
    metric_readers: Sequence[MetricReader] = (),
    metric_interval: float = 60.0,
    set_global: bool = True,
) -> OtelSetup:
    """Configure the OpenTelemetry SDK for this process; see the module docstring.

    ``endpoint``: the OTLP/HTTP base URL (``http://collector:4318``; ``/v1/traces`` and
    ``/v1/metrics`` are added), else ``OTEL_EXPORTER_OTLP_ENDPOINT``, else no OTLP export.
    ``prometheus``: a Prometheus reader for the metrics, served at
    ``http://{prometheus_host}:{prometheus_port}/metrics`` (9464 on loopback by default;
    port 0 serves nothing, and with ``prometheus_registry`` the figures go to that
    registry instead, to be served by the caller).
    ``sampler``: an SDK sampler, or a ratio from 0 to 1 (parent-based: a trace
    sampled upstream stays sampled); ``None`` keeps the SDK's default (always on,
    parent-based, or ``OTEL_TRACES_SAMPLER``).
    ``span_exporters`` / ``metric_readers``: more exporters and readers (tests use the
    SDK's in-memory ones). ``metric_interval``: seconds between OTLP metric exports.
    ``set_global=False`` leaves the global providers alone.
    """
    global _current
    chosen: Sampler | None
    if isinstance(sampler, int | float):
        if isinstance(sampler, bool) or not 0.0 <= sampler <= 1.0:
            raise ValueError("a sampling ratio is a number from 0 to 1")
        chosen = ParentBased(TraceIdRatioBased(float(sampler)))
    else:
        chosen = sampler
    resource = Resource.create({"service.name": service_name, **(resource_attributes or {})})
    tracer_provider = TracerProvider(resource=resource, sampler=chosen)
    base = _otlp_base(endpoint)
    readers: list[MetricReader] = list(metric_readers)
    if base is not None:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        tracer_provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{base}/v1/traces"))
        )
        readers.append(
            PeriodicExportingMetricReader(
                OTLPMetricExporter(endpoint=f"{base}/v1/metrics"),
                export_interval_millis=metric_interval * 1000,
            )
        )
    for exporter in span_exporters:
        tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
    servers: list[Any] = []
    served_port: int | None = None
    if prometheus:
        try:
            from opentelemetry.exporter.prometheus import PrometheusMetricReader
        except ImportError:  # pragma: no cover - depends on the installed extras
            raise ImportError(
                "prometheus=True needs opentelemetry-exporter-prometheus: "
                "pip install 'hyperqueue-jobs[otel]'"
            ) from None
        if prometheus_registry is not None:
            readers.append(PrometheusMetricReader(registry=prometheus_registry))
        else:
            from prometheus_client import CollectorRegistry, start_http_server

            registry = CollectorRegistry(auto_describe=True)
            readers.append(PrometheusMetricReader(registry=registry))
            if prometheus_port:
                server, _ = start_http_server(
                    prometheus_port, addr=prometheus_host, registry=registry
                )
                servers.append(server)
                served_port = server.server_address[1]
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    setup = OtelSetup(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        resource=resource,
        otlp_endpoint=base,
        prometheus_port=served_port,
        is_global=set_global,
        _servers=servers,
    )
    if set_global:
        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(meter_provider)
        hq.Telemetry.refresh_providers()
    _current = setup
    return setup
