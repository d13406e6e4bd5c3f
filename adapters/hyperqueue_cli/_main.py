"""The ``hyperqueue`` command.

``serve`` runs the HTTP server with its worker pool (uvicorn, HTTP/1.1 keep-alive),
``worker`` runs workers alone, ``status`` and ``health`` ask a running server. SIGTERM
or Ctrl-C drains: the server stops taking requests, running jobs finish (within the
drain timeout), and the process exits 0.

``serve`` and ``worker`` read the configuration (defaults, ``--config``, then
``HYPERQUEUE_*`` variables, with or without ``--config``); options given on the command
line win. ``status`` and ``health`` read the client variables ``HYPERQUEUE_URL`` and
``HYPERQUEUE_API_KEY``, which are never configuration keys.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

import click
import httpx
from rich.console import Console
from rich.markup import escape
from rich.table import Table

import hyperqueue as hq

from ._http_limits import apply_front_door, limit_hypercorn, uvicorn_options
from ._load import check_storage, load_queue, use_storage

if TYPE_CHECKING:
    from hyperqueue_litestar import Config

    from ._server import ServerPlan

__all__ = ["load_queue", "main"]

_DEFAULT_URL = "http://127.0.0.1:8000"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(hq.__version__, prog_name="hyperqueue")
def main() -> None:
    """hyperqueue: background jobs, served over HTTP or run by workers."""


def _queue(app: str | None) -> hq.Queue:
    if app is None:
        from hyperqueue_litestar import demo_queue

        return demo_queue()
    return load_queue(app)


def _config(path: Path | None) -> Config:
    """The configuration: the defaults, then ``--config`` when given, then the
    ``HYPERQUEUE_*`` variables (always; the client commands' own are skipped)."""
    from hyperqueue_litestar import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        if path is not None:
            raise click.BadParameter(str(exc), param_hint="--config") from None
        raise click.UsageError(f"invalid configuration: {exc}") from None


_CONFIG_HELP = (
    "TOML file; HYPERQUEUE_* variables override it (and apply without it too); "
    "options given here win."
)


F = TypeVar("F", bound=Callable[..., Any])


def _otel_option(command: F) -> F:
    return click.option(
        "--otel",
        is_flag=True,
        help="Traces and metrics through OpenTelemetry (OTLP over HTTP to "
        "OTEL_EXPORTER_OTLP_ENDPOINT, default http://localhost:4318; pip install "
        "'hyperqueue-jobs[otel]'). serve adds HTTP spans.",
    )(command)


def _observe(config: Config, *, otel: bool, service: str) -> None:
    """The ``[logging]`` keys, and with ``--otel`` the OpenTelemetry SDK, for this process
    (``hyperqueue_otel.configure``: the only place the CLI sets global providers)."""
    from hyperqueue_litestar import configure_logging

    configure_logging(config.logging)
    logging.getLogger("hyperqueue.cli").info(
        "%s starting (pid %d, otel %s)", service, os.getpid(), "on" if otel else "off"
    )
    if not otel:
        return
    try:
        import hyperqueue_otel
    except ImportError as exc:
        raise click.UsageError(str(exc)) from None
    hyperqueue_otel.configure(
        service_name=os.environ.get("OTEL_SERVICE_NAME", service),
        endpoint=os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318"),
        prometheus=False,  # serve has /metrics; OTLP carries the figures
    )


def _pool_options(command: F) -> F:
    """``--concurrency``, ``--drain-timeout`` and ``--config``: shared by ``serve`` and
    ``worker``, which run the same worker pool from the same configuration."""
    for option in reversed(
        (
            click.option(
                "--concurrency",
                type=click.IntRange(1, 10_000),
                default=None,
                help="[default: 10]",
            ),
            click.option(
                "--drain-timeout",
                type=click.FloatRange(0, 3600),
                default=None,
                help="Seconds. [default: 30]",
            ),
            click.option(
                "--config",
                "config_path",
                type=click.Path(exists=True, dir_okay=False, path_type=Path),
                help=_CONFIG_HELP,
            ),
        )
    ):
        command = option(command)
    return command


@main.command()
@click.argument("app", required=False)
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), help="SQLite file.")
@click.option(
    "--dsn",
    default=None,
    help="PostgreSQL database (postgresql://user@host/db; a password from PGPASSWORD).",
)
@click.option("--host", default=None, help="Address to bind.  [default: 127.0.0.1]")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="0: any free port.  [default: 8000]",
)
@_pool_options
@click.option(
    "--server",
    "server_kind",
    type=click.Choice(["uvicorn", "hypercorn"]),
    default="uvicorn",
    show_default=True,
    help="ASGI server: uvicorn (HTTP/1.1) or hypercorn (HTTP/1.1 and HTTP/2, h2c on "
    "plain TCP; pip install 'hyperqueue-jobs[http2]').",
)
@click.option(
    "--allow-open",
    is_flag=True,
    help="Serve with no API keys on an address beyond loopback (anyone who can reach "
    "it can run jobs).",
)
@click.option(
    "--check",
    is_flag=True,
    help="Build the server from the options, the file and the environment, print what "
    "it would run and exit 0, without listening or opening the database.",
)
@_otel_option
def serve(
    app: str | None,
    db: Path | None,
    dsn: str | None,
    host: str | None,
    port: int | None,
    concurrency: int | None,
    drain_timeout: float | None,
    config_path: Path | None,
    server_kind: str,
    allow_open: bool,
    check: bool,
    otel: bool,
) -> None:
    """Serve APP (module:queue) over HTTP with its workers; with no APP, demo tasks.

    State is kept in --db, else where storage.* says (./hyperqueue.db by default); a
    queue built with its own storage keeps it unless storage.* is configured.
    """
    from ._server import build_server

    config = _config(config_path)
    _observe(config, otel=otel and not check, service="hyperqueue-server")
    plan = build_server(
        config,
        _queue(app),
        db=db,
        dsn=dsn,
        host=host,
        port=port,
        concurrency=concurrency,
        drain_timeout=drain_timeout,
        watch=config_path,
    )
    host, port = plan.host, plan.port
    auth, plugin = plan.auth, plan.plugin
    if not check:
        check_storage(plan.queue.storage, "serve")
    loopback = host in ("127.0.0.1", "localhost", "::1")
    if auth.open and not loopback and not allow_open:
        raise click.ClickException(
            f"no API keys configured: an open server listens on loopback only, not {host}; "
            "configure [[keys]] in --config (see docs/guides/security.md) or pass --allow-open"
        )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    if check:
        click.echo(f"hyperqueue serve would listen on http://{shown}:{port}")
        for line in _banner(plan, loopback):
            click.echo(line)
        return

    import uvicorn

    # IPPROTO_TCP named, not 0: asyncio sets TCP_NODELAY only on sockets whose proto says
    # TCP, and accepted connections inherit it; without it Nagle and delayed ACKs add
    # about 40 ms to every request on a kept-alive connection
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    bound = sock.getsockname()[1]

    console = Console(stderr=True)
    console.print(f"hyperqueue serving on http://{shown}:{bound}", soft_wrap=True)
    for line in _banner(plan, loopback, markup=True):
        console.print(line, soft_wrap=True, highlight=False)
    drain_timeout = plan.workers.drain_timeout

    if server_kind == "hypercorn":
        _serve_hypercorn(plan, sock, plugin.shutting_down, drain_timeout)
        console.print("hyperqueue stopped: workers drained")
        return

    class Server(uvicorn.Server):
        """Ends the event streams as soon as a signal arrives, so the server does not
        wait on them before its lifespan drains the workers."""

        _loop: asyncio.AbstractEventLoop | None = None

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            loop = self._loop
            if loop is not None:
                loop.call_soon_threadsafe(plugin.shutting_down)
            super().handle_exit(sig, frame)

        async def serve(self, sockets: list[socket.socket] | None = None) -> None:
            self._loop = asyncio.get_running_loop()
            await super().serve(sockets)

    server = Server(
        uvicorn.Config(
            apply_front_door(plan),
            lifespan="on",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=max(int(drain_timeout), 1) + 5,
            **uvicorn_options(plan.config.server),
        )
    )
    # uvicorn re-raises the signal that stopped it once it is done; after a clean drain
    # that must not kill the process with the signal's default action.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _ignore)
    asyncio.run(server.serve(sockets=[sock]))
    if not server.started:
        raise SystemExit(1)
    console.print("hyperqueue stopped: workers drained")


