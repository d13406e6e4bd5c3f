"""The ``hyperqueue`` command.

``serve`` runs the HTTP server with its worker pool (uvicorn, HTTP/1.1 keep-alive),
``worker`` runs workers alone, ``status`` and ``health`` ask a running server. SIGTERM
or Ctrl-C drains: the server stops taking requests, running jobs finish (within the
drain timeout), and the process exits 0.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import click
import httpx
from rich.console import Console
from rich.table import Table

import hyperqueue as hq

from ._load import load_queue, use_storage

__all__ = ["load_queue", "main"]

_DEFAULT_URL = "http://127.0.0.1:8000"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(hq.__version__, prog_name="hyperqueue")
def main() -> None:
    """hyperqueue: background jobs, served over HTTP or run by workers."""


def _queue(app: str | None, db: Path | None) -> tuple[hq.Queue, str]:
    if app is None:
        from hyperqueue_litestar import demo_queue

        queue = demo_queue()
    else:
        queue = load_queue(app)
    return queue, use_storage(queue, db)


def _config(path: Path | None) -> Any:
    """The server configuration from ``--config`` (see the configuration guide)."""
    if path is None:
        return None
    try:
        from hyperqueue_litestar import _config
    except ImportError as exc:  # pragma: no cover - the configuration module ships with it
        raise click.UsageError(f"--config needs hyperqueue_litestar._config: {exc}") from exc
    load = getattr(_config, "load_config", None)
    if load is None:  # pragma: no cover
        raise click.UsageError("this version cannot read configuration files")
    try:
        return load(path)
    except hq.HyperqueueError as exc:
        raise click.BadParameter(str(exc), param_hint="--config") from None


def _setting(config: Any, section: str, name: str, given: Any, default: Any) -> Any:
    """A command-line value wins over the file's, which wins over the default."""
    if given is not None:
        return given
    part = getattr(config, section, None) if config is not None else None
    value = getattr(part, name, None) if part is not None else None
    return default if value is None else value


@main.command()
@click.argument("app", required=False)
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), help="SQLite file.")
@click.option("--host", default=None, help="Address to bind.  [default: 127.0.0.1]")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="0: any free port.  [default: 8000]",
)
@click.option("--concurrency", type=click.IntRange(1, 10_000), default=None, help="[default: 10]")
@click.option(
    "--drain-timeout", type=click.FloatRange(0, 3600), default=None, help="Seconds. [default: 30]"
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="TOML file (HYPERQUEUE_* variables override it); options given here win.",
)
@click.option(
    "--server",
    "server_kind",
    type=click.Choice(["uvicorn", "hypercorn"]),
    default="uvicorn",
    show_default=True,
    help="ASGI server: uvicorn (HTTP/1.1) or hypercorn (HTTP/1.1 and HTTP/2, h2c on "
    "plain TCP; pip install 'hyperqueue[http2]').",
)
@click.option(
    "--allow-open",
    is_flag=True,
    help="Serve with no API keys on an address beyond loopback (anyone who can reach "
    "it can run jobs).",
)
def serve(
    app: str | None,
    db: Path | None,
    host: str | None,
    port: int | None,
    concurrency: int | None,
    drain_timeout: float | None,
    config_path: Path | None,
    server_kind: str,
    allow_open: bool,
) -> None:
    """Serve APP (module:queue) over HTTP with its workers; with no APP, demo tasks.

    State is kept in --db, or ./hyperqueue.db when the queue has no storage of its own.
    """
    import uvicorn

    from hyperqueue_litestar import (
        Audit,
        Auth,
        Config,
        HyperqueuePlugin,
        MemoryAuditSink,
        Metrics,
        RateLimitMiddleware,
        SQLiteAuditSink,
        create_app,
    )
    from hyperqueue_litestar._config import MemoryConfigStore
    from hyperqueue_litestar._config_routes import ConfigApi
    from hyperqueue_sqlite import ConfigStore, SQLiteStorage

    config = _config(config_path)
    host = _setting(config, "server", "host", host, "127.0.0.1")
    port = _setting(config, "server", "port", port, 8000)
    concurrency = _setting(config, "workers", "concurrency", concurrency, 10)
    max_body = _setting(config, "server", "max_body_bytes", None, 10_000_000)
    drain_timeout = _setting(config, "workers", "drain_timeout", drain_timeout, 30.0)
    lease = _setting(config, "workers", "lease", None, 30.0)
    if db is None and config is not None and config.storage.kind == "sqlite":
        db = Path(config.storage.path)
    queue, where = _queue(app, db)
    settings = config if config is not None else Config()
    auth = Auth.from_config(queue, settings, max_body_size=max_body)
    limits = RateLimitMiddleware(queue, settings.rate_limits)
    metrics = Metrics(queue, slow_request_ms=settings.server.slow_request_ms)
    storage = queue.storage
    sqlite = storage.path if isinstance(storage, SQLiteStorage) else None
    audit_sink = SQLiteAuditSink(sqlite) if sqlite else MemoryAuditSink()
    # API keys, tenant quotas, rate limits and the slow-request threshold change live:
    # through the API (admin) or by editing --config, which is watched.
    config_api = ConfigApi(
        queue,
        settings,
        store=ConfigStore(sqlite) if sqlite else MemoryConfigStore(),
        targets=[auth, limits, metrics],
        guards=[auth.guard],
        watch=config_path,
    )
    litestar_app = create_app(
        queue,
        concurrency=concurrency,
        lease=lease,
        drain_timeout=drain_timeout,
        max_body_size=max_body,
        guards=[auth.guard],
        middleware=[auth.middleware, limits],
        plugins=[metrics, Audit(queue, audit_sink, guards=[auth.guard]), config_api],
    )
    plugin = litestar_app.plugins.get(HyperqueuePlugin)

    loopback = host in ("127.0.0.1", "localhost", "::1")
    if auth.open and not loopback and not allow_open:
        raise click.ClickException(
            f"no API keys configured: an open server listens on loopback only, not {host}; "
            "configure [[keys]] in --config (see docs/guides/security.md) or pass --allow-open"
        )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if family == socket.AF_INET6 else host

    console = Console(stderr=True)
    console.print(f"hyperqueue serving on http://{shown}:{bound}", soft_wrap=True)
    console.print(
        f"  tasks: {', '.join(sorted(queue.tasks)) or 'none'}; state: {where}; "
        f"workers: {concurrency}",
        soft_wrap=True,
    )
    if not auth.open:
        console.print(f"  API keys: {len(settings.keys)} configured", soft_wrap=True)
    elif loopback:
        console.print(
            "  [yellow]no API keys configured: the API is open; keep it on loopback[/yellow]",
            soft_wrap=True,
        )
    else:
        console.print(
            "  [bold red]no API keys configured and listening beyond loopback (--allow-open):"
            " anyone who can reach it can run jobs[/bold red]",
            soft_wrap=True,
        )

    if server_kind == "hypercorn":
        _serve_hypercorn(litestar_app, sock, plugin.shutting_down, drain_timeout)
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
            litestar_app,
            lifespan="on",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=max(int(drain_timeout), 1) + 5,
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


