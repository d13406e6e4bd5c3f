"""Configuration versions: history, export and import, diff and rollback; kept in SQLite
across reopening the file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hyperqueue.testing._clock import FakeClock
from hyperqueue_litestar._config import (
    Config,
    ConfigError,
    ConfigHistory,
    ConfigVersionNotFound,
    ConfigVersionStore,
    MemoryConfigStore,
    TenantQuota,
    WorkerSettings,
    diff_configs,
    dump_config,
    read_config,
)
from hyperqueue_sqlite._config_store import ConfigStore

pytestmark = pytest.mark.anyio

A = Config()
B = Config(workers=WorkerSettings(concurrency=20), tenants={"acme": TenantQuota(max_running=3)})


@pytest.fixture(params=["memory", "sqlite"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[ConfigVersionStore]:
    if request.param == "memory":
        yield MemoryConfigStore()
    else:
        async with ConfigStore(tmp_path / "hq.db") as sqlite_store:
            yield sqlite_store


async def test_every_recorded_version_is_kept_newest_first(store: ConfigVersionStore) -> None:
    clock = FakeClock()
    history = ConfigHistory(store, clock=clock)
    assert await history.latest() is None
    first = await history.record(A, author="alice", comment="initial")
    await clock.advance(60)
    second = await history.record(B, author="bob", comment="more workers")
    assert (first.version, second.version) == (1, 2)
    versions = await history.history()
    assert [(v.version, v.author, v.comment, v.config) for v in versions] == [
        (2, "bob", "more workers", B),
        (1, "alice", "initial", A),
    ]
    assert versions[0].created_at - versions[1].created_at == 60
    assert [v.version for v in await history.history(limit=1)] == [2]
    assert (await history.get(1)).config == A
    with pytest.raises(ConfigVersionNotFound):
        await history.get(3)


async def test_diff_names_the_changed_keys(store: ConfigVersionStore) -> None:
    history = ConfigHistory(store, clock=FakeClock())
    await history.record(A)
    await history.record(B)
    diff = await history.diff(1, 2)
    assert diff.paths == (
        "tenants.acme.max_queued",
        "tenants.acme.max_running",
        "workers.concurrency",
    )
    change = diff.changes[-1]
    assert (change.kind, change.before, change.after) == ("changed", 10, 20)
    assert diff.changes[0].kind == "added"
    assert (await history.diff(2, 1)).changes[0].kind == "removed"
    assert not await history.diff(1, 1)


async def test_rollback_is_a_new_version_equal_to_the_old_one(store: ConfigVersionStore) -> None:
    history = ConfigHistory(store, clock=FakeClock())
    await history.record(A)
    await history.record(B)
    rolled = await history.rollback(1, author="carol")
    assert rolled.version == 3
    assert rolled.config == A
    assert rolled.comment == "rollback to version 1"
    latest = await history.latest()
    assert latest is not None and latest.config == A
    assert len(await history.history()) == 3


@pytest.mark.parametrize("fmt", ["toml", "json"])
async def test_export_import_round_trip(store: ConfigVersionStore, fmt: str) -> None:
    history = ConfigHistory(store, clock=FakeClock())
    await history.record(B)
    text = await history.export(format=fmt)  # type: ignore[arg-type]
    assert read_config(text, format=fmt) == B  # type: ignore[arg-type]
    imported = await history.import_text(text, format=fmt, author="ops")  # type: ignore[arg-type]
    assert imported.version == 2 and imported.config == B
    assert not await history.diff(1, 2)


async def test_an_invalid_import_is_refused_and_stores_nothing(store: ConfigVersionStore) -> None:
    history = ConfigHistory(store, clock=FakeClock())
    await history.record(A)
    with pytest.raises(ConfigError) as info:
        await history.import_text("[workers]\nconcurency = 3\n", source="upload.toml")
    assert info.value.path == "workers.concurency"
    assert info.value.source == "upload.toml"
    with pytest.raises(ConfigError, match="not valid JSON"):
        await history.import_text("{", format="json")
    assert len(await history.history()) == 1


def test_toml_export_leaves_out_unset_keys_and_reads_back_equal() -> None:
    text = dump_config(Config())
    assert "dsn" not in text and "archive_dir" not in text
    assert read_config(text) == Config()
    assert diff_configs(read_config(text), B).paths[-1] == "workers.concurrency"


async def test_sqlite_versions_survive_reopening_the_file(tmp_path: Path) -> None:
    path = tmp_path / "hq.db"
    async with ConfigStore(path) as store:
        history = ConfigHistory(store, clock=FakeClock())
        await history.record(A, author="alice")
        await history.record(B, author="bob", comment="scale up")
    async with ConfigStore(path) as store:
        history = ConfigHistory(store, clock=FakeClock())
        versions = await history.history()
        assert [(v.version, v.author, v.config) for v in versions] == [
            (2, "bob", B),
            (1, "alice", A),
        ]
        assert (await history.record(A)).version == 3
