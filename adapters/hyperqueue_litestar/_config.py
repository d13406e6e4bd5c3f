"""The server's configuration: typed, layered, validated, watched and versioned (MISSION C3).

Why one module holds all of it: the schema, where values come from, and how versions are
kept change together (a new field needs its default, its TOML and env spelling and its
place in a diff), and the SQLite store stays a plain table of documents that knows nothing
of the schema (``hyperqueue_sqlite.ConfigStore``), so the storage adapter does not depend
on the server adapter.

Sources, weakest first: the defaults below, a TOML file, then environment variables
``HYPERQUEUE_<SECTION>__<KEY>`` (``HYPERQUEUE_WORKERS__CONCURRENCY=20``). An environment
value is taken as text and converted to the field's type (``"20"`` to ``20``,
``"true"`` to ``True``); a value that starts with ``[`` or ``{`` is read as JSON, so lists
and tables can come from the environment too. The client commands' own variables
(:data:`CLIENT_ENV_VARS`: ``HYPERQUEUE_URL``, ``HYPERQUEUE_API_KEY``) are not
configuration keys and the environment layer skips them. Every error is one
:class:`ConfigError` that names the key path and the source: the file, or the
environment variable.

Every key that validates takes effect (``hyperqueue serve`` wires each one, see the
configuration guide); a key nothing could honour is refused, not accepted and ignored.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
import re
import tomllib
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Annotated, Any, Literal, Protocol, Self, get_args

import anyio
import anyio.abc
import msgspec
from limits import parse_many

from hyperqueue import Clock, HyperqueueError, SystemClock

from ._schemas import JobTemplate

__all__ = [
    "CLIENT_ENV_VARS",
    "ApiKey",
    "Config",
    "ConfigChange",
    "ConfigDiff",
    "ConfigError",
    "ConfigHistory",
    "ConfigVersion",
    "ConfigVersionNotFound",
    "ConfigVersionStore",
    "ConfigWatcher",
    "LoggingSettings",
    "MemoryConfigStore",
    "MetricsSettings",
    "OpenApiSettings",
    "RateLimits",
    "RetentionSettings",
    "ServerSettings",
    "StorageSettings",
    "TenantQuota",
    "WorkerSettings",
    "diff_configs",
    "dump_config",
    "load_config",
    "parse_config",
    "read_config",
]

logger = logging.getLogger("hyperqueue.config")

ENV_PREFIX = "HYPERQUEUE_"
CLIENT_ENV_VARS = ("HYPERQUEUE_URL", "HYPERQUEUE_API_KEY")
"""Variables the client commands read (``hyperqueue status``, ``health``: the server's
URL and the API key to send), not configuration keys: the environment layer skips them,
so one shell can set them and still run ``hyperqueue serve``. With another
``env_prefix`` the same names after that prefix are skipped."""
_CLIENT_KEYS = frozenset(name.removeprefix(ENV_PREFIX) for name in CLIENT_ENV_VARS)
Role = Literal["admin", "operator", "viewer", "worker"]
StorageKind = Literal["memory", "sqlite", "postgres"]
Format = Literal["toml", "json"]

_MiB = 1024 * 1024


class ConfigError(HyperqueueError, ValueError):
    """A configuration that cannot be used.

    ``path`` is the key path (``workers.concurrency``; empty for the whole document),
    ``source`` where the offending value came from (a file path, an environment variable's
    name, ``"defaults"``, or what an import was called), ``reason`` the problem alone.
    """

    def __init__(self, reason: str, *, path: str = "", source: str = "") -> None:
        where = f"{path}: " if path else ""
        origin = f" (from {source})" if source else ""
        super().__init__(f"{where}{reason}{origin}")
        self.path = path
        self.source = source
        self.reason = reason


class ConfigVersionNotFound(ConfigError, LookupError):
    """No stored configuration has the given version number."""

    def __init__(self, version: int) -> None:
        super().__init__(f"no configuration version {version}", path="", source="")
        self.version = version


# --------------------------------------------------------------------------- schema


class ServerSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where the server listens and what it refuses.

    ``max_body_bytes`` (default 10 MiB = 10,485,760, at most 1 GiB) is the largest request
    body before a 413; ``slow_request_ms`` (default 500, at most 600,000) is the latency
    from which a request is logged and counted as slow. ``max_header_bytes`` (default
    65,536, from 4,096 to 1 MiB) bounds the request line and headers together, and
    ``max_headers`` (default 100, from 10 to 1,000) their number: over either, 431.
    """

    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 8000
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1, le=1024 * _MiB)] = 10 * _MiB
    slow_request_ms: Annotated[float, msgspec.Meta(ge=0, le=600_000)] = 500.0
    max_header_bytes: Annotated[int, msgspec.Meta(ge=4096, le=_MiB)] = 65_536
    max_headers: Annotated[int, msgspec.Meta(ge=10, le=1000)] = 100


class MetricsSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``/metrics``: ``public`` (default ``true``, what a Prometheus scrape expects) serves
    it without a key; ``false`` asks for a key with the viewer role, as the API does
    (when keys are configured: a server without keys is open everywhere)."""

    public: bool = True


class OpenApiSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The OpenAPI document (``/schema/openapi.json`` and the pages under ``/schema``):
    ``public`` (default ``true``) serves it without a key; ``false`` asks for a key with
    the viewer role (when keys are configured)."""

    public: bool = True


class StorageSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Which backend holds the jobs: one SQLite file by default (``hyperqueue.db``).

    ``sqlite`` keeps the jobs in the file at ``path`` (required), shared by the server
    and ``hyperqueue worker`` processes on the same host; ``memory`` keeps them in the
    server's process only: nothing survives a restart and no other process can reach
    them; ``postgres`` keeps them in the PostgreSQL database at ``dsn`` (required),
    shared by servers and workers on many hosts. Keep the password out of the DSN (it is
    part of the configuration that admins can export): use ``PGPASSWORD`` or a
    ``~/.pgpass`` file, which the driver reads.
    """

    kind: StorageKind = "sqlite"
    path: str | None = "hyperqueue.db"
    dsn: str | None = None

    def __post_init__(self) -> None:
        if self.kind == "sqlite" and not self.path:
            raise ValueError("`path`: required when kind is 'sqlite'")
        if self.kind == "postgres" and not self.dsn:
            raise ValueError("`dsn`: required when kind is 'postgres'")
        if self.kind != "postgres" and self.dsn:
            raise ValueError("`dsn`: only a 'postgres' storage uses it")


class WorkerSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The worker pool of ``hyperqueue serve`` (and of ``hyperqueue worker``).

    ``concurrency`` default 10 (1 to 10,000) jobs at once; ``queues`` the queues the pool
    takes jobs from (default unset: every queue; a job on another queue stays pending for
    some other worker); ``lease`` default 30 s (0 < lease <= 3,600): a job whose worker
    stops renewing it runs again after that; ``drain_timeout`` default 30 s (0 to 3,600)
    to finish in-flight jobs on shutdown; ``prefetch`` default ``"auto"`` (sized by
    how long jobs take, none held over 10 ms; or a fixed count, 0 to 10,000) jobs
    claimed ahead of free slots; ``slow_job_seconds`` (default unset: off) reports a
    run that takes that long or longer as a ``job.slow`` event and a warning log line.
    """

    concurrency: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 10
    queues: (
        Annotated[list[Annotated[str, msgspec.Meta(min_length=1)]], msgspec.Meta(min_length=1)]
        | None
    ) = None
    lease: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 30.0
    drain_timeout: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 30.0
    prefetch: Annotated[int, msgspec.Meta(ge=0, le=10_000)] | Literal["auto"] = "auto"
    slow_job_seconds: Annotated[float, msgspec.Meta(gt=0, le=86_400)] | None = None


