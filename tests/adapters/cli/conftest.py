"""Real ``hyperqueue serve`` processes for the operator commands, one per module (with and
without API keys), and a :class:`~click.testing.CliRunner` with no ``HYPERQUEUE_*``
variables, in a folder of its own (so no stray ``./hyperqueue.pid`` is read)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

sys.path.insert(0, str(Path(__file__).parents[1] / "server"))
from cli_helpers import Invoke, keys_toml
from server_process import Server, start_server, stop

from hyperqueue_cli import main


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """An open server (no keys) on SQLite, for the whole module."""
    running = start_server(tmp_path_factory.mktemp("open"))
    yield running
    stop(running)


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with an admin, an operator and a viewer key, for the whole module."""
    folder = tmp_path_factory.mktemp("keyed")
    (folder / "hq.toml").write_text(keys_toml())
    running = start_server(folder, "--config", "hq.toml")
    yield running
    stop(running)


@pytest.fixture
def invoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Invoke:
    """``invoke(*args, env=..., input=...)``: the CLI in this process, from an empty
    folder, with only the ``HYPERQUEUE_*`` variables given."""
    for name in list(os.environ):
        if name.startswith("HYPERQUEUE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def run(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> Result:
        return runner.invoke(main, list(args), env=env, input=input, catch_exceptions=False)

    return run
