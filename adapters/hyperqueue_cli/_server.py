"""What ``hyperqueue serve`` runs, built from its configuration.

:func:`build_server` is the one place where the configuration (defaults, then the TOML
file, then ``HYPERQUEUE_*`` variables) becomes a server, so every key that validates
takes effect here, and options given on the command line win over it:

- ``server.*``: the address (``host``, ``port``), the body limit (``max_body_bytes``)
  and the slow-request threshold (``slow_request_ms``, through ``Metrics``);
- ``storage.*``: the queue's storage (:func:`~._load.use_storage`);
- ``workers.*``: every option of the server's worker pool (:func:`worker_settings`);
- ``keys``, ``tenants``, ``rate_limits``: authentication, quotas and limits, which
  also change while running (``ConfigApi``), never so as to open a server beyond
  loopback or lock its admins out (``hyperqueue_litestar._config_safety``);
- ``retention.*``: :class:`Retention`, a supervised service that prunes finished jobs;
- ``templates``: named job defaults, defined on the queue (``queue.template``);
- ``logging.*``: set by the command before this runs (``configure_logging``), as for
  ``hyperqueue worker``; with ``--otel``, HTTP spans from Litestar's OpenTelemetry
  plugin.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Litestar
from litestar.config.app import AppConfig
from litestar.plugins import InitPlugin

import hyperqueue as hq

from ._load import use_storage

if TYPE_CHECKING:
    from hyperqueue_litestar import (
        Auth,
        Config,
        HyperqueuePlugin,
        RetentionSettings,
        WorkerSettings,
    )
    from hyperqueue_postgres import PostgresStorage
    from hyperqueue_sqlite import RetentionPolicy, SQLiteStorage

__all__ = ["Retention", "ServerPlan", "build_server", "retention_policy", "worker_settings"]

_DAY = 86_400.0
_MiB = 1 << 20


def worker_settings(
    config: Config, *, concurrency: int | None = None, drain_timeout: float | None = None
) -> WorkerSettings:
    """``config.workers`` with the options given on the command line on top."""
    changes: dict[str, Any] = {}
    if concurrency is not None:
        changes["concurrency"] = concurrency
    if drain_timeout is not None:
        changes["drain_timeout"] = drain_timeout
    return msgspec.structs.replace(config.workers, **changes)


def describe_workers(workers: WorkerSettings) -> str:
    """One line about a worker pool's settings, for people."""
    queues = ", ".join(workers.queues) if workers.queues else "all"
    return (
        f"{workers.concurrency} (queues: {queues}; lease {workers.lease:g} s; "
        f"prefetch {workers.prefetch}; drain {workers.drain_timeout:g} s)"
    )


def retention_policy(settings: RetentionSettings) -> RetentionPolicy:
    """The SQLite adapter's policy for ``retention.*``: ``max_age_days`` in seconds,
    ``min_free_disk_mb`` in bytes (MiB), the archive folder as it is."""
    from hyperqueue_sqlite import RetentionPolicy

    return RetentionPolicy(
        keep_for=settings.max_age_days * _DAY,
        archive_dir=settings.archive_dir,
        min_free_bytes=settings.min_free_disk_mb * _MiB,
    )