def _banner(plan: ServerPlan, loopback: bool, *, markup: bool = False) -> list[str]:
    """What the server runs, a line each (the first line, the address, is the caller's)."""
    from ._server import describe_workers

    def colour(text: str, style: str) -> str:
        return f"[{style}]{escape(text)}[/{style}]" if markup else text

    def plain(text: str) -> str:
        return escape(text) if markup else text

    queue = plan.queue
    lines = [
        plain(f"  tasks: {', '.join(sorted(queue.tasks)) or 'none'}; state: {plan.state}"),
        plain(f"  workers: {describe_workers(plan.workers)}"),
    ]
    if plan.retention is not None:
        lines.append(plain(f"  retention: {plan.retention.describe()}"))
    if not plan.auth.open:
        lines.append(plain(f"  API keys: {len(plan.config.keys)} configured"))
    elif loopback:
        lines.append(
            colour("  no API keys configured: the API is open; keep it on loopback", "yellow")
        )
    else:
        lines.append(
            colour(
                "  no API keys configured and listening beyond loopback (--allow-open):"
                " anyone who can reach it can run jobs",
                "bold red",
            )
        )
    lines.extend(colour(f"  warning: {warning}", "yellow") for warning in plan.warnings)
    return lines


def _serve_hypercorn(
    plan: ServerPlan, sock: socket.socket, shutting_down: Any, drain_timeout: float
) -> None:
    """Serve with hypercorn, which speaks HTTP/2 (h2c on plain TCP) as well as HTTP/1.1;
    SIGTERM or SIGINT ends the event streams, then drains through the app's lifespan.
    Request heads are bounded by ``server.max_header_bytes`` (see ``_http_limits``)."""
    try:
        from hypercorn.asyncio import serve as hypercorn_serve
        from hypercorn.config import Config as HypercornConfig
    except ImportError:
        raise click.UsageError(
            "--server hypercorn needs hypercorn: pip install 'hyperqueue-jobs[http2]'"
        ) from None
    config = HypercornConfig()
    config.bind = [f"fd://{sock.fileno()}"]
    config.graceful_timeout = max(drain_timeout, 1.0) + 5.0
    config.accesslog = None
    config.loglevel = "WARNING"
    limit_hypercorn(config, plan.config.server)
    app: Any = apply_front_door(plan)

    async def run() -> None:
        stop = asyncio.Event()

        def on_signal() -> None:
            shutting_down()
            stop.set()

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        await hypercorn_serve(app, config, shutdown_trigger=stop.wait)

    asyncio.run(run())


