"""The errors of the HTTP client, and how a server's refusal becomes one.

A refusal that means what a core error means is raised as that error, so code written
against any storage keeps working: 404 for a job is :class:`hyperqueue.JobNotFound`, 409
:class:`hyperqueue.InvalidTransition`, 422 :class:`hyperqueue.UnknownTask` (and the other
checks of a submission), 429 for a tenant's quota :class:`hyperqueue.QuotaExceeded`.
Anything else the caller got wrong is a :class:`RequestRejected` (401
:class:`Unauthorized`, 403 :class:`Forbidden`); a server that cannot answer (connection
refused or lost, timeout, 5xx) is a :class:`ServerUnavailable`, the one kind retried.
"""

from __future__ import annotations

from typing import Any

import msgspec

import hyperqueue as hq

__all__ = [
    "ConnectFailed",
    "Forbidden",
    "HttpError",
    "RequestRejected",
    "ServerUnavailable",
    "Unauthorized",
    "refusal",
]


class HttpError(hq.HyperqueueError):
    """The server answered with an error: ``status_code``, its ``detail`` and ``extra``."""

    def __init__(self, status_code: int, detail: str, extra: Any = None) -> None:
        super().__init__(f"{status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail
        self.extra = extra


class RequestRejected(HttpError):
    """A 4xx with no core error of the same meaning (a bad body, a body too large...)."""

    def __init__(
        self, status_code: int, detail: str, extra: Any = None, *, retry_after: float | None = None
    ) -> None:
        super().__init__(status_code, detail, extra)
        self.retry_after = retry_after


class Unauthorized(RequestRejected):
    """401: no API key, or one the server does not know."""


class Forbidden(RequestRejected):
    """403: the key's role may not do this (a ``worker`` key reads no listing)."""


class ServerUnavailable(hq.StorageError):
    """The server could not answer: the connection failed or broke, the request timed
    out, or a 5xx (``status_code``, else ``None``). Retried where that is safe."""

    def __init__(
        self, message: str, *, status_code: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.retry_after = retry_after


class ConnectFailed(ServerUnavailable):
    """No connection could be made: the request was never sent, so even a call that is
    not idempotent (a claim, a finish) may be sent again."""


class _Body(msgspec.Struct, kw_only=True):
    status_code: int = 0
    detail: str = ""
    extra: Any = None


_decode_body = msgspec.json.Decoder(_Body)


def _retry_after(headers: Any) -> float | None:
    value = headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _with_detail(exc: hq.HyperqueueError, detail: str) -> hq.HyperqueueError:
    exc.args = (detail,)  # the server's words, not a rebuilt message
    return exc


def refusal(status_code: int, content: bytes, headers: Any) -> hq.HyperqueueError:
    """The error for a server's error answer (``{status_code, detail, extra?}``)."""
    try:
        body = _decode_body.decode(content)
    except msgspec.DecodeError:
        body = _Body(detail=content[:200].decode("utf-8", "replace"))
    detail = body.detail or f"HTTP {status_code}"
    extra = body.extra if isinstance(body.extra, dict) else {}
    retry_after = _retry_after(headers)
    if status_code >= 500:
        message = f"server error {status_code}: {detail}"
        return ServerUnavailable(message, status_code=status_code, retry_after=retry_after)
    if status_code == 404:
        if "job_id" in extra:
            return _with_detail(hq.JobNotFound(str(extra["job_id"])), detail)
        if "workflow_id" in extra:
            return _with_detail(hq.WorkflowNotFound(str(extra["workflow_id"])), detail)
        if "schedule" in extra:
            return _with_detail(hq.ScheduleNotFound(str(extra["schedule"])), detail)
    if status_code == 409 and {"job_id", "status", "action"} <= extra.keys():
        return _with_detail(
            hq.InvalidTransition(str(extra["job_id"]), str(extra["status"]), str(extra["action"])),
            detail,
        )
    if status_code == 422:
        if {"task", "reason"} <= extra.keys():
            error: hq.HyperqueueError = hq.ArgumentError(
                str(extra["task"]), str(extra["reason"]), argument=extra.get("argument")
            )
            return _with_detail(error, detail)
        if "task" in extra:
            return _with_detail(hq.UnknownTask(str(extra["task"])), detail)
        if "option" in extra:
            return _with_detail(hq.OptionError(str(extra["option"]), detail), detail)
        if "step" in extra:
            return hq.WorkflowError(detail)
    if status_code == 429 and extra.get("quota") == "max_queued":
        return hq.QuotaExceeded(
            str(extra.get("tenant")), int(extra.get("limit", 0)), int(extra.get("current", 0))
        )
    kind = {401: Unauthorized, 403: Forbidden}.get(status_code, RequestRejected)
    return kind(status_code, detail, body.extra, retry_after=retry_after)