class Retention(InitPlugin):
    """Enforces a :class:`~hyperqueue_sqlite.RetentionPolicy` for the app's lifespan,
    under a :class:`hyperqueue.Supervisor`, at start and then every ``interval`` seconds
    (plus up to 10 % jitter). A failed run is logged and retried with backoff.

    - On a SQLite storage: ``hyperqueue_sqlite.maintenance_service`` (prune, archive
      first when a folder is named, prune harder and vacuum when the disk is low,
      ``PRAGMA optimize``).
    - On a PostgreSQL storage: ``hyperqueue_postgres.retention_service`` with the
      policy's ``keep_for`` and ``archive_dir`` only. The disk-space part
      (``min_free_bytes``, ``low_disk_keep_for``) is about SQLite's file on this host;
      a PostgreSQL server's disk is not this process's to watch, so it is not applied.

    Add it after the :class:`~hyperqueue_litestar.HyperqueuePlugin` (``create_app``'s
    ``plugins=``): its lifespan then runs inside the plugin's, while the storage is open.
    :meth:`check` is a health check (the service's: healthy while it runs on schedule).
    """

    __slots__ = ("clock", "interval", "policy", "service", "storage")

    def __init__(
        self,
        storage: SQLiteStorage | PostgresStorage,
        policy: RetentionPolicy,
        *,
        interval: float = 3600.0,
        clock: hq.Clock | None = None,
    ) -> None:
        self.storage = storage
        self.policy = policy
        self.interval = interval
        self.clock: hq.Clock = clock if clock is not None else hq.SystemClock()
        self.service: hq.Service | None = None

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        app_config.lifespan.append(self.lifespan)
        return app_config

    @asynccontextmanager
    async def lifespan(self, app: Litestar) -> AsyncIterator[None]:
        from hyperqueue_sqlite import SQLiteStorage, maintenance_service

        if isinstance(self.storage, SQLiteStorage):
            service = maintenance_service(
                self.storage,
                policy=self.policy,
                interval=self.interval,
                clock=self.clock,
                name="retention",
            )
        else:
            from hyperqueue_postgres import retention_service

            service = retention_service(
                self.storage,
                keep_for=self.policy.keep_for,
                archive_dir=self.policy.archive_dir,
                interval=self.interval,
                clock=self.clock,
                name="retention",
            )
        async with hq.Supervisor(clock=self.clock) as supervisor:
            self.service = supervisor.add(service)
            yield

    async def check(self) -> hq.CheckResult | None:
        if self.service is None:
            return hq.CheckResult(status=hq.HealthStatus.UNHEALTHY, message="not started")
        return await self.service.check()

    def describe(self) -> str:
        """One line about what it does, for people."""
        policy = self.policy
        text = f"finished jobs pruned after {policy.keep_for / _DAY:g} days"
        if policy.archive_dir:
            text += f", archived to {policy.archive_dir}"
        if policy.min_free_bytes and _postgres_storage(self.storage) is None:
            text += (
                f" ({policy.low_disk_keep_for / 3600:g} h under "
                f"{policy.min_free_bytes // _MiB} MiB free disk)"
            )
        return f"{text}; every {self.interval:g} s"


