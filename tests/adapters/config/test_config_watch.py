"""Hot reload: a valid change of the file is applied, an invalid one refused and logged."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import anyio
import pytest

from hyperqueue.testing._clock import FakeClock
from hyperqueue_litestar._config import (
    Config,
    ConfigError,
    ConfigHistory,
    ConfigWatcher,
    MemoryConfigStore,
)

pytestmark = pytest.mark.anyio


def rewrite(path: Path, text: str) -> None:
    """Write and move the mtime on, as an editor saving a second later would."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    os.utime(path, ns=(before + 1_000_000_000, before + 1_000_000_000))


async def test_a_valid_change_is_applied_after_one_interval(tmp_path: Path) -> None:
    path = tmp_path / "hq.toml"
    path.write_text("[workers]\nconcurrency = 4\n")
    clock = FakeClock()
    seen: list[Config] = []

    async def on_change(config: Config) -> None:
        seen.append(config)

    with anyio.fail_after(10):
        async with ConfigWatcher(path, on_change=on_change, interval=2.0, clock=clock, env={}) as w:
            assert w.current.workers.concurrency == 4
            rewrite(path, "[workers]\nconcurrency = 8\n")
            await clock.advance(1.0)
            assert w.current.workers.concurrency == 4  # not polled yet
            await clock.advance(1.0)
            assert w.current.workers.concurrency == 8
            assert [c.workers.concurrency for c in seen] == [8]
            # nothing changed: no second call
            await clock.advance(10.0)
            assert len(seen) == 1
            assert w.reloads == 1


async def test_an_invalid_change_keeps_the_old_config_and_logs_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "hq.toml"
    path.write_text("[workers]\nconcurrency = 4\n")
    clock = FakeClock()
    seen: list[Config] = []
    caplog.set_level(logging.WARNING, logger="hyperqueue.config")
    with anyio.fail_after(10):
        async with ConfigWatcher(path, on_change=seen.append, clock=clock, env={}) as watcher:
            rewrite(path, '[workers]\nconcurrency = "many"\n')
            await clock.advance(2.0)
            assert watcher.current.workers.concurrency == 4
            assert seen == []
            records = [r for r in caplog.records if r.name == "hyperqueue.config"]
            assert len(records) == 1
            message = records[0].getMessage()
            assert "refused" in message
            assert f'workers.concurrency: expected int, got "many" (from {path})' in message
            # the same bad content is not reported again on every poll
            await clock.advance(10.0)
            assert len([r for r in caplog.records if r.name == "hyperqueue.config"]) == 1
            # a fixed file is applied
            rewrite(path, "[workers]\nconcurrency = 6\n")
            await clock.advance(2.0)
            assert watcher.current.workers.concurrency == 6
            assert [c.workers.concurrency for c in seen] == [6]


async def test_the_environment_still_wins_after_a_reload(tmp_path: Path) -> None:
    path = tmp_path / "hq.toml"
    path.write_text("[server]\nport = 9000\n")
    clock = FakeClock()
    env = {"HYPERQUEUE_SERVER__PORT": "9100"}
    with anyio.fail_after(10):
        async with ConfigWatcher(path, clock=clock, env=env) as watcher:
            rewrite(path, "[server]\nport = 9001\n[workers]\nconcurrency = 3\n")
            await clock.advance(2.0)
            assert watcher.current.server.port == 9100
            assert watcher.current.workers.concurrency == 3


async def test_applied_versions_are_recorded_with_their_source(tmp_path: Path) -> None:
    path = tmp_path / "hq.toml"
    path.write_text("[workers]\nconcurrency = 4\n")
    clock = FakeClock()
    history = ConfigHistory(MemoryConfigStore(), clock=clock)
    with anyio.fail_after(10):
        async with ConfigWatcher(path, clock=clock, env={}, history=history) as watcher:
            rewrite(path, "[workers]\nconcurrency = 5\n")
            await clock.advance(2.0)
            rewrite(path, "[workers]\nconcurrency = x\n")  # not even TOML
            await clock.advance(2.0)
            assert watcher.version == 2
    versions = await history.history()
    assert [v.config.workers.concurrency for v in versions] == [5, 4]
    assert versions[0].author == f"file:{path}"
    assert versions[0].created_at == versions[1].created_at + 2.0


async def test_a_failing_callback_is_logged_and_the_watcher_keeps_going(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "hq.toml"
    path.write_text("")
    clock = FakeClock()

    def on_change(config: Config) -> None:
        raise RuntimeError("boom")

    with anyio.fail_after(10):
        async with ConfigWatcher(path, on_change=on_change, clock=clock, env={}) as watcher:
            rewrite(path, "[workers]\nconcurrency = 2\n")
            await clock.advance(2.0)
            assert watcher.current.workers.concurrency == 2
            assert any("on_change callback failed" in r.getMessage() for r in caplog.records)
            rewrite(path, "[workers]\nconcurrency = 3\n")
            await clock.advance(2.0)
            assert watcher.current.workers.concurrency == 3


async def test_an_invalid_file_at_start_raises(tmp_path: Path) -> None:
    path = tmp_path / "hq.toml"
    path.write_text("[server]\nport = 0\n")
    with pytest.raises(ConfigError, match=r"^server\.port: "):
        async with ConfigWatcher(path, clock=FakeClock(), env={}):
            pass  # pragma: no cover
