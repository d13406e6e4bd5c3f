"""A producer or a worker process on a shared SQLite file, with the OpenTelemetry SDK
configured by ``hyperqueue_otel.configure`` (global providers, as an application would)
and an in-memory exporter; prints the spans it recorded as JSON, one per line.

Run with ``sys.executable otel_app.py MODE DB``:

- ``produce DB``: enqueues one job of ``greet`` inside a span ``request``.
- ``work DB``: runs a worker until that job is done (at most 20 s).
"""

from __future__ import annotations

import json
import sys

import anyio
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import hyperqueue as hq
import hyperqueue_otel
from hyperqueue_sqlite import SQLiteStorage


def make_queue(db: str) -> hq.Queue:
    queue = hq.Queue(SQLiteStorage(db))

    @queue.task(queue="mail")
    async def greet(name: str) -> str:
        with trace.get_tracer("app").start_as_current_span("compose"):
            return f"hello {name}"

    return queue


def dump(span: ReadableSpan) -> str:
    ctx = span.context
    return json.dumps(
        {
            "name": span.name,
            "kind": span.kind.name,
            "trace_id": f"{ctx.trace_id:032x}",
            "span_id": f"{ctx.span_id:016x}",
            "parent": None if span.parent is None else f"{span.parent.span_id:016x}",
            "links": [
                [f"{link.context.trace_id:032x}", f"{link.context.span_id:016x}"]
                for link in span.links
            ],
            "attributes": dict(span.attributes or {}),
            "service": span.resource.attributes.get("service.name"),
        }
    )


async def produce(db: str) -> None:
    queue = make_queue(db)
    async with queue:
        with trace.get_tracer("app").start_as_current_span("request"):
            job = await queue.enqueue("greet", args=["ada"])
    print(json.dumps({"job": job.id, "headers": job.headers}), flush=True)


async def work(db: str) -> None:
    queue = make_queue(db)
    async with queue, queue.worker(concurrency=2):
        with anyio.fail_after(20):
            while True:
                jobs = (await queue.list_jobs(status="completed")).items
                if jobs:
                    break
                await anyio.sleep(0.05)


def main() -> None:
    mode, db = sys.argv[1:3]
    exporter = InMemorySpanExporter()
    setup = hyperqueue_otel.configure(
        service_name=f"otel-app-{mode}", prometheus=False, span_exporters=[exporter]
    )
    assert setup.is_global and trace.get_tracer_provider() is setup.tracer_provider
    anyio.run(produce if mode == "produce" else work, db)
    setup.shutdown()  # flushes the batch processor into the exporter
    for span in exporter.get_finished_spans():
        print(dump(span), flush=True)


if __name__ == "__main__":
    main()
