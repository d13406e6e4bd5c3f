"""Configuration over HTTP, and applying a new configuration to a running server.

DESIGN D1 lists configuration among the API's resources: :class:`ConfigApi` serves it
under ``{api_prefix}/config`` (read, history, one version, diff, import, rollback,
export), admin role only, and is the one place a new configuration goes through, whether
it comes from a request or from the watched file (``watch=``). Going through one place
is what keeps a change whole: the version is recorded first (a store that fails leaves
the running configuration as it was), then every live setting takes it, under one lock,
with no await between the targets, so a request sees the old settings or the new ones,
never a mix.

What changes live is what the targets read on every request: API keys, roles and tenant
quotas (:class:`~._auth.Auth`), rate limits (:class:`~._limits.RateLimitMiddleware`),
the slow-request threshold (:class:`~._metrics.Metrics`). The rest (``server.host``,
``server.port``, ``server.max_body_bytes``, ``storage``, ``workers``, ``retention``) is
recorded but needs a restart; an answer lists those paths in ``restart_required``.

Every change after the start goes through :func:`~._config_safety.check_change` first:
a document that leaves its keys out, a change that would open a keyed server beyond
loopback, or one that would lock every admin out is refused (422 or 409 with a detail
saying why; one warning line for the file), recorded as a ``security.config_refused``
audit record, and the running configuration stays as it was.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Annotated, Any, Literal, Protocol

import anyio
import msgspec
from litestar import Litestar, Request, Response, get, post, put
from litestar.config.app import AppConfig
from litestar.exceptions import HTTPException, NotFoundException
from litestar.params import PathParameter, QueryParameter
from litestar.plugins import InitPlugin
from litestar.types import Guard

import hyperqueue as hq

from ._audit import publish_refusal
from ._config import (
    Config,
    ConfigDiff,
    ConfigError,
    ConfigHistory,
    ConfigVersion,
    ConfigVersionNotFound,
    ConfigVersionStore,
    ConfigWatcher,
    MemoryConfigStore,
    diff_configs,
    dump_config,
    read_config,
)
from ._config_safety import ConfigChangeRefused, ConfigRefused, check_change, document_has_keys
from ._security import Actor, actor_of, client_ip, route_of

__all__ = [
    "ConfigApi",
    "ConfigApplied",
    "ConfigConflict",
    "ConfigVersionInfo",
    "LiveSetting",
    "restart_required",
]

_logger = logging.getLogger("hyperqueue.config")

_LIVE = ("keys", "tenants", "rate_limits", "server.slow_request_ms")
"""Key paths (and their children) that running code reads on every request."""

_MAX_VERSION = 2**63 - 1  # SQLite's integer
_ADMIN = {"hyperqueue_role": "admin"}
_MEDIA = {"toml": "application/toml", "json": "application/json"}


class LiveSetting(Protocol):
    """Something that takes a new configuration while serving: ``apply`` must not await,
    so it is atomic in the event loop."""

    def apply(self, config: Config) -> None: ...


class ConfigVersionInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One version in the history, without its document."""

    version: int
    created_at: float
    author: str | None
    comment: str | None


class ConfigApplied(msgspec.Struct, frozen=True, kw_only=True):
    """The answer to an import or a rollback: the new version, what changed from the
    configuration that ran before, and which of those paths wait for a restart."""

    version: ConfigVersionInfo
    changed: tuple[str, ...]
    restart_required: tuple[str, ...]


class ConfigHistoryPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[ConfigVersionInfo]


def restart_required(diff: ConfigDiff) -> tuple[str, ...]:
    """The changed key paths that a running server does not take (see the module doc)."""
    return tuple(
        path
        for path in diff.paths
        if not any(path == live or path.startswith((f"{live}.", f"{live}[")) for live in _LIVE)
    )


class ConfigConflict(Exception):
    """A change made from a version that is no longer the running one (another change
    came in between): refused, so that neither is lost without a word."""

    def __init__(self, *, running: int | None, expected: int) -> None:
        super().__init__(
            f"the configuration changed since version {expected}: version {running} is "
            "running; read it again and make the change on it"
        )
        self.running = running
        self.expected = expected