class ApiKey(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An API key as configured: the SHA-256 of the key in hex, never the key itself, so a
    leaked configuration file (or its stored history) gives no access."""

    name: Annotated[str, msgspec.Meta(min_length=1)]
    key_hash: Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]
    roles: Annotated[list[Role], msgspec.Meta(min_length=1)] = msgspec.field(
        default_factory=lambda: ["viewer"]
    )
    tenant: str | None = None

    @staticmethod
    def hash_key(key: str) -> str:
        """The ``key_hash`` to configure for ``key``."""
        return hashlib.sha256(key.encode()).hexdigest()


class TenantQuota(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A tenant's limits: ``max_running`` default 100, ``max_queued`` default 10,000 (each
    at least 1 and at most 1,000,000)."""

    max_running: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 100
    max_queued: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 10_000


def _default_routes() -> dict[str, str]:
    return {"POST /api/v1/jobs": "200/second", "POST /api/v1/jobs/batch": "20/second"}


class RateLimits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Limits per client, written as ``limits`` parses them (``"100/minute"``, several
    joined by ``;``).

    ``default`` (1000/second) applies to every route without its own entry; ``routes``
    maps ``"METHOD /path"`` patterns (``*`` matches any part) to a limit. Submitting is
    stricter than reading by default: 200/second for ``POST /api/v1/jobs``, 20/second
    (up to 20,000 jobs/s) for a batch. The defaults stop a runaway client, not a busy
    producer; set tighter ones per route for clients you do not trust.
    """

    default: str = "1000/second"
    routes: dict[str, str] = msgspec.field(default_factory=_default_routes)

    def __post_init__(self) -> None:
        _check_limit("default", self.default)
        for route, limit in self.routes.items():
            _check_limit(f"routes[{route!r}]", limit)


def _check_limit(where: str, limit: str) -> None:
    try:
        parsed = parse_many(limit)
    except ValueError:
        parsed = []
    if not parsed:
        raise ValueError(f'`{where}`: expected a limit such as "100/minute", got {limit!r}')


class RetentionSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """When finished jobs go (SQLite storage; ``hyperqueue serve`` runs it as a
    supervised service every ``interval_seconds``, default 3,600, at most 86,400).

    Finished jobs (completed, failed, cancelled) are pruned ``max_age_days`` after they
    finished (default 30, at most 3,650), archived first to gzip JSON-lines files in
    ``archive_dir`` when it is set. When the database's file system has less than
    ``min_free_disk_mb`` MiB free (default 1,024; 0 turns the check off), finished jobs
    are kept one hour only and the file is vacuumed to give the space back.
    """

    max_age_days: Annotated[float, msgspec.Meta(gt=0, le=3650)] = 30.0
    archive_dir: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    min_free_disk_mb: Annotated[int, msgspec.Meta(ge=0)] = 1024
    interval_seconds: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 3600.0


LogFormat = Literal["text", "json"]
LogLevel = Literal["debug", "info", "warning", "error"]


class LoggingSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The log lines of ``hyperqueue serve`` and ``hyperqueue worker`` (the
    ``hyperqueue.*`` loggers).

    ``format``: ``text`` (default) or ``json``, one object per line with the current
    trace and span ids (``trace_id``, ``span_id``) when a span is active. ``level``:
    ``warning`` by default (``debug``, ``info``, ``warning``, ``error``). ``file``: a
    path to write to instead of standard error, rotated when it passes ``max_bytes``
    (default 10 MiB, from 1 KiB to 10 GiB): rotated files are gzip-compressed
    (``hq.log.1.gz``, the newest), ``backups`` of them are kept (default 5, at most
    1,000; 0 keeps none) and those older than ``max_age_days`` (default 14, at most
    3,650) are deleted at each rotation.
    """

    format: LogFormat = "text"
    level: LogLevel = "warning"
    file: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    max_bytes: Annotated[int, msgspec.Meta(ge=1024, le=10 * 1024 * _MiB)] = 10 * _MiB
    backups: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 5
    max_age_days: Annotated[float, msgspec.Meta(gt=0, le=3650)] = 14.0


class Config(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The whole configuration. ``Config()`` is the documented default."""

    server: ServerSettings = msgspec.field(default_factory=ServerSettings)
    storage: StorageSettings = msgspec.field(default_factory=StorageSettings)
    workers: WorkerSettings = msgspec.field(default_factory=WorkerSettings)
    keys: list[ApiKey] = msgspec.field(default_factory=list)
    tenants: dict[Annotated[str, msgspec.Meta(min_length=1)], TenantQuota] = msgspec.field(
        default_factory=dict
    )
    rate_limits: RateLimits = msgspec.field(default_factory=RateLimits)
    retention: RetentionSettings = msgspec.field(default_factory=RetentionSettings)
    metrics: MetricsSettings = msgspec.field(default_factory=MetricsSettings)
    openapi: OpenApiSettings = msgspec.field(default_factory=OpenApiSettings)
    logging: LoggingSettings = msgspec.field(default_factory=LoggingSettings)
    templates: dict[Annotated[str, msgspec.Meta(min_length=1)], JobTemplate] = msgspec.field(
        default_factory=dict
    )
    """Named job defaults (``[templates.nightly] queue = "reports"``) that submissions
    refer to with ``template``; defined on the served queue at start."""

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for i, key in enumerate(self.keys):
            if key.name in seen:
                raise ValueError(f"`keys[{i}].name`: duplicate key name {key.name!r}")
            seen.add(key.name)
            if key.tenant is not None and self.tenants and key.tenant not in self.tenants:
                raise ValueError(f"`keys[{i}].tenant`: unknown tenant {key.tenant!r}")


# --------------------------------------------------------------------------- validation

_AT = re.compile(r"^(?P<reason>.*) - at `\$(?P<path>[^`]*)`$", re.DOTALL)
_SUB = re.compile(r"^`(?P<sub>[^`]+)`: (?P<reason>.*)$", re.DOTALL)
_GOT = re.compile(r", got `[^`]*`$")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<name>[^`]*)`$")
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]|\[\.\.\.\]")


def _steps(path: str) -> list[str | int]:
    """``keys[0].name`` -> ``["keys", 0, "name"]``."""
    steps: list[str | int] = []
    for match in _STEP.finditer("." + path if path and path[0] != "[" else path):
        name, index = match.groups()
        steps.append(name if name is not None else int(index) if index is not None else "...")
    return steps


_IDENT = re.compile(r"^[A-Za-z0-9_-]+$")


def _join(steps: list[str | int]) -> str:
    out = ""
    for step in steps:
        if isinstance(step, int):
            out += f"[{step}]"
        elif not _IDENT.match(step):
            out += f"[{_show(step)}]"
        else:
            out += f".{step}" if out else step
    return out


_MISSING = object()


def _lookup(document: Any, steps: list[str | int]) -> Any:
    for step in steps:
        in_list = isinstance(step, int) and isinstance(document, list) and step < len(document)
        if not (in_list or (isinstance(document, dict) and step in document)):
            return _MISSING
        document = document[step]
    return document


def _show(value: Any) -> str:
    try:
        return msgspec.json.encode(value).decode()
    except (TypeError, msgspec.EncodeError):
        return repr(value)


class _Sources:
    """Which source gave each key path: the env var for a path set from the environment,
    else the file (or ``"defaults"``)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.env: dict[tuple[str | int, ...], str] = {}

    def of(self, steps: list[str | int]) -> str:
        for end in range(len(steps), 0, -1):
            found = self.env.get(tuple(steps[:end]))
            if found is not None:
                return found
        # an error at a table the environment created (an unknown section, say)
        for env_steps, name in self.env.items():
            if list(env_steps[: len(steps)]) == steps:
                return name
        return self.base


def _convert(document: dict[str, Any], sources: _Sources) -> Config:
    # Dict keys show as [...] in msgspec's paths: check tenants one by one first, so an
    # error names the tenant.
    tenants = document.get("tenants")
    if isinstance(tenants, dict):
        for name, quota in tenants.items():
            try:
                msgspec.convert(quota, TenantQuota, strict=False)
            except msgspec.ValidationError as exc:
                raise _error(exc, document, sources, prefix=["tenants", name]) from None
    limits = document.get("rate_limits")
    routes = limits.get("routes") if isinstance(limits, dict) else None
    if isinstance(routes, dict):
        for route, limit in routes.items():
            steps: list[str | int] = ["rate_limits", "routes", route]
            try:
                _check_limit("", limit if isinstance(limit, str) else "")
            except ValueError:
                reason = f'expected a limit such as "100/minute", got {_show(limit)}'
                raise ConfigError(reason, path=_join(steps), source=sources.of(steps)) from None
    try:
        return msgspec.convert(document, Config, strict=False)
    except msgspec.ValidationError as exc:
        raise _error(exc, document, sources) from None


def _error(
    exc: msgspec.ValidationError,
    document: dict[str, Any],
    sources: _Sources,
    prefix: list[str | int] | None = None,
) -> ConfigError:
    text = str(exc)
    match = _AT.match(text)
    reason, path = (match["reason"], match["path"]) if match else (text, "")
    steps = [*(prefix or []), *_steps(path)]
    sub = _SUB.match(reason)
    if sub:
        steps += _steps(sub["sub"])
        reason = sub["reason"]
    unknown = _UNKNOWN.match(reason)
    if unknown:
        steps.append(unknown["name"])
        reason = "unknown key"
    else:
        choices = _CHOICES.get(next((s for s in reversed(steps) if isinstance(s, str)), ""))
        if choices and reason.startswith("Invalid enum value"):
            reason = f"expected one of {', '.join(map(repr, choices))}"
        value = _lookup(document, steps)
        if value is not _MISSING and not sub:
            reason = f"{_GOT.sub('', reason)}, got {_show(value)}"
    reason = reason.replace("`", "")
    reason = reason[:1].lower() + reason[1:]
    return ConfigError(reason, path=_join(steps), source=sources.of(steps))


_CHOICES: dict[str, tuple[str, ...]] = {
    "kind": get_args(StorageKind),
    "roles": get_args(Role),
    "format": get_args(LogFormat),
    "level": get_args(LogLevel),
}


def _merge(into: dict[str, Any], steps: list[str], value: Any) -> None:
    for step in steps[:-1]:
        child = into.get(step)
        if not isinstance(child, dict):
            child = into[step] = {}
        into = child
    into[steps[-1]] = value


def _env_layer(
    document: dict[str, Any], env: Mapping[str, str], prefix: str, sources: _Sources
) -> None:
    for name in sorted(env):
        if not name.startswith(prefix) or len(name) == len(prefix):
            continue
        if name[len(prefix) :] in _CLIENT_KEYS:
            continue  # HYPERQUEUE_URL and the like: the client commands', not a key
        steps = [part.lower() for part in name[len(prefix) :].split("__")]
        if not all(steps):
            raise ConfigError(
                "empty key part (use single underscores inside a key, double between levels)",
                path=".".join(steps),
                source=name,
            )
        raw = env[name]
        value: Any = raw
        if raw.lstrip()[:1] in ("[", "{"):
            try:
                value = msgspec.json.decode(raw)
            except msgspec.DecodeError as exc:
                raise ConfigError(
                    f"invalid JSON ({exc})", path=".".join(steps), source=name
                ) from None
        _merge(document, steps, value)
        sources.env[tuple(steps)] = name


def parse_config(
    document: Mapping[str, Any],
    *,
    source: str = "defaults",
    env: Mapping[str, str] | None = None,
    env_prefix: str = ENV_PREFIX,
) -> Config:
    """Validate ``document`` (as decoded from TOML or JSON), with ``env`` on top when
    given. ``source`` names the document in errors."""
    merged = msgspec.json.decode(msgspec.json.encode(document))  # a deep copy of plain data
    if not isinstance(merged, dict):
        raise ConfigError("expected a table at the top level", source=source)
    sources = _Sources(source)
    if env is not None:
        _env_layer(merged, env, env_prefix, sources)
    return _convert(merged, sources)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the file ({exc.strerror or exc})", source=str(path)
        ) from None
    return _decode_toml(data, str(path))


def _decode_toml(data: bytes | str, source: str) -> dict[str, Any]:
    try:
        text = data.decode() if isinstance(data, bytes) else data
        return tomllib.loads(text)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"not valid TOML ({exc})", source=source) from None


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    env_prefix: str = ENV_PREFIX,
) -> Config:
    """The configuration from the defaults, the TOML file at ``path`` (when given) and the
    environment (``os.environ`` unless ``env`` is given); the environment wins.

    Raises :class:`ConfigError` naming the key path and its source.
    """
    document = _read_toml(Path(path)) if path is not None else {}
    return parse_config(
        document,
        source=str(path) if path is not None else "defaults",
        env=os.environ if env is None else env,
        env_prefix=env_prefix,
    )


