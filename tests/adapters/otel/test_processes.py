"""Producer and consumer spans across two real processes on one SQLite file: the trace
context travels in the job, and the consumer's span links to the producer's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("apsw", reason="needs the sqlite extra")

APP = Path(__file__).with_name("otel_app.py")


def run(mode: str, db: Path) -> list[dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, str(APP), mode, str(db)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def test_the_consumer_in_another_process_links_to_the_producer(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    produced = run("produce", db)
    job = produced[0]
    spans = {span["name"]: span for span in produced[1:]}
    request, send = spans["request"], spans["send mail"]
    assert send["kind"] == "PRODUCER" and send["parent"] == request["span_id"]
    assert send["trace_id"] == request["trace_id"]
    assert send["service"] == "otel-app-produce"
    assert send["attributes"]["messaging.message.id"] == job["job"]
    assert job["headers"]["traceparent"].startswith(f"00-{send['trace_id']}-{send['span_id']}-")

    consumed = {span["name"]: span for span in run("work", db)}
    process, compose = consumed["process mail"], consumed["compose"]
    assert process["kind"] == "CONSUMER"
    assert process["service"] == "otel-app-work"
    assert process["links"] == [[send["trace_id"], send["span_id"]]]
    assert process["parent"] is None and process["trace_id"] != send["trace_id"]
    assert process["attributes"] == {
        "messaging.system": "hyperqueue",
        "messaging.operation.name": "process",
        "messaging.operation.type": "process",
        "messaging.destination.name": "mail",
        "messaging.message.id": job["job"],
        "messaging.client.id": process["attributes"]["messaging.client.id"],
        "hyperqueue.task": "greet",
        "hyperqueue.job.attempt": 1,
        "hyperqueue.outcome": "completed",
    }
    assert compose["parent"] == process["span_id"]