def _serve_hypercorn(
    app: Any, sock: socket.socket, shutting_down: Any, drain_timeout: float
) -> None:
    """Serve with hypercorn, which speaks HTTP/2 (h2c on plain TCP) as well as HTTP/1.1;
    SIGTERM or SIGINT ends the event streams, then drains through the app's lifespan."""
    try:
        from hypercorn.asyncio import serve as hypercorn_serve
        from hypercorn.config import Config as HypercornConfig
    except ImportError:
        raise click.UsageError(
            "--server hypercorn needs hypercorn: pip install 'hyperqueue[http2]'"
        ) from None
    config = HypercornConfig()
    config.bind = [f"fd://{sock.fileno()}"]
    config.graceful_timeout = max(drain_timeout, 1.0) + 5.0
    config.accesslog = None
    config.loglevel = "WARNING"

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
    from hyperqueue_litestar._config import ConfigError, dump_config, load_config

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
    from hyperqueue_litestar._config import ConfigError, load_config

    try:
        load_config(file, env={} if no_env else None)
    except ConfigError as exc:
        click.echo(f"invalid: {exc}", err=True)
        sys.exit(1)
    click.echo("valid")


@main.command()
@click.argument("app")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), help="SQLite file.")
@click.option("--concurrency", type=click.IntRange(1, 10_000), default=10, show_default=True)
@click.option("--drain-timeout", type=click.FloatRange(0, 3600), default=30.0, show_default=True)
def worker(app: str, db: Path | None, concurrency: int, drain_timeout: float) -> None:
    """Run workers for APP (module:queue) with no HTTP, until SIGTERM or Ctrl-C."""
    import anyio

    queue, where = _queue(app, db)
    Console(stderr=True).print(
        f"hyperqueue worker: {concurrency} runners; tasks: {', '.join(sorted(queue.tasks))}; "
        f"state: {where}",
        soft_wrap=True,
    )

    async def run() -> None:
        await hq.run_worker(queue, concurrency=concurrency, drain_timeout=drain_timeout)

    anyio.run(run, backend="asyncio")


def _get(url: str, path: str) -> httpx.Response:
    try:
        return httpx.get(url.rstrip("/") + path, timeout=10.0)
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