# --------------------------------------------------------------------------- export / import


def _plain(config: Config) -> dict[str, Any]:
    return msgspec.to_builtins(config)  # type: ignore[no-any-return]


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def dump_config(config: Config, *, format: Format = "toml") -> str:
    """The whole configuration (defaults included) as TOML or JSON text.

    TOML has no null, so unset optional keys are left out; reading the text back gives
    an equal :class:`Config`.
    """
    if format == "json":
        return msgspec.json.format(msgspec.json.encode(config)).decode()
    if format != "toml":
        raise ConfigError(f"unknown format {format!r}; expected 'toml' or 'json'")
    try:
        import tomli_w
    except ImportError:  # pragma: no cover - depends on the installed extras
        raise ConfigError(
            "exporting TOML needs tomli-w: pip install 'hyperqueue-jobs[server]'"
        ) from None
    return tomli_w.dumps(_drop_none(_plain(config)))


def read_config(text: str | bytes, *, format: Format = "toml", source: str = "import") -> Config:
    """Validate a configuration document given as TOML or JSON text (no environment)."""
    if format == "json":
        try:
            document = msgspec.json.decode(text)
        except msgspec.DecodeError as exc:
            raise ConfigError(f"not valid JSON ({exc})", source=source) from None
    elif format == "toml":
        document = _decode_toml(text, source)
    else:
        raise ConfigError(f"unknown format {format!r}; expected 'toml' or 'json'", source=source)
    if not isinstance(document, dict):
        raise ConfigError("expected an object at the top level", source=source)
    return parse_config(document, source=source)


