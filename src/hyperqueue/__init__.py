"""hyperqueue: an embeddable async job queue, and the resilience parts around jobs.

Errors: everything raised on purpose derives from :class:`HyperqueueError`:
:class:`JobNotFound`, :class:`UnknownTask`, :class:`ArgumentError` (arguments that do
not match a task's signature), :class:`OptionError` (an enqueue option that cannot
work), :class:`InvalidTransition` (cancel a finished job, retry a pending one),
:class:`JobTimeout`, :class:`QuotaExceeded` (a tenant's ``max_queued``) and
:class:`StorageError`.
"""

from __future__ import annotations

from ._breaker import (
    BreakerRegistry,
    BreakerState,
    BreakerStateChanged,
    BreakerStats,
    CircuitBreaker,
)
from ._buffer import BufferStats, MetricsBuffer
from ._cache import Cache, CacheNamespace, CacheStats, cached
from ._clock import Clock, SystemClock
from ._errors import (
    ArgumentError,
    CircuitOpenError,
    HyperqueueError,
    InvalidTransition,
    JobNotFound,
    JobTimeout,
    OptionError,
    QuotaExceeded,
    ScheduleNotFound,
    StorageError,
    UnknownTask,
    WorkflowError,
    WorkflowNotFound,
)
from ._events import (
    Event,
    EventBus,
    EventBusStats,
    EventStream,
    JobCancelled,
    JobCompleted,
    JobDeferred,
    JobEnqueued,
    JobEvent,
    JobFailed,
    JobProgress,
    JobRescued,
    JobRetrying,
    JobStarted,
    QueuePaused,
    QueueResumed,
    ScheduleMissed,
    SubscriberStats,
)
from ._filter import ErrorGroup, FilterError, JobFilter, fingerprint
from ._health import CheckResult, Health, HealthCheck, HealthReport, HealthStatus
from ._hooks import ExecutionHook, JobRun
from ._memory import MemoryStorage
from ._models import (
    Enqueued,
    Job,
    JobStatus,
    Outcome,
    Page,
    Priority,
    QueueStats,
    Schedule,
    Step,
    StoredEvent,
    TaskBacklog,
    WorkerInfo,
    WorkflowRecord,
    WorkflowRun,
    WorkflowStatus,
)
from ._modes import Mode, ModeChanged, ModeController, ModeRefused, ModeState, Operation
from ._queue import Queue
from ._ratelimit import RateLimiter, RateLimitExceeded, RateLimitResult
from ._retry import Attempt, Retry, retry
from ._run import run_worker
from ._services import Service, ServiceStats, Supervisor
from ._slow import SlowJob, SlowJobs
from ._task import JobOptions, Submission, Task, TaskCall
from ._telemetry import Telemetry
from ._worker import Worker, WorkerStats, current_job, report_progress
from ._workflow import StepHandle, Workflow

__version__ = "0.1.0"

__all__ = [
    "ArgumentError",
    "Attempt",
    "BreakerRegistry",
    "BreakerState",
    "BreakerStateChanged",
    "BreakerStats",
    "BufferStats",
    "Cache",
    "CacheNamespace",
    "CacheStats",
    "CheckResult",
    "CircuitBreaker",
    "CircuitOpenError",
    "Clock",
    "Enqueued",
    "ErrorGroup",
    "Event",
    "EventBus",
    "EventBusStats",
    "EventStream",
    "ExecutionHook",
    "FilterError",
    "Health",
    "HealthCheck",
    "HealthReport",
    "HealthStatus",
    "HyperqueueError",
    "InvalidTransition",
    "Job",
    "JobCancelled",
    "JobCompleted",
    "JobDeferred",
    "JobEnqueued",
    "JobEvent",
    "JobFailed",
    "JobFilter",
    "JobNotFound",
    "JobOptions",
    "JobProgress",
    "JobRescued",
    "JobRetrying",
    "JobRun",
    "JobStarted",
    "JobStatus",
    "JobTimeout",
    "MemoryStorage",
    "MetricsBuffer",
    "Mode",
    "ModeChanged",
    "ModeController",
    "ModeRefused",
    "ModeState",
    "Operation",
    "OptionError",
    "Outcome",
    "Page",
    "Priority",
    "Queue",
    "QueuePaused",
    "QueueResumed",
    "QueueStats",
    "QuotaExceeded",
    "RateLimitExceeded",
    "RateLimitResult",
    "RateLimiter",
    "Retry",
    "Schedule",
    "ScheduleMissed",
    "ScheduleNotFound",
    "Service",
    "ServiceStats",
    "SlowJob",
    "SlowJobs",
    "Step",
    "StepHandle",
    "StorageError",
    "StoredEvent",
    "Submission",
    "SubscriberStats",
    "Supervisor",
    "SystemClock",
    "Task",
    "TaskBacklog",
    "TaskCall",
    "Telemetry",
    "UnknownTask",
    "Worker",
    "WorkerInfo",
    "WorkerStats",
    "Workflow",
    "WorkflowError",
    "WorkflowNotFound",
    "WorkflowRecord",
    "WorkflowRun",
    "WorkflowStatus",
    "cached",
    "current_job",
    "fingerprint",
    "report_progress",
    "retry",
    "run_worker",
]