def _ignore(sig: int, frame: FrameType | None) -> None:
    """Installed after the drain: a repeated signal no longer matters."""


@main.group()
def config() -> None:
    """The server's configuration: defaults, then a TOML file, then HYPERQUEUE_* variables."""


@config.command("show")
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="TOML file; without it, the defaults and the environment.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of TOML.")
def config_show(config_path: Path | None, as_json: bool) -> None:
    """The effective configuration (file + environment + defaults), every key included."""
    from hyperqueue_litestar import ConfigError, dump_config, load_config

    try:
        settings = load_config(config_path)
    except ConfigError as exc:
        click.echo(f"invalid: {exc}", err=True)
        sys.exit(1)
    click.echo(dump_config(settings, format="json" if as_json else "toml").rstrip("\n"))


@config.command("validate")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--no-env", is_flag=True, help="Check the file alone, without HYPERQUEUE_*.")
def config_validate(file: Path, no_env: bool) -> None:
    """Check FILE as `serve --config FILE` would read it: exit 0 and "valid", or exit 1
    with the error naming the key and where its value came from (the file or a variable).
    """
    from hyperqueue_litestar import ConfigError, load_config

    try:
        load_config(file, env={} if no_env else None)
    except ConfigError as exc:
        click.echo(f"invalid: {exc}", err=True)
        sys.exit(1)
    click.echo("valid")