# --------------------------------------------------------------------------- diff


class ConfigChange(msgspec.Struct, frozen=True, kw_only=True):
    """One key whose value differs; ``before`` / ``after`` are ``None`` where the key is
    absent (``kind`` says which)."""

    path: str
    kind: Literal["added", "removed", "changed"]
    before: Any = None
    after: Any = None


class ConfigDiff(msgspec.Struct, frozen=True, kw_only=True):
    """The keys that differ between two configurations, in key order."""

    changes: tuple[ConfigChange, ...]

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(change.path for change in self.changes)

    def __bool__(self) -> bool:
        return bool(self.changes)


def _flatten(value: Any, steps: list[str | int]) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key in value:
            yield from _flatten(value[key], [*steps, key])
    elif isinstance(value, list) and (not value or isinstance(value[0], dict)):
        for i, item in enumerate(value):
            yield from _flatten(item, [*steps, i])
    else:
        yield _join(steps), value


def diff_configs(before: Config, after: Config) -> ConfigDiff:
    """Which keys changed from ``before`` to ``after`` (lists of scalars compare whole)."""
    old = dict(_flatten(_plain(before), []))
    new = dict(_flatten(_plain(after), []))
    changes = []
    for path in sorted(old.keys() | new.keys()):
        if path not in new:
            changes.append(ConfigChange(path=path, kind="removed", before=old[path]))
        elif path not in old:
            changes.append(ConfigChange(path=path, kind="added", after=new[path]))
        elif old[path] != new[path]:
            changes.append(
                ConfigChange(path=path, kind="changed", before=old[path], after=new[path])
            )
    return ConfigDiff(changes=tuple(changes))


