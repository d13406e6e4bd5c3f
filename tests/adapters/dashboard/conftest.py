"""Fixtures for the dashboard's browser tests (helpers in ``browser_support.py``)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "server"))
from browser_support import CHROMIUM, CHROMIUM_ARGS, FAILED, Watched, open_page, skip_reason
from server_process import Server, start_server, stop


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[FAILED] = report.failed
    return report


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium for one module: playwright's sync API holds an event loop in this thread
    while it runs, which the anyio tests of the next modules need free."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """An open ``hyperqueue serve`` (demo tasks, no keys) on an ephemeral port."""
    if skip_reason():
        pytest.skip(skip_reason() or "")
    running = start_server(tmp_path_factory.mktemp("dash"))
    yield running
    stop(running)


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Watched]:
    yield from open_page(browser, request)