def _http_spans() -> Any:
    """Litestar's OpenTelemetry plugin (HTTP server spans), when ``hyperqueue_otel``
    configured the SDK in this process (``serve --otel``); else ``None``."""
    otel = sys.modules.get("hyperqueue_otel")
    if otel is None or otel.current() is None:
        return None
    from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin

    setup = otel.current()
    return OpenTelemetryPlugin(
        OpenTelemetryConfig(
            tracer_provider=setup.tracer_provider,
            meter_provider=setup.meter_provider,
            exclude=["/metrics", "/health"],
        )
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class ServerPlan:
    """A server ready to run: the app and what it was built from, for the banner."""

    app: Litestar
    plugin: HyperqueuePlugin
    queue: hq.Queue
    config: Config
    """The configuration from the file and the environment (what the config API serves;
    the command line's options are not in it)."""
    auth: Auth
    host: str
    port: int
    workers: WorkerSettings
    """The pool's settings: ``config.workers`` with the command line's options on top."""
    state: str
    """Where the jobs live, for people."""
    retention: Retention | None
    warnings: tuple[str, ...]


def build_server(
    config: Config,
    queue: hq.Queue,
    *,
    db: Path | None = None,
    dsn: str | None = None,
    host: str | None = None,
    port: int | None = None,
    concurrency: int | None = None,
    drain_timeout: float | None = None,
    watch: Path | None = None,
) -> ServerPlan:
    """The app ``hyperqueue serve`` runs for ``queue`` with ``config``; the keyword
    options are the command line's and win over the configuration. ``watch`` is the
    configuration file to reload while running. Puts ``queue`` on its storage."""
    from hyperqueue_litestar import (
        Audit,
        Auth,
        ConfigApi,
        HyperqueuePlugin,
        MemoryAuditSink,
        MemoryConfigStore,
        Metrics,
        PostgresAuditSink,
        RateLimitMiddleware,
        SQLiteAuditSink,
        create_app,
        is_loopback,
    )
    from hyperqueue_sqlite import ConfigStore, SQLiteStorage

    bind = host if host is not None else config.server.host
    warnings: list[str] = []
    state, warning = use_storage(queue, config.storage, db, dsn)
    if warning:
        warnings.append(warning)
    workers = worker_settings(config, concurrency=concurrency, drain_timeout=drain_timeout)
    watch_slow_jobs(queue, config)
    max_body = config.server.max_body_bytes

    auth = Auth.from_config(queue, config, max_body_size=max_body)
    limits = RateLimitMiddleware(queue, config.rate_limits)
    metrics = Metrics(queue, slow_request_ms=config.server.slow_request_ms)
    storage = queue.storage
    sqlite = storage.path if isinstance(storage, SQLiteStorage) else None
    pg_storage = _postgres_storage(storage)
    postgres = None if pg_storage is None else pg_storage.dsn  # the whole server on it
    audit_sink: Any = MemoryAuditSink()
    store: Any = MemoryConfigStore()
    if sqlite:
        assert isinstance(storage, SQLiteStorage)
        audit_sink, store = SQLiteAuditSink(sqlite, storage=storage), ConfigStore(sqlite)
    elif postgres:
        from hyperqueue_postgres import ConfigStore as PostgresConfigStore

        audit_sink, store = PostgresAuditSink(postgres), PostgresConfigStore(postgres)
    # API keys, tenant quotas, rate limits and the slow-request threshold change live:
    # through the API (admin) or by editing the watched file; a change may leave the
    # server without keys only when it listens on loopback.
    config_api = ConfigApi(
        queue,
        config,
        store=store,
        targets=[auth, limits, metrics],
        guards=[auth.guard],
        watch=watch,
        loopback=is_loopback(bind),
    )
    plugins: list[Any] = [metrics, Audit(queue, audit_sink, guards=[auth.guard]), config_api]
    retention: Retention | None = None
    if isinstance(storage, SQLiteStorage):
        retention = Retention(
            storage,
            retention_policy(config.retention),
            interval=config.retention.interval_seconds,
            clock=queue.clock,
        )
        plugins.append(retention)
    elif pg_storage is not None:  # keep_for and archive_dir: the disk rule is SQLite's
        retention = Retention(
            pg_storage,
            retention_policy(config.retention),
            interval=config.retention.interval_seconds,
            clock=queue.clock,
        )
        plugins.append(retention)
    elif isinstance(storage, hq.MemoryStorage):
        warnings.append(
            "retention.*: not applied to memory storage: finished jobs stay in memory "
            "until the process ends"
        )
    else:
        warnings.append(
            f"retention.*: not applied: {storage!r} has no retention yet (prune finished "
            "jobs with your own schedule)"
        )
    http_spans = _http_spans()
    if http_spans is not None:
        plugins.append(http_spans)
    app = create_app(
        queue,
        concurrency=workers.concurrency,
        queues=workers.queues,
        lease=workers.lease,
        drain_timeout=workers.drain_timeout,
        prefetch=workers.prefetch,
        templates=config.templates,
        max_body_size=max_body,
        guards=[auth.guard],
        middleware=[auth.middleware, limits],
        plugins=plugins,
    )
    plugin = app.plugins.get(HyperqueuePlugin)
    if retention is not None:
        plugin.health.add("retention", retention.check, critical=False)
    return ServerPlan(
        app=app,
        plugin=plugin,
        queue=queue,
        config=config,
        auth=auth,
        host=bind,
        port=port if port is not None else config.server.port,
        workers=workers,
        state=state,
        retention=retention,
        warnings=tuple(warnings),
    )


def _postgres_storage(storage: object) -> PostgresStorage | None:
    """``storage`` if it is a PostgreSQL storage (None for any other, or without the
    extra)."""
    try:
        from hyperqueue_postgres import PostgresStorage
    except ImportError:
        return None
    return storage if isinstance(storage, PostgresStorage) else None


def watch_slow_jobs(queue: hq.Queue, config: Config) -> None:
    """Report runs of ``workers.slow_job_seconds`` or more (see :class:`hq.SlowJobs`)."""
    after = config.workers.slow_job_seconds
    if after is not None and not any(isinstance(h, hq.SlowJobs) for h in queue.hooks):
        queue.hooks.append(hq.SlowJobs(queue, after=after))
