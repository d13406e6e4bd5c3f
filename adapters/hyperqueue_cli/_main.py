"""The ``hyperqueue`` command.

``serve`` runs the HTTP server with its worker pool (uvicorn, HTTP/1.1 keep-alive, on
uvloop when it is installed), in the foreground or with ``--detach`` in the background
under a pid file (``stop`` ends it); ``worker`` runs workers alone. SIGTERM or Ctrl-C
drains: the server stops taking requests, running jobs finish (within the drain
timeout), and the process exits 0.

The operator's commands ask a running server: ``status``, ``health``, ``insights``,
``jobs``, ``dlq``, ``queues``, ``keys`` (``status``, ``jobs list|show``, ``dlq list`` and
``queues`` also use a database directly with ``--db`` / ``--dsn``). They read the client
variables ``HYPERQUEUE_URL`` and ``HYPERQUEUE_API_KEY`` (or ``--url``, ``--api-key``),
which are never configuration keys, and exit with the statuses of :mod:`._exit`.

``serve`` and ``worker`` read the configuration (defaults, ``--config``, then
``HYPERQUEUE_*`` variables, with or without ``--config``); options given on the command
line win.
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
from click.core import ParameterSource
from rich.console import Console
from rich.markup import escape
from rich.table import Table

import hyperqueue as hq

from . import _exit
from ._client import Client, server_options
from ._daemon import (
    DEFAULT_LOG_FILE,
    DEFAULT_PID_FILE,
    alive,
    check_pid_file,
    read_pid_file,
    remove_pid_file,
    start_detached,
    stop_server,
    write_pid_file,
)
from ._direct import database_options, direct, wants_direct
from ._dlq import dlq
from ._exit import AUTH, UNREACHABLE, CliError
from ._http_limits import apply_front_door, limit_hypercorn, uvicorn_options
from ._insights import insights
from ._jobs import jobs
from ._keys import keys
from ._load import check_storage, load_queue, use_storage
from ._queues import queues

if TYPE_CHECKING:
    from hyperqueue_litestar import Config

    from ._server import ServerPlan

__all__ = ["load_queue", "main"]


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
@click.option(
    "--detach",
    is_flag=True,
    help="Run in the background: output to --log-file, pid in --pid-file; returns once "
    "the server answers. `hyperqueue stop` ends it.",
)
@click.option(
    "--pid-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"Write the pid and URL here while serving; refuse to start while it names a "
    f"live process.  [default with --detach: ./{DEFAULT_PID_FILE}]",
)
@click.option(
    "--log-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"With --detach: where the output goes (appended).  [default: ./{DEFAULT_LOG_FILE}]",
)
@click.pass_context
def serve(
    ctx: click.Context,
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
    detach: bool,
    pid_file: Path | None,
    log_file: Path | None,
) -> None:
    """Serve APP (module:queue) over HTTP with its workers; with no APP, demo tasks.

    State is kept in --db, else where storage.* says (./hyperqueue.db by default); a
    queue built with its own storage keeps it unless storage.* is configured.
    """
    from ._server import build_server

    if detach and not check:
        pid_path = pid_file or DEFAULT_PID_FILE
        log_path = log_file or DEFAULT_LOG_FILE
        started = start_detached(
            _given_options(ctx, skip={"detach", "pid_file", "log_file"}),
            pid_file=pid_path,
            log_file=log_path,
        )
        click.echo(
            f"hyperqueue serving on {started.url} (pid {started.pid}, detached)\n"
            f"  dashboard: {started.url}/dashboard\n"
            f"  log: {log_path}; pid file: {pid_path}; stop it with: hyperqueue stop"
            + ("" if pid_path == DEFAULT_PID_FILE else f" --pid-file {pid_path}"),
            err=True,
        )
        return
    if pid_file is not None and not check:
        check_pid_file(pid_file)

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
    auth = plan.auth
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

    # IPPROTO_TCP named, not 0: asyncio sets TCP_NODELAY only on sockets whose proto says
    # TCP, and accepted connections inherit it; without it Nagle and delayed ACKs add
    # about 40 ms to every request on a kept-alive connection (uvloop sets it on every
    # TCP connection; asyncio's loop is what runs without uvloop, and under hypercorn)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    bound = sock.getsockname()[1]
    if pid_file is not None:
        write_pid_file(pid_file, f"http://{_reachable(shown)}:{bound}", log_file)
    try:
        _serve_on(plan, sock, shown, bound, loopback, server_kind)
    finally:
        if pid_file is not None:
            remove_pid_file(pid_file)


def _given_options(ctx: click.Context, *, skip: set[str]) -> list[str]:
    """The arguments and options given on the command line, as words again (for the
    detached copy of the command)."""
    words: list[str] = []
    for param in ctx.command.params:
        name = param.name
        if name is None or name in skip:
            continue
        if ctx.get_parameter_source(name) is not ParameterSource.COMMANDLINE:
            continue
        value = ctx.params[name]
        if isinstance(param, click.Argument):
            words.append(str(value))
        elif isinstance(param, click.Option) and param.is_flag:
            if value:
                words.append(param.opts[0])
        else:
            words.extend([param.opts[0], str(value)])
    return words


def _reachable(shown: str) -> str:
    """An address clients can connect to for one the server binds (any address: the
    loopback one)."""
    return {"0.0.0.0": "127.0.0.1", "[::]": "[::1]"}.get(shown, shown)


def _serve_on(
    plan: ServerPlan,
    sock: socket.socket,
    shown: str,
    bound: int,
    loopback: bool,
    server_kind: str,
) -> None:
    """Run the server on the bound socket until a signal drains it.

    uvicorn runs on its own loop set-up (``loop="auto"``, as ``uvicorn.run`` does): uvloop
    when installed (``uvicorn[standard]`` brings it), else asyncio's loop; the start-up
    lines name the loop that runs.
    """
    import uvicorn

    plugin = plan.plugin
    console = Console(stderr=True)
    console.print(f"hyperqueue serving on http://{shown}:{bound}", soft_wrap=True)
    if plugin.dashboard:
        console.print(f"  dashboard: http://{shown}:{bound}/dashboard", soft_wrap=True)
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
            loop = self._loop = asyncio.get_running_loop()
            console.print(_loop_line(loop), soft_wrap=True, highlight=False)
            await super().serve(sockets)

    server = Server(
        uvicorn.Config(
            apply_front_door(plan),
            lifespan="on",
            loop="auto",
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
    server.run(sockets=[sock])  # on the loop of uvicorn's config
    if not server.started:
        raise SystemExit(1)
    console.print("hyperqueue stopped: workers drained")


def _loop_line(loop: asyncio.AbstractEventLoop) -> str:
    """The start-up line naming the event loop the server runs on: ``uvloop`` or
    ``asyncio`` (the package its class comes from)."""
    return f"  event loop: {type(loop).__module__.partition('.')[0]}"


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
    console = Console(stderr=True)

    async def run() -> None:
        console.print(_loop_line(asyncio.get_running_loop()), soft_wrap=True, highlight=False)
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
@click.option(
    "--url",
    default=None,
    help="Take jobs from a hyperqueue server over HTTP (its worker protocol), with the "
    "key in HYPERQUEUE_API_KEY (a worker key is enough).",
)
@_pool_options
@_otel_option
def worker(
    app: str,
    db: Path | None,
    dsn: str | None,
    url: str | None,
    concurrency: int | None,
    drain_timeout: float | None,
    config_path: Path | None,
    otel: bool,
) -> None:
    """Run workers for APP (module:queue) until SIGTERM or Ctrl-C: on the storage
    directly, or with --url on a server's worker protocol (from any host that reaches it).

    Takes storage.*, workers.* and the tenants' max_running from the configuration,
    as `serve` does (the server's own keys, limits and retention are the server's).
    """
    import anyio

    from ._server import describe_workers, watch_slow_jobs, worker_settings

    config = _config(config_path)
    _observe(config, otel=otel, service="hyperqueue-worker")
    queue = _queue(app)
    if url is not None:
        if db is not None or dsn is not None:
            raise click.UsageError("give --url (a server), --db or --dsn, not two of them")
        where, warning = _remote_storage(queue, url), None
    else:
        where, warning = use_storage(queue, config.storage, db, dsn)
        check_storage(queue.storage, "worker")
    watch_slow_jobs(queue, config)
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


def _remote_storage(queue: hq.Queue, url: str) -> str:
    """Put the queue on the server at ``url``, after one request that shows the server
    answers and takes the key: else one line and exit 3 (unreachable) or 4 (the key)."""
    import anyio

    try:
        from hyperqueue_http import HttpStorage, RequestRejected
    except ImportError:
        raise click.UsageError(
            "--url needs the client extra: pip install 'hyperqueue-jobs[client]'"
        ) from None
    key = os.environ.get("HYPERQUEUE_API_KEY") or None

    async def probe() -> None:
        storage = HttpStorage(url, api_key=key)
        try:
            await storage.open()
        finally:
            await storage.aclose()

    try:
        anyio.run(probe)
    except hq.StorageError as exc:
        raise CliError(f"cannot reach the server at {url}: {exc}", UNREACHABLE) from None
    except RequestRejected as exc:
        raise CliError(f"the server at {url} refused the key: {exc}", AUTH) from None
    queue.storage = HttpStorage(url, api_key=key)  # a new client for the worker's loop
    return f"server {url} (worker protocol)"


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


def _detached(pid_file: Path) -> dict[str, Any] | None:
    """What the pid file says about a detached server, if there is one."""
    info = read_pid_file(pid_file)
    if info is None:
        return None
    return {"pid": info.pid, "url": info.url, "running": alive(info.pid), "pid_file": str(pid_file)}


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.option("--detailed", is_flag=True, help="Add every health check.")
@click.option(
    "--pid-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_PID_FILE,
    show_default=True,
    help="Say whether the detached server of this pid file runs (and ask it, when no "
    "--url is given).",
)
@server_options
@database_options
@click.pass_context
def status(
    ctx: click.Context,
    as_json: bool,
    detailed: bool,
    pid_file: Path,
    url: str,
    api_key: str | None,
    db: Path | None,
    dsn: str | None,
) -> None:
    """Jobs by status per queue, from a running server (or a database with --db /
    --dsn), and whether a detached server runs; exit 1 when the server is unhealthy."""
    if wants_direct(db, dsn):
        _status_direct(db, dsn, as_json)
        return
    detached = _detached(pid_file)
    if detached is not None and not as_json:
        state = "running" if detached["running"] else "not running (stale pid file)"
        click.echo(f"detached server: pid {detached['pid']}, {detached['url']}: {state}")
    if (
        detached is not None
        and detached["running"]
        and detached["url"]
        and ctx.get_parameter_source("url") is ParameterSource.DEFAULT
    ):
        url = detached["url"]
    with Client(url, api_key) as client:
        queues = client.get("/api/v1/queues")["queues"]
        health = client.send("GET", "/health")
    try:
        health_body = health.json()
    except ValueError:
        health_body = {"status": "unknown"}
    if as_json:
        document: dict[str, Any] = {
            "url": url,
            "queues": queues,
            "status": health_body.get("status"),
        }
        if detailed:
            document["health"] = health_body
        if detached is not None:
            document["detached"] = detached
        click.echo(json.dumps(document, indent=2))
    else:
        console = Console()
        console.print(_queues_table(queues, f"hyperqueue at {url}: {health_body.get('status')}"))
        if detailed:
            console.print(_checks_table(health_body))
    if health.status_code != 200:
        sys.exit(_exit.FAILED)


def _queues_table(queues: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    columns = ("queue", "pending", "running", "completed", "failed", "cancelled", "total")
    for column in columns:
        table.add_column(column, justify="left" if column == "queue" else "right")
    for row in queues:
        table.add_row(*(str(row[c]) for c in columns))
    return table


def _status_direct(db: Path | None, dsn: str | None, as_json: bool) -> None:
    """``status --db``: the figures straight from the database (no health: no server)."""
    import msgspec

    async def read(queue: hq.Queue) -> list[Any]:
        # the same figures as the server's GET /api/v1/queues
        return [
            {**msgspec.to_builtins(s), "total": s.total} for s in (await queue.stats()).values()
        ]

    queues = direct(db, dsn, read)
    where = str(db) if db is not None else "PostgreSQL"
    if as_json:
        click.echo(json.dumps({"database": where, "queues": queues}, indent=2))
    else:
        Console().print(_queues_table(queues, f"hyperqueue database {where}"))


@main.command()
@server_options
@click.option("--json", "as_json", is_flag=True, help="Print the JSON body.")
def health(url: str, api_key: str | None, as_json: bool) -> None:
    """The server's health checks; exit 1 unless it is healthy or degraded."""
    with Client(url, api_key) as client:
        response = client.send("GET", "/health")
        if response.status_code in (401, 403):
            raise client.error(response)
    try:
        body = response.json()
    except ValueError:
        raise CliError(f"{url}/health answered {response.status_code}") from None
    if as_json:
        click.echo(json.dumps(body, indent=2))
    else:
        Console().print(_checks_table(body))
    if response.status_code != 200 or body.get("status") == "unhealthy":
        sys.exit(_exit.FAILED)


@main.command()
@click.option(
    "--pid-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_PID_FILE,
    show_default=True,
)
@click.option(
    "--timeout",
    type=click.FloatRange(0),
    default=60.0,
    show_default=True,
    help="Seconds to wait for the drain before giving up (exit 8).",
)
def stop(pid_file: Path, timeout: float) -> None:
    """Stop the detached server of --pid-file: SIGTERM, then wait while it drains.

    Exit 0 once it is gone (its pid file removed), 5 when none runs, 8 when it still
    runs after --timeout seconds.
    """
    info = read_pid_file(pid_file)
    took = stop_server(pid_file, timeout=timeout)
    assert info is not None
    click.echo(f"hyperqueue stopped (pid {info.pid}, {took:.1f} s)", err=True)


main.add_command(insights)
main.add_command(jobs)
main.add_command(dlq)
main.add_command(queues)
main.add_command(keys)
