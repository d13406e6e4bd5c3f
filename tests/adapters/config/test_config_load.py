"""Loading the server's configuration: defaults, a TOML file, the environment on top."""

from __future__ import annotations

from pathlib import Path

import pytest

from hyperqueue import HyperqueueError
from hyperqueue_litestar._config import (
    ApiKey,
    Config,
    ConfigError,
    TenantQuota,
    load_config,
    parse_config,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hyperqueue.toml"
    path.write_text(text)
    return path


def test_defaults_are_bounded_and_documented() -> None:
    config = load_config(env={})
    assert config == Config()
    assert config.server.max_body_bytes == 10 * 1024 * 1024
    assert config.workers.concurrency == 10
    assert config.storage.kind == "sqlite"
    assert config.storage.path == "hyperqueue.db"
    # submitting is stricter than reading
    submit = config.rate_limits.routes["POST /api/v1/jobs"]
    assert int(submit.split("/")[0]) < int(config.rate_limits.default.split("/")[0])


def test_file_values_override_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [server]
        port = 9000
        [workers]
        concurrency = 4
        queues = ["emails", "reports"]
        [tenants.acme]
        max_running = 5
        """,
    )
    config = load_config(path, env={})
    assert config.server.port == 9000
    assert config.server.host == "127.0.0.1"
    assert config.workers.concurrency == 4
    assert config.workers.queues == ["emails", "reports"]
    assert config.tenants == {"acme": TenantQuota(max_running=5)}


def test_environment_wins_over_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[workers]\nconcurrency = 4\nlease = 12.5\n")
    env = {
        "HYPERQUEUE_WORKERS__CONCURRENCY": "20",
        "HYPERQUEUE_WORKERS__QUEUES": '["a", "b"]',
        "HYPERQUEUE_TENANTS__ACME__MAX_QUEUED": "7",
        "HYPERQUEUE_SERVER__HOST": "0.0.0.0",
        "OTHER_VARIABLE": "ignored",
    }
    config = load_config(path, env=env)
    assert config.workers.concurrency == 20
    assert config.workers.lease == 12.5  # kept from the file
    assert config.workers.queues == ["a", "b"]
    assert config.tenants["acme"].max_queued == 7
    assert config.server.host == "0.0.0.0"


def test_os_environ_is_read_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYPERQUEUE_SERVER__PORT", "8123")
    assert load_config().server.port == 8123


def test_error_in_the_file_names_key_value_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[workers]\nconcurrency = "x"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    error = info.value
    assert isinstance(error, HyperqueueError)
    assert error.path == "workers.concurrency"
    assert error.source == str(path)
    assert str(error) == f'workers.concurrency: expected int, got "x" (from {path})'


def test_error_in_the_environment_names_the_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "[workers]\nconcurrency = 4\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={"HYPERQUEUE_WORKERS__CONCURRENCY": "0"})
    assert info.value.path == "workers.concurrency"
    assert info.value.source == "HYPERQUEUE_WORKERS__CONCURRENCY"
    assert "expected int >= 1" in str(info.value)


@pytest.mark.parametrize(
    ("text", "path", "words"),
    [
        ("[server]\nport = 70000\n", "server.port", "<= 65535"),
        ("[server]\nmax_body_bytes = 0\n", "server.max_body_bytes", ">= 1"),
        ('[storage]\nkind = "mysql"\n', "storage.kind", "expected one of 'memory', 'sqlite'"),
        ('[storage]\nkind = "postgres"\n', "storage.dsn", "required when kind is 'postgres'"),
        ('[storage]\ndsn = "postgresql://x"\n', "storage.dsn", "only a 'postgres' storage"),
        ("[workers]\nqueues = []\n", "workers.queues", "length >= 1"),
        ("[workers]\nlease = 0\n", "workers.lease", "> 0"),
        ("[tenants.acme]\nmax_running = 0\n", "tenants.acme.max_running", ">= 1"),
        (
            '[rate_limits.routes]\n"GET /api/v1/jobs" = "lots"\n',
            'rate_limits.routes["GET /api/v1/jobs"]',
            '"100/minute", got "lots"',
        ),
        ('[rate_limits]\ndefault = "often"\n', "rate_limits.default", "got 'often'"),
        ("[retention]\nmax_age_days = -1\n", "retention.max_age_days", "> 0"),
        ('[[keys]]\nname = "ci"\nkey_hash = "abc"\n', "keys[0].key_hash", "regex"),
        (
            f'[[keys]]\nname = "ci"\nkey_hash = "{"0" * 64}"\nroles = ["root"]\n',
            "keys[0].roles[0]",
            "'admin', 'operator', 'viewer'",
        ),
        (
            f'[[keys]]\nname = "a"\nkey_hash = "{"0" * 64}"\n'
            f'[[keys]]\nname = "a"\nkey_hash = "{"1" * 64}"\n',
            "keys[1].name",
            "duplicate",
        ),
    ],
)
def test_every_validation_error_names_the_key_and_the_source(
    tmp_path: Path, text: str, path: str, words: str
) -> None:
    file = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(file, env={})
    assert info.value.path == path
    assert info.value.source == str(file)
    assert str(info.value).startswith(f"{path}: ")
    assert words in str(info.value)


def test_unknown_keys_are_refused_in_the_file_and_the_environment(tmp_path: Path) -> None:
    file = write(tmp_path, "[workers]\nconcurency = 4\n")
    with pytest.raises(ConfigError, match=r"^workers\.concurency: unknown key") as info:
        load_config(file, env={})
    assert info.value.source == str(file)

    with pytest.raises(ConfigError) as info:
        load_config(env={"HYPERQUEUE_SERVR__PORT": "1"})
    assert info.value.path == "servr"
    assert info.value.source == "HYPERQUEUE_SERVR__PORT"
    assert "unknown key" in str(info.value)


def test_invalid_toml_and_missing_file_name_the_file(tmp_path: Path) -> None:
    file = write(tmp_path, "[workers\n")
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        load_config(file, env={})
    assert info.value.source == str(file)
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_config(tmp_path / "absent.toml", env={})


def test_invalid_json_in_the_environment_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="invalid JSON") as info:
        load_config(env={"HYPERQUEUE_WORKERS__QUEUES": "[oops"})
    assert info.value.source == "HYPERQUEUE_WORKERS__QUEUES"


def test_keys_store_only_a_hash_and_are_bound_to_known_tenants() -> None:
    digest = ApiKey.hash_key("s3cret")
    config = parse_config(
        {
            "tenants": {"acme": {}},
            "keys": [{"name": "ops", "key_hash": digest, "roles": ["operator"], "tenant": "acme"}],
        }
    )
    assert config.keys[0].key_hash == digest
    assert "s3cret" not in repr(config)
    assert config.keys[0].roles == ["operator"]
    with pytest.raises(ConfigError, match="unknown tenant 'other'") as info:
        parse_config(
            {
                "tenants": {"acme": {}},
                "keys": [{"name": "x", "key_hash": digest, "tenant": "other"}],
            }
        )
    assert info.value.path == "keys[0].tenant"