# --------------------------------------------------------------------------- versions

Row = tuple[int, float, str | None, str | None, str]
"""A stored version: (version, created_at, author, comment, document as JSON text)."""


class ConfigVersionStore(Protocol):
    """Where versions are kept: a list that only grows. Implemented by
    :class:`MemoryConfigStore` and ``hyperqueue_sqlite.ConfigStore``."""

    async def append(
        self, *, created_at: float, author: str | None, comment: str | None, document: str
    ) -> int:
        """Store a new version; return its number (1 for the first, then one more)."""
        ...

    async def fetch(self, version: int) -> Row | None: ...

    async def fetch_latest(self) -> Row | None: ...

    async def fetch_history(self, limit: int) -> list[Row]:
        """The newest ``limit`` versions, newest first."""
        ...


class MemoryConfigStore:
    """Versions in a list, for the memory backend and tests; nothing survives the process."""

    def __init__(self) -> None:
        self._rows: list[Row] = []

    async def append(
        self, *, created_at: float, author: str | None, comment: str | None, document: str
    ) -> int:
        version = len(self._rows) + 1
        self._rows.append((version, created_at, author, comment, document))
        return version

    async def fetch(self, version: int) -> Row | None:
        return self._rows[version - 1] if 1 <= version <= len(self._rows) else None

    async def fetch_latest(self) -> Row | None:
        return self._rows[-1] if self._rows else None

    async def fetch_history(self, limit: int) -> list[Row]:
        return self._rows[::-1][:limit]


