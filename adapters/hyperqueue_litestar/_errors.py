"""One table from hyperqueue's errors to HTTP statuses, and the handlers that use it.

Everything the caller got wrong is a 4xx with a JSON ``detail`` naming the problem;
only a fault of the server (or an error type nobody mapped) is a 5xx. Refusals that
pass with time (a mode, an open breaker, a rate limit) carry ``Retry-After``.
"""

from __future__ import annotations

import math
from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import ExceptionHandlersMap

from hyperqueue import (
    ArgumentError,
    CircuitOpenError,
    HyperqueueError,
    InvalidTransition,
    JobNotFound,
    JobTimeout,
    ModeRefused,
    OptionError,
    QuotaExceeded,
    RateLimitExceeded,
    ScheduleNotFound,
    StorageError,
    UnknownTask,
    WorkflowError,
    WorkflowNotFound,
)

__all__ = ["STATUS_BY_ERROR", "error_response", "exception_handlers"]

STATUS_BY_ERROR: dict[type[HyperqueueError], int] = {
    JobNotFound: 404,
    ScheduleNotFound: 404,
    WorkflowNotFound: 404,
    WorkflowError: 422,
    UnknownTask: 422,
    ArgumentError: 422,
    OptionError: 422,
    InvalidTransition: 409,
    RateLimitExceeded: 429,
    QuotaExceeded: 429,
    ModeRefused: 503,
    CircuitOpenError: 503,
    StorageError: 503,
    JobTimeout: 504,
    HyperqueueError: 500,
}
"""Status of each error type; a subclass gets its nearest mapped ancestor's."""


def _status(exc: HyperqueueError) -> int:
    for cls in type(exc).__mro__:
        status = STATUS_BY_ERROR.get(cls)
        if status is not None:
            return status
    return 500  # pragma: no cover - HyperqueueError itself is mapped


def _extra(exc: HyperqueueError) -> dict[str, Any] | None:
    if isinstance(exc, ArgumentError):
        return {"task": exc.task, "argument": exc.argument, "reason": exc.reason}
    if isinstance(exc, OptionError):
        return {"option": exc.option}
    if isinstance(exc, UnknownTask):
        return {"task": exc.task}
    if isinstance(exc, InvalidTransition):
        return {"job_id": exc.job_id, "status": exc.status, "action": exc.action}
    if isinstance(exc, JobNotFound):
        return {"job_id": exc.job_id}
    if isinstance(exc, ScheduleNotFound):
        return {"schedule": exc.name}
    if isinstance(exc, WorkflowNotFound):
        return {"workflow_id": exc.workflow_id}
    if isinstance(exc, WorkflowError):
        return {"step": exc.step}
    if isinstance(exc, ModeRefused):
        return {"mode": str(exc.mode), "operation": str(exc.operation)}
    if isinstance(exc, QuotaExceeded):
        return {
            "tenant": exc.tenant,
            "quota": "max_queued",
            "limit": exc.limit,
            "current": exc.queued,
        }
    return None


def error_response(
    status_code: int,
    detail: str,
    extra: Any = None,
    *,
    retry_after: float | None = None,
    headers: dict[str, str] | None = None,
) -> Response[dict[str, Any]]:
    """The JSON error body every failure uses: ``{status_code, detail, extra?}``."""
    body: dict[str, Any] = {"status_code": status_code, "detail": detail}
    if extra is not None:
        body["extra"] = extra
    if retry_after is not None and math.isfinite(retry_after):
        headers = {**(headers or {}), "Retry-After": str(max(math.ceil(retry_after), 1))}
    return Response(body, status_code=status_code, headers=headers, media_type=MediaType.JSON)


def _hyperqueue_error(request: Request[Any, Any, Any], exc: HyperqueueError) -> Response[Any]:
    status = _status(exc)
    retry_after = getattr(exc, "retry_after", None)
    detail = str(exc) if status < 500 or status in (503, 504) else "internal server error"
    return error_response(
        status,
        detail,
        _extra(exc),
        retry_after=retry_after if status in (429, 503) else None,
    )


def _validation_error(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    """Litestar says "Validation failed for POST /path"; name the field instead."""
    problems = exc.extra if isinstance(exc.extra, list) else []
    messages = [str(p.get("message")) for p in problems if isinstance(p, dict) and p.get("message")]
    if messages:
        where = problems[0].get("key") if isinstance(problems[0], dict) else None
        detail = "invalid request: " + "; ".join(messages)
        if where and where != "data" and where not in detail:
            detail += f" (parameter {where!r})"
    else:
        detail = f"invalid request: {exc.detail}"
    return error_response(400, detail, problems or None)


def _too_deep(request: Request[Any, Any, Any], exc: RecursionError) -> Response[Any]:
    return error_response(400, "invalid request: the JSON body is nested too deeply")


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    detail = exc.detail
    if exc.status_code == 413:
        limit = request.route_handler.resolve_request_max_body_size()
        detail = f"request body too large: the limit is {limit} bytes"
    return error_response(exc.status_code, detail, exc.extra, headers=dict(exc.headers or {}))


def exception_handlers() -> ExceptionHandlersMap:
    """Handlers for the app: hyperqueue errors by the table, validation with the field
    named, a body nested too deep as 400, other HTTP errors in the same JSON shape."""
    return {
        HyperqueueError: _hyperqueue_error,
        ValidationException: _validation_error,
        RecursionError: _too_deep,
        HTTPException: _http_error,
    }
