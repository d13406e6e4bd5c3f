"""Structured log lines with trace and span ids, rotated files (by size, kept by count and
age, gzip-compressed) written for real, and the ``[logging]`` keys taking effect in the
``hyperqueue`` commands (real processes)."""

from __future__ import annotations

import gzip
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from opentelemetry.sdk.trace import TracerProvider

import hyperqueue as hq
from hyperqueue_litestar import (
    CompressingFileHandler,
    ConfigError,
    JsonFormatter,
    LoggingSettings,
    TraceContextFilter,
    configure_logging,
)
from hyperqueue_litestar._config import parse_config

CLI = [sys.executable, "-m", "hyperqueue_cli"]


@pytest.fixture
def restore_hyperqueue_logger() -> Iterator[None]:
    logger = logging.getLogger("hyperqueue")
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    yield
    for handler in list(logger.handlers):
        if handler not in handlers:
            logger.removeHandler(handler)
            handler.close()
    logger.setLevel(level)
    logger.propagate = propagate


def test_json_lines_carry_the_current_trace_and_span_ids(
    tmp_path: Path, tracer_provider: TracerProvider, restore_hyperqueue_logger: None
) -> None:
    path = tmp_path / "hq.log"
    configure_logging(LoggingSettings(format="json", level="info", file=str(path)))
    log = logging.getLogger("hyperqueue.test")
    with tracer_provider.get_tracer("t").start_as_current_span("job") as span:
        log.info("inside %s", "a span", extra={"job_id": "j1"})
    log.warning("outside")
    try:
        raise ValueError("bad")
    except ValueError:
        log.exception("failed")
    inside, outside, failed = (json.loads(line) for line in path.read_text().splitlines())
    ctx = span.get_span_context()
    assert inside["message"] == "inside a span"
    assert inside["trace_id"] == f"{ctx.trace_id:032x}"
    assert inside["span_id"] == f"{ctx.span_id:016x}"
    assert inside["job_id"] == "j1" and inside["level"] == "info"
    assert inside["logger"] == "hyperqueue.test" and inside["time"].endswith("+00:00")
    assert "trace_id" not in outside and outside["level"] == "warning"
    assert "ValueError: bad" in failed["exception"]


def test_text_lines_name_the_trace_too(
    tracer_provider: TracerProvider, capsys: pytest.CaptureFixture[str]
) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(TraceContextFilter())
    record = logging.LogRecord("hyperqueue", logging.INFO, "", 0, "hello", None, None)
    with tracer_provider.get_tracer("t").start_as_current_span("s") as span:
        TraceContextFilter().filter(record)
    assert record.trace_id == f"{span.get_span_context().trace_id:032x}"  # type: ignore[attr-defined]
    assert json.loads(JsonFormatter().format(record))["trace_id"] == record.trace_id  # type: ignore[attr-defined]


def test_files_rotate_by_size_compressed_and_kept_by_count(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "hq.log"
    path.parent.mkdir()
    handler = CompressingFileHandler(path, max_bytes=2048, backups=2, max_age=3600)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.Logger("rotation")
    logger.addHandler(handler)
    for i in range(200):
        logger.info("line %04d %s", i, "x" * 40)
    handler.close()
    names = sorted(p.name for p in path.parent.iterdir())
    assert names == ["hq.log", "hq.log.1.gz", "hq.log.2.gz"]
    newest = gzip.decompress((path.parent / "hq.log.1.gz").read_bytes()).decode()
    older = gzip.decompress((path.parent / "hq.log.2.gz").read_bytes()).decode()
    last_rotated = int(newest.splitlines()[-1].split()[1])
    assert int(older.splitlines()[-1].split()[1]) + 1 == int(newest.splitlines()[0].split()[1])
    assert int(path.read_text().splitlines()[0].split()[1]) == last_rotated + 1
    assert all(size < 2048 for size in (len(newest), len(older)))


def test_rotated_files_older_than_max_age_are_deleted(tmp_path: Path) -> None:
    path = tmp_path / "hq.log"
    handler = CompressingFileHandler(path, max_bytes=1024, backups=5, max_age=86_400)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.Logger("age")
    logger.addHandler(handler)
    for i in range(60):
        logger.info("line %04d %s", i, "y" * 40)
    rotated = sorted(path.parent.glob("hq.log.*.gz"))
    assert len(rotated) >= 2
    old = time.time() - 2 * 86_400
    for stale in rotated:
        os.utime(stale, (old, old))
    for i in range(30):  # one more rotation: the stale files go, the new one stays
        logger.info("more %04d %s", i, "z" * 40)
    handler.close()
    kept = sorted(path.parent.glob("hq.log.*.gz"))
    assert kept and all(p.stat().st_mtime > old + 86_400 for p in kept)
    assert len(kept) < len(rotated) + 1


def test_logging_keys_validate() -> None:
    assert parse_config({"logging": {"format": "json"}}).logging.format == "json"
    with pytest.raises(ConfigError) as info:
        parse_config({"logging": {"format": "xml"}}, source="hq.toml")
    assert info.value.path == "logging.format"
    assert "'text', 'json'" in info.value.reason
    with pytest.raises(ConfigError) as info:
        parse_config({"logging": {"max_bytes": 10}})
    assert info.value.path == "logging.max_bytes"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HYPERQUEUE_", "OTEL_"))}
    env.update(extra)
    return env


def test_serve_takes_the_logging_keys(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    done = subprocess.run(
        [*CLI, "serve", "--check", "--db", str(tmp_path / "jobs.db")],
        env=_env(
            HYPERQUEUE_LOGGING__FORMAT="json",
            HYPERQUEUE_LOGGING__LEVEL="info",
            HYPERQUEUE_LOGGING__FILE=str(log),
        ),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    [line] = [json.loads(text) for text in log.read_text().splitlines()]
    assert line["logger"] == "hyperqueue.cli"
    assert line["message"].startswith("hyperqueue-server starting")


async def _one_job_runs(db: Path) -> None:
    from hyperqueue_sqlite import SQLiteStorage

    queue = hq.Queue(SQLiteStorage(db))

    @queue.task
    async def noop() -> None:  # the producer's declaration of the worker's task
        return None

    async with queue:
        job = await noop.enqueue()
        assert (await queue.wait(job.id, timeout=30)).status is hq.JobStatus.COMPLETED


def test_worker_takes_the_logging_keys_and_otel(tmp_path: Path) -> None:
    pytest.importorskip("apsw", reason="needs the sqlite extra")
    log = tmp_path / "worker.log"
    app = tmp_path / "tasks.py"
    app.write_text(
        "import hyperqueue as hq\nqueue = hq.Queue()\n\n"
        "@queue.task\nasync def noop() -> None:\n    return None\n"
    )
    proc = subprocess.Popen(
        [*CLI, "worker", "tasks:queue", "--db", str(tmp_path / "jobs.db"), "--otel"],
        env=_env(
            PYTHONPATH=str(tmp_path),
            HYPERQUEUE_LOGGING__LEVEL="info",
            HYPERQUEUE_LOGGING__FILE=str(log),
            OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9",  # nothing listens: dropped
            OTEL_EXPORTER_OTLP_TIMEOUT="1",
        ),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while not (log.exists() and "starting" in log.read_text()):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.05)
        anyio.run(_one_job_runs, tmp_path / "jobs.db")  # the worker is up: SIGTERM drains
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()
    text = log.read_text()
    assert "hyperqueue.cli: hyperqueue-worker starting" in text and "otel on" in text
