"""The CLI's HTTP client: one place that knows the server's address, sends the API key
and turns every way a request can fail into one line and an exit status.

The key comes from ``--api-key`` or ``HYPERQUEUE_API_KEY`` (a client variable, never
configuration) and travels as ``Authorization: Bearer``. Errors the server answers are
JSON ``{status_code, detail, extra?}``; the ``detail`` is what the user reads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import click
import httpx

from . import _exit
from ._exit import CliError

__all__ = ["DEFAULT_URL", "Client", "server_options"]

DEFAULT_URL = "http://127.0.0.1:8000"

_BY_STATUS = {
    400: _exit.USAGE,
    401: _exit.AUTH,
    403: _exit.AUTH,
    404: _exit.NOT_FOUND,
    409: _exit.CONFLICT,
    413: _exit.USAGE,
    422: _exit.USAGE,
    429: _exit.BUSY,
    503: _exit.BUSY,
}


class Client:
    """A connection-pooled client for one server (use as a context manager)."""

    def __init__(self, url: str, api_key: str | None = None, *, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        key = (api_key or "").strip()
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.has_key = bool(key)
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._http.close()

    def send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """The response, whatever its status; a transport failure is exit status 3."""
        try:
            return self._http.request(
                method, path, json=json, params=params, content=content, headers=headers
            )
        except httpx.TimeoutException:
            raise CliError(
                f"{self.url} did not answer {method} {path} in time", _exit.UNREACHABLE
            ) from None
        except httpx.HTTPError as exc:
            reason = "connection refused" if isinstance(exc, httpx.ConnectError) else str(exc)
            raise CliError(
                f"cannot reach {self.url}: {reason} (is `hyperqueue serve` running there? "
                "--url or HYPERQUEUE_URL name another server)",
                _exit.UNREACHABLE,
            ) from None

    def call(self, method: str, path: str, **options: Any) -> Any:
        """The JSON body of a 2xx answer; any other answer raises :class:`CliError`."""
        response = self.send(method, path, **options)
        if not response.is_success:
            raise self.error(response)
        if not response.content:
            return None
        return response.json()

    def get(self, path: str, **params: Any) -> Any:
        return self.call("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: Any = None) -> Any:
        return self.call("POST", path, json=body)

    def error(self, response: httpx.Response) -> CliError:
        """The one line and exit status for an answer that is not a success."""
        status = response.status_code
        detail = _detail(response)
        if status == 401:
            hint = (
                "the key was refused"
                if self.has_key
                else "it needs an API key: set HYPERQUEUE_API_KEY or pass --api-key"
            )
            message = f"{self.url} answered 401: {hint}"
        elif status == 403:
            message = f"{self.url} answered 403: {detail}"
        else:
            message = f"{response.request.method} {response.request.url.path}: {detail}"
        return CliError(message, _BY_STATUS.get(status, _exit.FAILED))


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code} {response.text[:200]}".rstrip()
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])
    return f"HTTP {response.status_code}"


F = TypeVar("F", bound=Callable[..., Any])


def server_options(command: F) -> F:
    """``--url`` and ``--api-key``, for every command that talks to a server."""
    command = click.option(
        "--api-key",
        envvar="HYPERQUEUE_API_KEY",
        default=None,
        show_envvar=True,
        help="API key sent as a Bearer token.",
    )(command)
    return click.option(
        "--url",
        envvar="HYPERQUEUE_URL",
        default=DEFAULT_URL,
        show_default=True,
        show_envvar=True,
        callback=_detached_url,
        help="The server's address; when not given, that of the server started with "
        "`serve --detach` in this folder (./hyperqueue.pid), if it runs.",
    )(command)


def _detached_url(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """The URL of ./hyperqueue.pid's live server when no --url or HYPERQUEUE_URL says
    otherwise."""
    from click.core import ParameterSource

    from ._daemon import DEFAULT_PID_FILE, alive, read_pid_file

    if param.name is None or ctx.get_parameter_source(param.name) is not ParameterSource.DEFAULT:
        return value
    info = read_pid_file(DEFAULT_PID_FILE)
    if info is not None and info.url and alive(info.pid):
        return info.url
    return value
