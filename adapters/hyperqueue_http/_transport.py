"""One pooled HTTP connection to a server, with retries and a circuit breaker.

Every call goes through a :class:`hyperqueue.CircuitBreaker` (5 failures in a row open it
for 5 s: while it is open calls fail at once with :class:`hyperqueue.CircuitOpenError`
instead of waiting on timeouts), and through a :class:`hyperqueue.Retry`: 3 attempts,
50 ms doubling to at most 1 s. Only :class:`ServerUnavailable` is retried, and only where
sending twice is harmless: reads, lease renewals, starts and progress (idempotent) on
any transport failure or 5xx; a claim, a finish or an enqueue only when the connection
could not be made (:class:`ConnectFailed`: nothing was sent). A refusal (4xx) is an
answer: never retried, and never counted against the breaker.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import httpx

import hyperqueue as hq

from ._errors import ConnectFailed, HttpError, ServerUnavailable, refusal

__all__ = ["DEFAULT_RETRY", "Transport"]

DEFAULT_RETRY = hq.Retry(3, backoff=0.05, max_backoff=1.0, jitter=0.05, on=ServerUnavailable)
"""Retries of idempotent calls: 3 attempts, 50 ms doubling, at most 1 s, plus jitter."""

_ANSWERS = (
    HttpError,
    hq.JobNotFound,
    hq.WorkflowNotFound,
    hq.ScheduleNotFound,
    hq.InvalidTransition,
    hq.UnknownTask,
    hq.ArgumentError,
    hq.OptionError,
    hq.WorkflowError,
    hq.QuotaExceeded,
)
"""Refusals: the server is up and answered, so they say nothing of its health."""


class Transport:
    """``request`` sends a call and returns the response's body, or raises the refusal."""

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None,
        timeout: float,
        retry: hq.Retry | None,
        breaker: hq.CircuitBreaker | None,
        http2: bool | None,
        max_connections: int,
        transport: httpx.AsyncBaseTransport | None,
        headers: dict[str, str] | None,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.breaker = (
            breaker
            if breaker is not None
            else hq.CircuitBreaker(f"hyperqueue_http {self.url}", open_for=5.0, ignore=_ANSWERS)
        )
        policy = retry if retry is not None else DEFAULT_RETRY
        self._idempotent = policy.wrap(self._send, breaker=self.breaker)
        self._once = hq.Retry(
            policy.attempts,
            backoff=policy.backoff,
            multiplier=policy.multiplier,
            max_backoff=policy.max_backoff,
            jitter=policy.jitter,
            on=ConnectFailed,
        ).wrap(self._send, breaker=self.breaker)
        sent = {"User-Agent": f"hyperqueue-http/{hq.__version__}", **(headers or {})}
        if api_key is not None:
            sent["Authorization"] = f"Bearer {api_key}"
        self._options: dict[str, Any] = {
            "base_url": self.url,
            "headers": sent,
            "timeout": timeout,
            "http2": http2 if http2 is not None else importlib.util.find_spec("h2") is not None,
            "limits": httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            "transport": transport,
        }
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(**self._options)
        return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        params: dict[str, Any] | None = None,
        idempotent: bool,
        timeout: float | None = None,
        accept: tuple[int, ...] = (),
    ) -> tuple[int, bytes]:
        """``(status, body)`` of a 2xx answer or of one whose status is in ``accept``."""
        send = self._idempotent if idempotent else self._once
        return await send(method, path, body, params, timeout, accept)

    async def _send(
        self,
        method: str,
        path: str,
        body: bytes | None,
        params: dict[str, Any] | None,
        timeout: float | None,
        accept: tuple[int, ...],
    ) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json"} if body is not None else None
        try:
            response = await self.client.request(
                method,
                path,
                content=body,
                params=params,
                headers=headers,
                timeout=timeout if timeout is not None else self.timeout,
            )
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise ConnectFailed(f"cannot connect to {self.url}: {exc!r}") from exc
        except httpx.TransportError as exc:
            raise ServerUnavailable(f"{method} {path} to {self.url} failed: {exc!r}") from exc
        status = response.status_code
        if status < 300 or status in accept:
            return status, response.content
        raise refusal(status, response.content, response.headers)
