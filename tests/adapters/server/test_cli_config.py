"""``hyperqueue config show`` and ``hyperqueue config validate``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from hyperqueue_cli import main
from hyperqueue_litestar._config import Config, read_config

GOOD = """
[workers]
concurrency = 4

[tenants.acme]
max_queued = 50
"""


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    for name in list(os.environ):
        if name.startswith("HYPERQUEUE_"):
            monkeypatch.delenv(name)
    return CliRunner()


def test_show_prints_file_environment_and_defaults_as_toml(
    runner: CliRunner, tmp_path: Path
) -> None:
    path = tmp_path / "hq.toml"
    path.write_text(GOOD)
    result = runner.invoke(
        main, ["config", "show", "--config", str(path)], env={"HYPERQUEUE_SERVER__PORT": "9001"}
    )
    assert result.exit_code == 0, result.output
    shown = read_config(result.output)
    assert shown.workers.concurrency == 4  # the file
    assert shown.server.port == 9001  # the environment wins
    assert shown.tenants["acme"].max_queued == 50
    assert shown.rate_limits == Config().rate_limits  # the defaults, written out


def test_show_json_and_without_a_file_gives_the_defaults(runner: CliRunner) -> None:
    result = runner.invoke(main, ["config", "show", "--json"])
    assert result.exit_code == 0, result.output
    assert read_config(result.output, format="json") == Config()
    assert json.loads(result.output)["server"]["port"] == 8000


def test_validate_a_good_file(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "hq.toml"
    path.write_text(GOOD)
    result = runner.invoke(main, ["config", "validate", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "valid"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[workers]\nconcurrency = 0\n", "workers.concurrency"),
        ("[server]\nprot = 80\n", "server.prot"),
        ("[storage]\nkind = 'mongo'\n", "storage.kind"),
        ("[workers\n", "not valid TOML"),
    ],
)
def test_validate_a_bad_file_exits_1_naming_the_key_and_the_file(
    runner: CliRunner, tmp_path: Path, text: str, named: str
) -> None:
    path = tmp_path / "hq.toml"
    path.write_text(text)
    result = runner.invoke(main, ["config", "validate", str(path)])
    assert result.exit_code == 1
    assert "valid\n" not in result.stdout
    assert named in result.stderr
    assert str(path) in result.stderr


def test_validate_names_the_variable_when_the_environment_is_wrong(
    runner: CliRunner, tmp_path: Path
) -> None:
    path = tmp_path / "hq.toml"
    path.write_text(GOOD)
    env = {"HYPERQUEUE_WORKERS__LEASE": "soon"}
    result = runner.invoke(main, ["config", "validate", str(path)], env=env)
    assert result.exit_code == 1
    assert "workers.lease" in result.stderr
    assert "HYPERQUEUE_WORKERS__LEASE" in result.stderr
    alone = runner.invoke(main, ["config", "validate", "--no-env", str(path)], env=env)
    assert alone.exit_code == 0
    assert alone.output.strip() == "valid"


def test_validate_a_missing_file(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["config", "validate", str(tmp_path / "nope.toml")])
    assert result.exit_code == 1
    assert "nope.toml" in result.stderr