@main.command()
@click.argument("app")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), help="SQLite file.")
@click.option(
    "--dsn",
    default=None,
    help="PostgreSQL database (postgresql://user@host/db; a password from PGPASSWORD).",
)
@_pool_options
@_otel_option
def worker(
    app: str,
    db: Path | None,
    dsn: str | None,
    concurrency: int | None,
    drain_timeout: float | None,
    config_path: Path | None,
    otel: bool,
) -> None:
    """Run workers for APP (module:queue) with no HTTP, until SIGTERM or Ctrl-C.

    Takes storage.*, workers.* and the tenants' max_running from the configuration,
    as `serve` does (the server's own keys, limits and retention are the server's).
    """
    import anyio

    from ._server import describe_workers, watch_slow_jobs, worker_settings

    config = _config(config_path)
    _observe(config, otel=otel, service="hyperqueue-worker")
    queue = _queue(app)
    where, warning = use_storage(queue, config.storage, db, dsn)
    watch_slow_jobs(queue, config)
    check_storage(queue.storage, "worker")
    settings = worker_settings(config, concurrency=concurrency, drain_timeout=drain_timeout)
    for name, quota in config.tenants.items():  # the app's own caps stay if tighter
        queue.tenant_limits[name] = min(
            quota.max_running, queue.tenant_limits.get(name, quota.max_running)
        )
    console = Console(stderr=True)
    console.print(
        f"hyperqueue worker: {settings.concurrency} runners; "
        f"tasks: {', '.join(sorted(queue.tasks))}; state: {where}\n"
        f"  workers: {describe_workers(settings)}",
        soft_wrap=True,
        markup=False,
        highlight=False,
    )
    if warning:
        console.print(f"warning: {warning}", soft_wrap=True, markup=False, style="yellow")

    async def run() -> None:
        async with queue:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as received:
                async with queue.worker(
                    concurrency=settings.concurrency,
                    queues=settings.queues,
                    lease=settings.lease,
                    drain_timeout=settings.drain_timeout,
                    prefetch=settings.prefetch,
                ):
                    async for _ in received:
                        break

    anyio.run(run, backend="asyncio")


def _get(url: str, path: str) -> httpx.Response:
    """GET from a running server, with the key in ``HYPERQUEUE_API_KEY`` when it is set
    (a client variable: ``serve`` does not read it as configuration)."""
    key = os.environ.get("HYPERQUEUE_API_KEY", "").strip()
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        return httpx.get(url.rstrip("/") + path, headers=headers, timeout=10.0)
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach {url}: {exc}") from None


def _checks_table(body: dict[str, Any]) -> Table:
    table = Table(title=f"health: {body.get('status')}  (mode {body.get('mode', '?')})")
    for column in ("check", "status", "latency ms", "message"):
        table.add_column(column)
    colours = {"healthy": "green", "degraded": "yellow", "unhealthy": "red"}
    for name, check in body.get("checks", {}).items():
        status = str(check.get("status"))
        table.add_row(
            name,
            f"[{colours.get(status, 'white')}]{status}[/]",
            f"{check.get('latency_ms', 0):.1f}",
            str(check.get("message") or ""),
        )
    return table


@main.command()
@click.option("--url", default=_DEFAULT_URL, show_default=True, envvar="HYPERQUEUE_URL")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.option("--detailed", is_flag=True, help="Add every health check.")
def status(url: str, as_json: bool, detailed: bool) -> None:
    """Jobs by status per queue on a running server; exit 1 when it is unhealthy."""
    queues_response = _get(url, "/api/v1/queues")
    if queues_response.status_code != 200:
        raise click.ClickException(
            f"{url} answered {queues_response.status_code}: {queues_response.text[:200]}"
        )
    health = _get(url, "/health")
    health_body = health.json()
    queues = queues_response.json()["queues"]
    if as_json:
        document: dict[str, Any] = {"queues": queues, "status": health_body.get("status")}
        if detailed:
            document["health"] = health_body
        click.echo(json.dumps(document, indent=2))
    else:
        console = Console()
        table = Table(title=f"hyperqueue at {url}: {health_body.get('status')}")
        columns = ("queue", "pending", "running", "completed", "failed", "cancelled", "total")
        for column in columns:
            table.add_column(column, justify="left" if column == "queue" else "right")
        for row in queues:
            table.add_row(*(str(row[c]) for c in columns))
        console.print(table)
        if detailed:
            console.print(_checks_table(health_body))
    if health.status_code != 200:
        sys.exit(1)


@main.command()
@click.option("--url", default=_DEFAULT_URL, show_default=True, envvar="HYPERQUEUE_URL")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON body.")
def health(url: str, as_json: bool) -> None:
    """The server's health checks; exit 1 unless it is healthy or degraded."""
    response = _get(url, "/health")
    try:
        body = response.json()
    except ValueError:
        raise click.ClickException(f"{url}/health answered {response.status_code}") from None
    if as_json:
        click.echo(json.dumps(body, indent=2))
    else:
        Console().print(_checks_table(body))
    if response.status_code != 200 or body.get("status") == "unhealthy":
        sys.exit(1)