class ConfigVersion(msgspec.Struct, frozen=True, kw_only=True):
    """One applied configuration: its number, when (seconds since the epoch), who and why."""

    version: int
    created_at: float
    author: str | None
    comment: str | None
    config: Config


_encode = msgspec.json.Encoder().encode


class ConfigHistory:
    """Every applied configuration, kept as a new version: nothing is overwritten, so a
    rollback or an import is a new version too and the history says who did what.

    ``history_limit`` bounds :meth:`history` (default 100).
    """

    def __init__(self, store: ConfigVersionStore, *, clock: Clock | None = None) -> None:
        self.store = store
        self.clock = clock if clock is not None else SystemClock()

    def _version(self, row: Row) -> ConfigVersion:
        version, created_at, author, comment, document = row
        source = f"stored version {version}"
        try:
            decoded = msgspec.json.decode(document)
        except msgspec.DecodeError as exc:
            raise ConfigError(f"not valid JSON ({exc})", source=source) from None
        if not isinstance(decoded, dict):
            raise ConfigError("expected an object at the top level", source=source)
        config = parse_config(decoded, source=source)
        return ConfigVersion(
            version=version, created_at=created_at, author=author, comment=comment, config=config
        )

    async def record(
        self, config: Config, *, author: str | None = None, comment: str | None = None
    ) -> ConfigVersion:
        """Keep ``config`` as the newest version."""
        created_at = self.clock.now()
        version = await self.store.append(
            created_at=created_at, author=author, comment=comment, document=_encode(config).decode()
        )
        return ConfigVersion(
            version=version, created_at=created_at, author=author, comment=comment, config=config
        )

    async def get(self, version: int) -> ConfigVersion:
        row = await self.store.fetch(version)
        if row is None:
            raise ConfigVersionNotFound(version)
        return self._version(row)

    async def latest(self) -> ConfigVersion | None:
        row = await self.store.fetch_latest()
        return None if row is None else self._version(row)

    async def history(self, *, limit: int = 100) -> list[ConfigVersion]:
        """The newest ``limit`` versions (default 100), newest first."""
        return [self._version(row) for row in await self.store.fetch_history(max(limit, 0))]

    async def diff(self, before: int, after: int) -> ConfigDiff:
        """Which keys changed from version ``before`` to version ``after``."""
        return diff_configs((await self.get(before)).config, (await self.get(after)).config)

    async def rollback(
        self, version: int, *, author: str | None = None, comment: str | None = None
    ) -> ConfigVersion:
        """A new version equal to ``version``."""
        old = await self.get(version)
        return await self.record(
            old.config, author=author, comment=comment or f"rollback to version {version}"
        )

    async def export(self, version: int | None = None, *, format: Format = "toml") -> str:
        """A version (the newest by default) as TOML or JSON text."""
        if version is None:
            found = await self.latest()
            if found is None:
                raise ConfigError("no configuration version is stored yet")
        else:
            found = await self.get(version)
        return dump_config(found.config, format=format)

    async def import_text(
        self,
        text: str | bytes,
        *,
        format: Format = "toml",
        author: str | None = None,
        comment: str | None = None,
        source: str = "import",
    ) -> ConfigVersion:
        """Validate ``text``, then keep it as a new version; an invalid document raises
        :class:`ConfigError` and stores nothing."""
        config = read_config(text, format=format, source=source)
        return await self.record(config, author=author, comment=comment)


