"""hyperqueue_litestar: serve a hyperqueue queue over HTTP with Litestar.

``HyperqueuePlugin(queue)`` adds the REST API, health endpoints and the live event
stream to any Litestar app and runs the queue's workers in its lifespan;
``create_app(queue)`` builds a standalone app. Install with
``pip install 'hyperqueue-jobs[server]'``.
"""

from __future__ import annotations

try:
    import litestar  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "hyperqueue_litestar needs litestar: pip install 'hyperqueue-jobs[server]'"
    ) from exc

from ._app import create_app
from ._audit import Audit, AuditPage, AuditRecord, AuditSink, MemoryAuditSink, SQLiteAuditSink
from ._audit_postgres import PostgresAuditSink
from ._auth import Auth, KeyRing, KeyUsage
from ._config import (
    ApiKey,
    Config,
    ConfigError,
    ConfigHistory,
    ConfigVersion,
    ConfigWatcher,
    LoggingSettings,
    MemoryConfigStore,
    RetentionSettings,
    ServerSettings,
    StorageSettings,
    WorkerSettings,
    diff_configs,
    dump_config,
    load_config,
)
from ._config_routes import (
    ConfigApi,
    ConfigApplied,
    ConfigConflict,
    ConfigVersionInfo,
    LiveSetting,
    restart_required,
)
from ._config_safety import is_loopback
from ._dashboard import SessionInfo, WorkersResponse
from ._demo import demo_queue
from ._errors import STATUS_BY_ERROR
from ._health import UNSERVED_AFTER
from ._limits import RateLimitMiddleware
from ._logging import CompressingFileHandler, JsonFormatter, TraceContextFilter, configure_logging
from ._metrics import Metrics
from ._plugin import DEFAULT_MAX_BODY_SIZE, HyperqueuePlugin
from ._schemas import (
    BatchItem,
    BatchRequest,
    BatchResponse,
    ErrorBody,
    HealthBody,
    JobRequest,
    JobTemplate,
    QueueFigures,
    QueuesResponse,
)
from ._security import (
    AccessDenied,
    AuthenticationFailed,
    RateLimited,
    SlowRequest,
    SuspiciousActivity,
)

__all__ = [
    "AccessDenied",
    "ApiKey",
    "Audit",
    "AuditPage",
    "AuditRecord",
    "AuditSink",
    "Auth",
    "AuthenticationFailed",
    "BatchItem",
    "BatchRequest",
    "BatchResponse",
    "CompressingFileHandler",
    "Config",
    "ConfigApi",
    "ConfigApplied",
    "ConfigConflict",
    "ConfigError",
    "ConfigHistory",
    "ConfigVersion",
    "ConfigVersionInfo",
    "ConfigWatcher",
    "DEFAULT_MAX_BODY_SIZE",
    "ErrorBody",
    "HealthBody",
    "HyperqueuePlugin",
    "JobRequest",
    "JobTemplate",
    "JsonFormatter",
    "KeyRing",
    "KeyUsage",
    "LiveSetting",
    "LoggingSettings",
    "MemoryAuditSink",
    "MemoryConfigStore",
    "Metrics",
    "PostgresAuditSink",
    "QueueFigures",
    "QueuesResponse",
    "RateLimitMiddleware",
    "RateLimited",
    "RetentionSettings",
    "SQLiteAuditSink",
    "STATUS_BY_ERROR",
    "SessionInfo",
    "ServerSettings",
    "SlowRequest",
    "StorageSettings",
    "SuspiciousActivity",
    "TraceContextFilter",
    "UNSERVED_AFTER",
    "WorkerSettings",
    "WorkersResponse",
    "configure_logging",
    "create_app",
    "demo_queue",
    "diff_configs",
    "dump_config",
    "is_loopback",
    "load_config",
    "restart_required",
]
