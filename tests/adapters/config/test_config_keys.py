"""Keys that validate take effect, or are refused: the client commands' variables are not
configuration, unimplemented storage and retired keys are refused with their reason,
and stored versions written before a key was retired still read."""

from __future__ import annotations

import msgspec
import pytest

from hyperqueue_litestar._config import (
    CLIENT_ENV_VARS,
    Config,
    ConfigError,
    ConfigHistory,
    MemoryConfigStore,
    RetentionSettings,
    WorkerSettings,
    dump_config,
    load_config,
    parse_config,
    read_config,
)


def test_client_variables_are_not_configuration_keys() -> None:
    assert CLIENT_ENV_VARS == ("HYPERQUEUE_URL", "HYPERQUEUE_API_KEY")
    env = {
        "HYPERQUEUE_URL": "http://127.0.0.1:8000",
        "HYPERQUEUE_API_KEY": "s3cret",
        "HYPERQUEUE_WORKERS__CONCURRENCY": "5",
    }
    assert load_config(env=env).workers.concurrency == 5


def test_only_the_exact_client_names_are_skipped() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env={"HYPERQUEUE_URLS": "x"})
    assert info.value.path == "urls"
    assert info.value.source == "HYPERQUEUE_URLS"


def test_client_names_follow_another_prefix() -> None:
    env = {"APP_URL": "http://x", "APP_WORKERS__PREFETCH": "3", "HYPERQUEUE_URLS": "ignored"}
    assert load_config(env=env, env_prefix="APP_").workers.prefetch == 3


def test_postgres_needs_a_dsn_and_only_postgres_takes_one() -> None:
    config = parse_config({"storage": {"kind": "postgres", "dsn": "postgresql://db/hq"}})
    assert (config.storage.kind, config.storage.dsn) == ("postgres", "postgresql://db/hq")
    with pytest.raises(ConfigError) as info:
        parse_config({"storage": {"kind": "postgres"}}, source="hq.toml")
    assert info.value.path == "storage.dsn" and "required" in info.value.reason
    assert info.value.source == "hq.toml"
    with pytest.raises(ConfigError) as info:
        parse_config({"storage": {"kind": "sqlite", "dsn": "postgresql://db/hq"}})
    assert info.value.path == "storage.dsn"
    assert "only a 'postgres' storage uses it" in info.value.reason
    env = {"HYPERQUEUE_STORAGE__KIND": "postgres", "HYPERQUEUE_STORAGE__DSN": "postgresql://h/d"}
    assert load_config(env=env).storage.dsn == "postgresql://h/d"


def test_memory_storage_needs_no_path() -> None:
    config = parse_config({"storage": {"kind": "memory"}})
    assert config.storage.kind == "memory"


def test_workers_queues_defaults_to_every_queue_and_round_trips() -> None:
    assert WorkerSettings().queues is None
    assert read_config(dump_config(Config())) == Config()
    chosen = parse_config({"workers": {"queues": ["a"]}})
    assert read_config(dump_config(chosen)).workers.queues == ["a"]
    assert read_config(dump_config(chosen, format="json"), format="json") == chosen


def test_retention_interval_is_a_key_with_bounds() -> None:
    assert RetentionSettings().interval_seconds == 3600.0
    assert parse_config({"retention": {"interval_seconds": 0.5}}).retention.interval_seconds == 0.5
    for bad in (0, 86_401):
        with pytest.raises(ConfigError) as info:
            parse_config({"retention": {"interval_seconds": bad}})
        assert info.value.path == "retention.interval_seconds"
    with pytest.raises(ConfigError) as info:
        parse_config({"retention": {"archive_dir": ""}})
    assert info.value.path == "retention.archive_dir"


@pytest.mark.anyio
async def test_a_version_stored_with_a_retired_key_still_reads() -> None:
    store = MemoryConfigStore()
    old = msgspec.to_builtins(Config())
    old["storage"]["dsn"] = None  # what versions stored before the key was retired hold
    old["workers"]["queues"] = ["default"]
    await store.append(
        created_at=1.0, author="a", comment=None, document=msgspec.json.encode(old).decode()
    )
    version = await ConfigHistory(store).get(1)
    assert version.config.storage == Config().storage
    assert version.config.workers.queues == ["default"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_an_older_json_export_with_a_null_dsn_still_imports() -> None:
    old = msgspec.to_builtins(Config())
    old["storage"]["dsn"] = None
    assert read_config(msgspec.json.encode(old), format="json") == Config()


def test_prefetch_is_auto_by_default_and_takes_auto_or_a_count() -> None:
    assert load_config(env={}).workers.prefetch == "auto"
    assert load_config(env={"HYPERQUEUE_WORKERS__PREFETCH": "auto"}).workers.prefetch == "auto"
    assert load_config(env={"HYPERQUEUE_WORKERS__PREFETCH": "0"}).workers.prefetch == 0
    with pytest.raises(ConfigError) as info:
        load_config(env={"HYPERQUEUE_WORKERS__PREFETCH": "fast"})
    assert info.value.path == "workers.prefetch"