# --------------------------------------------------------------------------- hot reload

OnChange = Callable[[Config], Awaitable[None] | None]


class ConfigWatcher:
    """Reloads the configuration when its file changes.

    Every ``interval`` seconds (default 2.0, on the injected clock) the file's mtime and
    size are compared; when they moved, the content's SHA-256 decides whether it really
    changed. A valid new configuration becomes :attr:`current`, is recorded in ``history``
    when one is given, and is handed to ``on_change``; an invalid one is refused: the
    current configuration stays and one warning line names the problem (once per content).
    The environment layer (``env``, default ``os.environ``) applies on every reload.

    The file is read in the event loop's thread on purpose: a configuration file is a few
    kilobytes, and a worker thread would make the poll invisible to a fake clock's
    "all tasks blocked" check.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        on_change: OnChange | None = None,
        interval: float = 2.0,
        clock: Clock | None = None,
        env: Mapping[str, str] | None = None,
        history: ConfigHistory | None = None,
    ) -> None:
        if not interval > 0:
            raise ValueError("interval must be > 0 seconds")
        self.path = Path(path)
        self.on_change = on_change
        self.interval = interval
        self.clock = clock if clock is not None else SystemClock()
        self.env = env
        self.history = history
        self.current: Config = Config()
        self.version: int | None = None
        self.reloads = 0
        self.refusals = 0
        self._stat: tuple[int, int] | None = None
        self._digest = b""
        self._tg: anyio.abc.TaskGroup | None = None

    def _load(self, data: bytes) -> Config:
        document = _decode_toml(data, str(self.path))
        return parse_config(
            document,
            source=str(self.path),
            env=os.environ if self.env is None else self.env,
        )

    async def _apply(self, config: Config, *, comment: str) -> None:
        self.current = config
        if self.history is not None:
            recorded = await self.history.record(
                config, author=f"file:{self.path}", comment=comment
            )
            self.version = recorded.version

    async def __aenter__(self) -> Self:
        stat = self.path.stat() if self.path.exists() else None
        data = _read_file(self.path)
        self._stat = None if stat is None else (stat.st_mtime_ns, stat.st_size)
        self._digest = hashlib.sha256(data).digest()
        await self._apply(self._load(data), comment="loaded")
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._poll)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        return await self._tg.__aexit__(exc_type, exc, tb)

    async def _poll(self) -> None:
        while True:
            await self.clock.sleep(self.interval)
            await self.check()

    async def check(self) -> bool:
        """Look at the file now; True when a new configuration was applied."""
        try:
            stat = self.path.stat()
        except OSError as exc:
            if self._stat is not None:
                logger.warning(
                    "config %s: cannot read the file (%s); keeping the current configuration",
                    self.path,
                    exc.strerror or exc,
                )
                self._stat = None
            return False
        key = (stat.st_mtime_ns, stat.st_size)
        if key == self._stat:
            return False
        self._stat = key
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            logger.warning(
                "config %s: cannot read the file (%s); keeping the current configuration",
                self.path,
                exc.strerror or exc,
            )
            return False
        digest = hashlib.sha256(data).digest()
        if digest == self._digest:
            return False
        self._digest = digest
        try:
            config = self._load(data)
        except ConfigError as exc:
            self.refusals += 1
            logger.warning("config reload refused, keeping the current configuration: %s", exc)
            return False
        if config == self.current:
            return False
        await self._apply(config, comment="file changed")
        self.reloads += 1
        logger.info("config %s reloaded", self.path)
        if self.on_change is not None:
            try:
                result = self.on_change(config)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("config %s: the on_change callback failed", self.path)
        return True


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the file ({exc.strerror or exc})", source=str(path)
        ) from None
