"""A configuration change can never open a keyed server beyond loopback or lock its admins
out (issue 9): the rule of ``_config_safety`` holds for ``PUT /api/v1/config`` (JSON and
TOML imports), rollbacks, the watched file and ``ConfigApi.apply``; every refusal is a 4xx
``{status_code, detail}`` (one warning line for the file) and one audit record."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

import hyperqueue as hq
from hyperqueue.testing import FakeClock
from hyperqueue_litestar import create_app
from hyperqueue_litestar._audit import Audit, AuditRecord, MemoryAuditSink
from hyperqueue_litestar._auth import Auth
from hyperqueue_litestar._config import ApiKey, Config, ServerSettings, TenantQuota, dump_config
from hyperqueue_litestar._config_routes import ConfigApi
from hyperqueue_litestar._config_safety import ConfigRefused, check_change, is_loopback
from hyperqueue_litestar._limits import RateLimitMiddleware

sys.path.insert(0, str(Path(__file__).parents[1] / "server"))
from server_process import Server, start_server, stop

pytestmark = pytest.mark.anyio

ADMIN = {"Authorization": "Bearer admin-secret"}
OPS = {"Authorization": "Bearer ops-secret"}
LIMITS = {"default": "500/minute", "routes": {}}


def key(name: str, secret: str, role: str, tenant: str | None = None) -> ApiKey:
    return ApiKey(name=name, key_hash=ApiKey.hash_key(secret), roles=[role], tenant=tenant)  # type: ignore[list-item]


ROOT = key("root", "admin-secret", "admin")
OPERATOR = key("ops", "ops-secret", "operator")
KEYED = Config(keys=[ROOT, OPERATOR], tenants={"acme": TenantQuota()})
SLOW = ServerSettings(slow_request_ms=123)


def plain(value: Any) -> Any:
    return msgspec.to_builtins(value)


def refusals(sink: MemoryAuditSink) -> list[AuditRecord]:
    return [r for r in sink.records if r.event == "security.config_refused"]


# -- the rule alone ---------------------------------------------------------------------


def test_the_rule_alone() -> None:
    open_config = Config()
    check_change(KEYED, KEYED, loopback=False)
    check_change(open_config, open_config, loopback=False)  # already open: may stay so
    check_change(open_config, KEYED, loopback=False)
    check_change(KEYED, open_config, loopback=True)
    with pytest.raises(ConfigRefused) as missing:
        check_change(KEYED, KEYED, loopback=True, keys_given=False)
    assert (missing.value.status_code, missing.value.rule) == (422, "keys_missing")
    check_change(open_config, open_config, loopback=False, keys_given=False)  # nothing dropped
    with pytest.raises(ConfigRefused) as opening:
        check_change(KEYED, open_config, loopback=False)
    assert (opening.value.status_code, opening.value.rule) == (409, "open_beyond_loopback")
    for no_admin in (
        Config(keys=[OPERATOR]),
        Config(keys=[key("root", "s", "admin", tenant="acme")], tenants={"acme": TenantQuota()}),
    ):
        with pytest.raises(ConfigRefused) as locked:
            check_change(KEYED, no_admin, loopback=True)
        assert (locked.value.status_code, locked.value.rule) == (409, "no_admin")
        with pytest.raises(ConfigRefused):
            check_change(open_config, no_admin, loopback=True)
    # no admin to lock out: a server run without one (edited by file) may change
    check_change(Config(keys=[OPERATOR]), Config(keys=[OPERATOR, ROOT]), loopback=False)
    check_change(Config(keys=[OPERATOR]), Config(keys=[OPERATOR]), loopback=False)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("localhost", True),
        ("::1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("example.org", False),
    ],
)
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


# -- over HTTP, in process --------------------------------------------------------------


@dataclass
class App:
    client: httpx.AsyncClient
    api: ConfigApi
    sink: MemoryAuditSink


@asynccontextmanager
async def running(
    queue: hq.Queue,
    config: Config,
    *,
    loopback: bool = False,
    history: tuple[Config, ...] = (),
    watch: Path | None = None,
) -> AsyncIterator[App]:
    auth = Auth.from_config(queue, config)
    limits = RateLimitMiddleware(queue, config.rate_limits)
    sink = MemoryAuditSink()
    api = ConfigApi(
        queue,
        config,
        targets=[auth, limits],
        guards=[auth.guard],
        loopback=loopback,
        watch=watch,
        watch_interval=1.0,
        env={},
    )
    for old in history:
        await api.history.record(old, author="earlier")
    app = create_app(
        queue,
        workers=False,
        guards=[auth.guard],
        middleware=[auth.middleware, limits],
        plugins=[Audit(queue, sink, guards=[auth.guard]), api],
    )
    async with app.lifespan():
        transport = httpx.ASGITransport(app=app, client=("127.0.0.7", 4321))
        async with httpx.AsyncClient(transport=transport, base_url="http://hq.test") as client:
            yield App(client, api, sink)


async def test_put_without_keys_is_refused_and_keeps_the_keys(queue: hq.Queue) -> None:
    async with running(queue, KEYED, loopback=True) as app:
        response = await app.client.put(
            "/api/v1/config", json={"rate_limits": LIMITS}, headers=ADMIN
        )
        assert response.status_code == 422
        body = response.json()
        assert body["status_code"] == 422
        assert "keys missing" in body["detail"] and "`keys: []`" in body["detail"]
        assert body["extra"] == {"key": "keys", "rule": "keys_missing"}
        toml = await app.client.put(
            "/api/v1/config",
            content=b'[rate_limits]\ndefault = "500/minute"\n',
            headers={**ADMIN, "Content-Type": "application/toml"},
        )
        assert toml.status_code == 422 and "keys missing" in toml.json()["detail"]
        assert (await app.client.get("/api/v1/jobs")).status_code == 401
        assert app.api.current == KEYED
        assert len(await app.api.history.history()) == 1
    records = refusals(app.sink)
    assert [(r.actor.id, r.action, r.resource, r.result) for r in records] == [
        ("root", "PUT", "/api/v1/config", "refused"),
        ("root", "PUT", "/api/v1/config", "refused"),
    ]
    assert "keys missing" in records[0].metadata["detail"]
    assert not [r for r in app.sink.records if r.event == "config.change"]  # one record each


async def test_put_with_the_keys_still_changes_the_rest(queue: hq.Queue) -> None:
    async with running(queue, KEYED) as app:
        document = {**plain(KEYED), "rate_limits": LIMITS}
        response = await app.client.put("/api/v1/config", json=document, headers=ADMIN)
        assert response.status_code == 200, response.text
        assert app.api.current.rate_limits.default == "500/minute"


async def test_opening_is_refused_beyond_loopback(queue: hq.Queue) -> None:
    async with running(queue, KEYED) as app:  # create_app: the address is unknown
        document = {**plain(KEYED), "keys": []}
        response = await app.client.put("/api/v1/config", json=document, headers=ADMIN)
        assert response.status_code == 409
        assert "open the server" in response.json()["detail"]
        assert "loopback" in response.json()["detail"]
        assert (await app.client.get("/api/v1/jobs")).status_code == 401
        assert (await app.client.put("/api/v1/config", json=document)).status_code == 401
    assert [r.metadata["detail"][:40] for r in refusals(app.sink)] == [
        response.json()["detail"][:40]
    ]


async def test_opening_on_loopback_is_allowed_when_asked_for(queue: hq.Queue) -> None:
    async with running(queue, KEYED, loopback=True) as app:
        document = {**plain(KEYED), "keys": []}
        response = await app.client.put("/api/v1/config", json=document, headers=ADMIN)
        assert response.status_code == 200, response.text
        assert (await app.client.get("/api/v1/jobs")).status_code == 200


@pytest.mark.parametrize(
    "keys",
    [
        [plain(OPERATOR)],
        [plain(key("root", "admin-secret", "admin", tenant="acme")), plain(OPERATOR)],
    ],
    ids=["no-admin", "admin-bound-to-a-tenant"],
)
async def test_a_change_that_locks_admins_out_is_refused(queue: hq.Queue, keys: list[Any]) -> None:
    async with running(queue, KEYED, loopback=True) as app:
        document = {**plain(KEYED), "keys": keys}
        response = await app.client.put("/api/v1/config", json=document, headers=ADMIN)
        assert response.status_code == 409
        assert "lock every admin out" in response.json()["detail"]
        assert (await app.client.get("/api/v1/config", headers=ADMIN)).status_code == 200
    assert len(refusals(app.sink)) == 1


async def test_rollback_to_an_open_version_is_refused_beyond_loopback(queue: hq.Queue) -> None:
    async with running(queue, KEYED, history=(Config(),)) as app:
        response = await app.client.post("/api/v1/config/rollback/1", headers=ADMIN)
        assert response.status_code == 409, response.text
        assert "open the server" in response.json()["detail"]
        assert (await app.client.get("/api/v1/jobs")).status_code == 401
        assert app.api.version == 2
    [record] = refusals(app.sink)
    assert (record.action, record.resource) == ("POST", "/api/v1/config/rollback/{version}")


async def test_rollback_on_loopback_may_open_and_may_not_lock_out(queue: hq.Queue) -> None:
    history = (Config(), Config(keys=[OPERATOR]))
    async with running(queue, KEYED, loopback=True, history=history) as app:
        locked = await app.client.post("/api/v1/config/rollback/2", headers=ADMIN)
        assert locked.status_code == 409
        assert "lock every admin out" in locked.json()["detail"]
        opened = await app.client.post("/api/v1/config/rollback/1", headers=ADMIN)
        assert opened.status_code == 200, opened.text
        assert (await app.client.get("/api/v1/jobs")).status_code == 200


async def test_apply_from_the_host_app_is_held_to_the_rule(queue: hq.Queue) -> None:
    async with running(queue, KEYED) as app:
        with pytest.raises(ConfigRefused):
            await app.api.apply(Config())
        with pytest.raises(ConfigRefused):
            await app.api.apply(KEYED, keys_given=False)
        assert app.api.current == KEYED


# -- the watched file ----------------------------------------------------------------------


def write(path: Path, text: str) -> None:
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    os.utime(path, ns=(before + 1_000_000_000, before + 1_000_000_000))


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def warnings() -> Iterator[Collect]:
    handler = Collect()
    logger = logging.getLogger("hyperqueue.config")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


KEYED_TOML = dump_config(KEYED)
NO_KEYS_TOML = '[rate_limits]\ndefault = "500/minute"\n'
OPEN_TOML = "keys = []\n" + NO_KEYS_TOML
NO_ADMIN_TOML = dump_config(Config(keys=[OPERATOR]))


@pytest.mark.parametrize(
    ("text", "loopback", "why"),
    [
        (NO_KEYS_TOML, True, "keys missing"),
        (OPEN_TOML, False, "open the server"),
        (NO_ADMIN_TOML, True, "lock every admin out"),
    ],
    ids=["keys-left-out", "opening-beyond-loopback", "no-admin"],
)
async def test_a_refused_reload_keeps_the_config_with_one_warning(
    tmp_path: Path,
    queue: hq.Queue,
    clock: FakeClock,
    warnings: Collect,
    text: str,
    loopback: bool,
    why: str,
) -> None:
    path = tmp_path / "hq.toml"
    write(path, KEYED_TOML)
    async with running(queue, KEYED, loopback=loopback, watch=path) as app:
        write(path, text)
        await clock.advance(1.0)
        await clock.advance(1.0)
        assert (await app.client.get("/api/v1/jobs")).status_code == 401
        assert (await app.client.get("/api/v1/jobs", headers=OPS)).status_code == 200
        assert app.api.current == KEYED
        assert len(await app.api.history.history()) == 1
        assert app.api.watcher is not None and app.api.watcher.refusals == 1
        # a later edit that passes the rule applies as usual
        write(path, dump_config(Config(keys=KEYED.keys, tenants=KEYED.tenants, server=SLOW)))
        await clock.advance(1.0)
        assert app.api.current.server == SLOW
    assert len(warnings.lines) == 1, warnings.lines
    assert "refused" in warnings.lines[0] and why in warnings.lines[0]
    assert str(path) in warnings.lines[0]
    [record] = refusals(app.sink)
    assert (record.actor.id, record.action, record.resource) == ("file", "RELOAD", str(path))
    assert why in record.metadata["detail"]


async def test_a_reload_that_opens_on_loopback_applies(
    tmp_path: Path, queue: hq.Queue, clock: FakeClock
) -> None:
    path = tmp_path / "hq.toml"
    write(path, KEYED_TOML)
    async with running(queue, KEYED, loopback=True, watch=path) as app:
        write(path, OPEN_TOML)
        await clock.advance(1.0)
        assert (await app.client.get("/api/v1/jobs")).status_code == 200
        assert app.api.current.keys == []


# -- the finding, on the real server ---------------------------------------------------------


def keyed_file(folder: Path) -> Path:
    path = folder / "hq.toml"
    path.write_text(KEYED_TOML)
    return path


@pytest.fixture
def loopback_server(tmp_path: Path) -> Iterator[Server]:
    server = start_server(tmp_path, "--config", str(keyed_file(tmp_path)))
    yield server
    stop(server)


def test_the_finding_a_config_without_keys_no_longer_opens_the_server(
    loopback_server: Server,
) -> None:
    url = loopback_server.url
    response = httpx.put(f"{url}/api/v1/config", json={"rate_limits": LIMITS}, headers=ADMIN)
    assert response.status_code == 422
    assert "keys missing" in response.json()["detail"]
    assert httpx.get(f"{url}/api/v1/jobs").status_code == 401
    assert httpx.put(f"{url}/api/v1/config", json={"rate_limits": LIMITS}).status_code == 401
    assert httpx.get(f"{url}/api/v1/jobs", headers=OPS).status_code == 200
    no_admin = {**plain(KEYED), "keys": [plain(OPERATOR)]}
    assert httpx.put(f"{url}/api/v1/config", json=no_admin, headers=ADMIN).status_code == 409
    audit = httpx.get(f"{url}/api/v1/audit", headers=ADMIN).json()["items"]
    refused = [r for r in audit if r["event"] == "security.config_refused"]
    assert [(r["actor"]["id"], r["action"], r["result"]) for r in refused] == [
        ("root", "PUT", "refused"),
        ("root", "PUT", "refused"),
    ]
    assert not [r for r in audit if r["event"] == "config.change"]
    # on loopback, removing the keys on purpose is allowed (and says so in the history)
    opened = httpx.put(f"{url}/api/v1/config", json={**plain(KEYED), "keys": []}, headers=ADMIN)
    assert opened.status_code == 200, opened.text
    assert httpx.get(f"{url}/api/v1/jobs").status_code == 200


def test_a_real_server_beyond_loopback_cannot_be_opened(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--config", str(keyed_file(tmp_path)), "--host", "0.0.0.0")
    try:
        url = server.url
        document = {**plain(KEYED), "keys": []}
        response = httpx.put(f"{url}/api/v1/config", json=document, headers=ADMIN)
        assert response.status_code == 409
        assert "loopback" in response.json()["detail"]
        assert httpx.get(f"{url}/api/v1/jobs").status_code == 401
        assert httpx.put(f"{url}/api/v1/config", json=document).status_code == 401
    finally:
        stop(server)
