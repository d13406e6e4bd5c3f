"""Log lines of ``hyperqueue serve`` and ``hyperqueue worker`` (the ``[logging]`` keys).

- :class:`TraceContextFilter` puts the current OpenTelemetry trace and span ids on each
  record (``trace_id``, ``span_id``: hex, empty outside a span), through
  ``opentelemetry-api``: with no SDK configured there is never a span, and the ids
  stay empty.
- :class:`JsonFormatter`: one JSON object per line: ``time`` (ISO 8601, UTC), ``level``,
  ``logger``, ``message``, the ids, what the call passed in ``extra`` and ``exception``.
- :class:`CompressingFileHandler`: the standard ``RotatingFileHandler`` (by size, kept by
  count) whose rotated files are gzip-compressed (``hq.log.1.gz`` is the newest), and
  which deletes rotated files older than ``max_age`` seconds at each rotation.
- :func:`configure_logging` wires them on the ``hyperqueue`` logger from
  :class:`~hyperqueue_litestar.LoggingSettings` and returns the handler.
"""

from __future__ import annotations

import datetime as dt
import gzip
import logging
import logging.handlers
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
from opentelemetry import trace

from ._config import LoggingSettings

__all__ = [
    "CompressingFileHandler",
    "JsonFormatter",
    "TraceContextFilter",
    "configure_logging",
]

_DAY = 86_400.0
_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "trace_id", "span_id", "taskName"}
)
_encode = msgspec.json.Encoder(enc_hook=repr).encode
_MARK = "_hyperqueue_handler"


class TraceContextFilter(logging.Filter):
    """Adds ``trace_id`` and ``span_id`` (hex; empty outside a recording span) to each
    record; never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            record.trace_id = f"{ctx.trace_id:032x}"
            record.span_id = f"{ctx.span_id:016x}"
        else:
            record.trace_id = record.span_id = ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        trace_id = getattr(record, "trace_id", "")
        if trace_id:
            line["trace_id"] = trace_id
            line["span_id"] = getattr(record, "span_id", "")
        line.update(
            (key, value)
            for key, value in record.__dict__.items()
            if key not in _STANDARD and not key.startswith("_")
        )
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return _encode(line).decode()


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        trace_id = getattr(record, "trace_id", "")
        span_id = getattr(record, "span_id", "")
        return f"{text} [trace_id={trace_id} span_id={span_id}]" if trace_id else text


class CompressingFileHandler(logging.handlers.RotatingFileHandler):
    """Rotates at ``max_bytes``, keeps ``backups`` gzip-compressed files, and deletes
    rotated files older than ``max_age`` seconds when it rotates."""

    def __init__(
        self, path: str | os.PathLike[str], *, max_bytes: int, backups: int, max_age: float
    ) -> None:
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        self.max_age = max_age
        self.namer = _gz_name
        self.rotator = _gzip

    def doRollover(self) -> None:
        if self.backupCount == 0:  # the base class would truncate without keeping any
            if self.stream:
                self.stream.close()
            Path(self.baseFilename).unlink(missing_ok=True)
            self.stream = self._open()
        else:
            super().doRollover()
        self.prune()

    def prune(self, now: float | None = None) -> list[Path]:
        """Delete rotated files older than ``max_age``; returns those deleted."""
        base = Path(self.baseFilename)
        cutoff = (time.time() if now is None else now) - self.max_age
        deleted = []
        for path in base.parent.glob(base.name + ".*.gz"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    deleted.append(path)
            except FileNotFoundError:
                continue
        return deleted


def _gz_name(name: str) -> str:
    return name + ".gz"


def _gzip(source: str, dest: str) -> None:
    with open(source, "rb") as raw, gzip.open(dest, "wb") as packed:
        shutil.copyfileobj(raw, packed)
    os.remove(source)


def configure_logging(settings: LoggingSettings) -> logging.Handler:
    """Send the ``hyperqueue.*`` loggers to one handler as ``settings`` say, replacing
    the handler an earlier call installed; returns it."""
    handler: logging.Handler
    if settings.file is not None:
        Path(settings.file).parent.mkdir(parents=True, exist_ok=True)
        handler = CompressingFileHandler(
            settings.file,
            max_bytes=settings.max_bytes,
            backups=settings.backups,
            max_age=settings.max_age_days * _DAY,
        )
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(TraceContextFilter())
    if settings.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    setattr(handler, _MARK, True)
    logger = logging.getLogger("hyperqueue")
    for old in [h for h in logger.handlers if getattr(h, _MARK, False)]:
        logger.removeHandler(old)
        old.close()
    logger.addHandler(handler)
    logger.setLevel(settings.level.upper())
    logger.propagate = False  # a server's own logging set-up must not print them twice
    return handler