def _expected_version(header: str | None) -> int | None:
    """The version an ``If-Match`` header names (``3``, ``"3"`` or ``W/"3"``), or None;
    anything else is a 422."""
    if header is None or not header.strip():
        return None
    text = header.strip().removeprefix("W/").strip('"')
    if not text.isdigit() or len(text) > 18:
        raise HTTPException(
            status_code=422,
            detail=f"If-Match must name a configuration version (a number), not {header!r}",
            extra={"header": "If-Match"},
        )
    return int(text)


def _info(version: ConfigVersion) -> ConfigVersionInfo:
    return ConfigVersionInfo(
        version=version.version,
        created_at=version.created_at,
        author=version.author,
        comment=version.comment,
    )


class ConfigApi(InitPlugin):
    """A Litestar plugin: ``create_app(queue, plugins=[ConfigApi(queue, config, ...)])``.

    ``config`` is the configuration the server starts with (recorded as a version with
    author ``"startup"`` when it differs from the newest stored one); ``store`` keeps
    the versions (a :class:`MemoryConfigStore` unless given; a store that is an async
    context manager, such as ``hyperqueue_sqlite.ConfigStore``, is opened for the app's
    lifespan); ``targets`` are the :class:`LiveSetting` objects a new configuration is
    applied to. ``guards`` protect the routes (pass the auth guard: every route asks for
    the admin role). ``watch`` is a TOML file to reload when it changes (checked every
    ``watch_interval`` seconds, default 2.0, on the queue's clock, with ``env``, default
    ``os.environ``, layered on top); each valid change becomes a version with author
    ``"file"``, an invalid one is refused with one warning line.

    ``loopback`` says the server listens on loopback only (``hyperqueue serve`` knows;
    default False, the safe guess for an app whose address is unknown): only then may a
    change remove every key and open the server. Every change after the start is checked
    by :func:`~._config_safety.check_change` (see that module for the rule).
    """

    def __init__(
        self,
        queue: hq.Queue,
        config: Config | None = None,
        *,
        store: ConfigVersionStore | None = None,
        targets: Sequence[LiveSetting] = (),
        guards: Sequence[Guard] = (),
        api_prefix: str = "/api/v1",
        watch: str | os.PathLike[str] | None = None,
        watch_interval: float = 2.0,
        env: Mapping[str, str] | None = None,
        loopback: bool = False,
    ) -> None:
        self.queue = queue
        self.loopback = loopback
        self.current = config if config is not None else Config()
        self.version: int | None = None
        self.store: ConfigVersionStore = store if store is not None else MemoryConfigStore()
        self.history = ConfigHistory(self.store, clock=queue.clock)
        self.targets = list(targets)
        self.guards = list(guards)
        self.api_prefix = "/" + api_prefix.strip("/")
        self.watcher = (
            _FileWatcher(
                watch,
                on_change=self._file_changed,
                interval=watch_interval,
                clock=queue.clock,
                env=env,
            )
            if watch is not None
            else None
        )
        self._lock = anyio.Lock()

    # -- applying ------------------------------------------------------------------------

    async def apply(
        self,
        config: Config,
        *,
        author: str | None = None,
        comment: str | None = None,
        keys_given: bool = True,
        expected_version: int | None = None,
    ) -> ConfigApplied:
        """Record ``config`` as a new version, then make it the running configuration.

        Raises :class:`~._config_safety.ConfigRefused` (and changes nothing) when the
        rule of :mod:`._config_safety` refuses it; ``keys_given`` says whether the
        document ``config`` was read from names ``keys``. ``expected_version``: the
        version the change was made from (a read-modify-write); if another change came
        in between, :class:`ConfigConflict` is raised and nothing changes."""
        return await self._apply(
            config,
            author=author,
            comment=comment,
            keys_given=keys_given,
            expected_version=expected_version,
        )

    async def _apply(
        self,
        config: Config,
        *,
        author: str | None,
        comment: str | None,
        keys_given: bool = True,
        checked: bool = True,
        expected_version: int | None = None,
    ) -> ConfigApplied:
        async with self._lock:
            if expected_version is not None and expected_version != self.version:
                raise ConfigConflict(running=self.version, expected=expected_version)
            if checked:
                watched = author == "file" and self.watcher is not None
                source = self._watched if watched else ""
                check_change(
                    self.current,
                    config,
                    loopback=self.loopback,
                    keys_given=keys_given,
                    source=source,
                )
            recorded = await self.history.record(config, author=author, comment=comment)
            diff = diff_configs(self.current, config)
            self._take(config, recorded.version)
        later = restart_required(diff)
        if later:
            _logger.warning(
                "config version %d: %s changed but take effect only after a restart",
                recorded.version,
                ", ".join(later),
            )
        return ConfigApplied(version=_info(recorded), changed=diff.paths, restart_required=later)

    def _take(self, config: Config, version: int) -> None:
        # no await in here: every target changes between the same two awaits
        self.current = config
        self.version = version
        for target in self.targets:
            target.apply(config)

    async def _file_changed(self, config: Config) -> None:
        await self._from_file(config, f"{self._watched} changed")

    @property
    def _watched(self) -> str:
        assert self.watcher is not None
        return str(self.watcher.path)

    async def _from_file(self, config: Config, comment: str) -> None:
        """Apply the watched file's ``config``; a refusal keeps the running configuration,
        is audited and logged as one warning line."""
        assert isinstance(self.watcher, _FileWatcher)
        try:
            await self.apply(
                config, author="file", comment=comment, keys_given=self.watcher.keys_given
            )
        except ConfigRefused as exc:
            self._file_refused(exc)
            _logger.warning("config reload refused, keeping the current configuration: %s", exc)

    def _screen_file(self, config: Config, keys_given: bool) -> None:
        """The watcher's check of a new file, before it takes it as its own: a refusal
        is audited here and logged by the watcher as its one warning line (the check is
        made again under the lock when the change is applied)."""
        try:
            check_change(
                self.current,
                config,
                loopback=self.loopback,
                keys_given=keys_given,
                source=self._watched,
            )
        except ConfigRefused as exc:
            self._file_refused(exc)
            raise

    def _file_refused(self, exc: ConfigRefused) -> None:
        path = self._watched
        publish_refusal(
            self.queue,
            ConfigChangeRefused(
                at=self.queue.clock.now(),
                client=f"file:{path}",
                actor=Actor(type="anonymous", id="file"),
                method="RELOAD",
                route=path,
                detail=str(exc),
            ),
        )

    def _refused(self, request: Request[Any, Any, Any], exc: ConfigRefused) -> HTTPException:
        """Publish ``exc`` as an audited security event and answer it."""
        scope = request.scope
        actor = actor_of(scope)
        publish_refusal(
            self.queue,
            ConfigChangeRefused(
                at=self.queue.clock.now(),
                client=actor.id or client_ip(scope),
                actor=actor,
                method=request.method,
                route=route_of(scope),
                detail=str(exc),
            ),
            scope,
        )
        return HTTPException(
            status_code=exc.status_code,
            detail=str(exc),
            extra={"key": exc.path, "rule": exc.rule},
        )

    # -- Litestar ------------------------------------------------------------------------

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        api = self
        base = f"{self.api_prefix}/config"
        common: dict[str, Any] = {"guards": self.guards, "opt": _ADMIN, "tags": ["config"]}

        @get(base, name="hyperqueue_config", summary="The running configuration", **common)
        async def read_current() -> Response[Config]:
            headers = {} if api.version is None else {"X-Config-Version": str(api.version)}
            return Response(api.current, headers=headers)

        @get(f"{base}/history", name="hyperqueue_config_history", **common)
        async def read_history(
            limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
        ) -> ConfigHistoryPage:
            """Stored versions, newest first."""
            return ConfigHistoryPage(
                items=[_info(v) for v in await api.history.history(limit=limit)]
            )

        @get(f"{base}/versions/{{version:int}}", name="hyperqueue_config_version", **common)
        async def read_version(
            version: Annotated[int, PathParameter(ge=1, le=_MAX_VERSION)],
        ) -> ConfigVersion:
            """One stored version with its whole document."""
            return await api._get(version)

        @get(f"{base}/diff", name="hyperqueue_config_diff", **common)
        async def read_diff(
            from_version: Annotated[int, QueryParameter(name="from", ge=1, le=_MAX_VERSION)],
            to_version: Annotated[
                int | None, QueryParameter(name="to", ge=1, le=_MAX_VERSION)
            ] = None,
        ) -> ConfigDiff:
            """Keys that changed from version ``from`` to version ``to`` (default: the
            running configuration)."""
            before = (await api._get(from_version)).config
            after = api.current if to_version is None else (await api._get(to_version)).config
            return diff_configs(before, after)

        @put(base, name="hyperqueue_config_import", status_code=200, **common)
        async def import_config(
            request: Request[Any, Any, Any],
            comment: Annotated[str | None, QueryParameter(max_length=1000)] = None,
        ) -> ConfigApplied:
            """Replace the whole configuration: a JSON document, or TOML when the
            Content-Type says ``toml``. Validated first: a bad one is a 422 naming the key.

            ``If-Match: <version>`` (the ``X-Config-Version`` a read answered) makes it
            a compare-and-swap: when another change was applied since, the answer is 412
            with the running version in ``extra.version``, and nothing changes."""
            expected = _expected_version(request.headers.get("if-match"))
            toml = "toml" in request.headers.get("content-type", "")
            kind: Literal["toml", "json"] = "toml" if toml else "json"
            try:
                body = await request.body()
                config = read_config(body, format=kind, source="request body")
            except ConfigError as exc:
                raise HTTPException(
                    status_code=422,
                    detail=str(exc),
                    extra={"key": exc.path, "reason": exc.reason},
                ) from None
            try:
                return await api.apply(
                    config,
                    author=_author(request),
                    comment=comment,
                    keys_given=document_has_keys(body, format=kind),
                    expected_version=expected,
                )
            except ConfigRefused as exc:
                raise api._refused(request, exc) from None
            except ConfigConflict as exc:
                raise HTTPException(
                    status_code=412, detail=str(exc), extra={"version": exc.running}
                ) from None

        @post(
            f"{base}/rollback/{{version:int}}",
            name="hyperqueue_config_rollback",
            status_code=200,
            **common,
        )
        async def rollback(
            version: Annotated[int, PathParameter(ge=1, le=_MAX_VERSION)],
            request: Request[Any, Any, Any],
        ) -> ConfigApplied:
            """A new version equal to ``version``, applied at once."""
            old = await api._get(version)
            try:
                return await api.apply(
                    old.config, author=_author(request), comment=f"rollback to version {version}"
                )
            except ConfigRefused as exc:
                raise api._refused(request, exc) from None

        @get(f"{base}/export", name="hyperqueue_config_export", **common)
        async def export(
            kind: Annotated[Literal["toml", "json"], QueryParameter(name="format")] = "toml",
            version: Annotated[int | None, QueryParameter(ge=1, le=_MAX_VERSION)] = None,
        ) -> Response[str]:
            """The running configuration (or ``version``) as a TOML or JSON document."""
            config = api.current if version is None else (await api._get(version)).config
            return Response(dump_config(config, format=kind), media_type=_MEDIA[kind])

        app_config.route_handlers.extend(
            [read_current, read_history, read_version, read_diff, import_config, rollback, export]
        )
        app_config.lifespan.append(self.lifespan)
        return app_config

    async def _get(self, version: int) -> ConfigVersion:
        try:
            return await self.history.get(version)
        except ConfigVersionNotFound:
            raise NotFoundException(detail=f"no configuration version {version}") from None

    @asynccontextmanager
    async def lifespan(self, app: Litestar) -> AsyncIterator[None]:
        """Open the store, record the starting configuration, watch the file."""
        async with AsyncExitStack() as stack:
            if isinstance(self.store, AbstractAsyncContextManager):  # e.g. SQLite's
                await stack.enter_async_context(self.store)
            latest = await self.history.latest()
            if latest is not None and latest.config == self.current:
                self.version = latest.version
            else:
                # what the server starts with is the host's (serve checks it): unchecked
                await self._apply(
                    self.current,
                    author="startup",
                    comment="configuration at start",
                    checked=False,
                )
            if self.watcher is not None:
                await stack.enter_async_context(self.watcher)
                if self.watcher.current != self.current:
                    await self._from_file(self.watcher.current, f"{self._watched} at start")
                self.watcher.screen = self._screen_file
            yield


def _author(request: Request[Any, Any, Any]) -> str | None:
    actor = actor_of(request.scope)
    return actor.id if actor.type == "key" else None


class _FileWatcher(ConfigWatcher):
    """The watcher, also noting whether the file's latest document names ``keys`` (the
    environment's ``HYPERQUEUE_KEYS`` counts), for the rule that keys are never dropped
    by omission, and refusing what ``screen`` refuses the way it refuses an invalid
    file: the configuration it holds stays, one warning line says why."""

    keys_given = True
    screen: Callable[[Config, bool], None] | None = None

    def _load(self, data: bytes) -> Config:
        config = super()._load(data)
        self.keys_given = bool(config.keys) or document_has_keys(data, format="toml")
        if self.screen is not None:
            self.screen(config, self.keys_given)
        return config
