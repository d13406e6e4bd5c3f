"""Helpers for the dashboard's browser tests: Debian's Chromium driven by playwright
(never a downloaded browser), real ``hyperqueue serve`` processes on ephemeral ports,
and a page that fails its test on any console error or any request that is not to
127.0.0.1, with a screenshot kept when a test fails.

The browser tests are skipped, with the reason, when ``/usr/bin/chromium`` or
playwright is missing (``make test`` installs Chromium with apt-get when run as root).
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "server"))

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = Path(tempfile.gettempdir()) / "hyperqueue-dashboard-failures"


def _skip_reason() -> str | None:
    if not Path(CHROMIUM).exists():
        return (
            f"no Chromium at {CHROMIUM}: apt-get install chromium (Debian's package; "
            "make test installs it when run as root)"
        )
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed (dependency group server-test)"
    return None


def skip_reason() -> str | None:
    """Why the browser tests cannot run here, or None."""
    return _skip_reason()


FAILED = pytest.StashKey[bool]()
"""Whether the test's call phase failed (set by the dashboard's conftest)."""


class Watched:
    """A page and what it did: console errors, requests that left 127.0.0.1."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.errors: list[str] = []
        self.outside: list[str] = []
        self.requests: list[Any] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        page.on("request", lambda r: self.requests.append(r))
        page.route("**/*", self._route)

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text} at {message.location}")

    def _route(self, route: Any) -> None:
        url = route.request.url
        if urlsplit(url).hostname != "127.0.0.1":
            self.outside.append(url)
            route.abort()
            return
        route.continue_()


def open_page(browser: Any, request: pytest.FixtureRequest, **options: Any) -> Iterator[Watched]:
    """A fresh context and page; checks on the way out, and a screenshot on failure."""
    context = browser.new_context(**options)
    page = context.new_page()
    page.set_default_timeout(15_000)
    watched = Watched(page)
    failed = True
    try:
        yield watched
        failed = request.node.stash.get(FAILED, False) or bool(watched.outside or watched.errors)
        if not request.node.stash.get(FAILED, False):
            assert not watched.outside, f"requests left 127.0.0.1: {watched.outside}"
            assert not watched.errors, f"console errors: {watched.errors}"
    finally:
        if failed:
            SHOTS.mkdir(parents=True, exist_ok=True)
            shot = SHOTS / f"{request.node.name}.png"
            try:
                page.screenshot(path=str(shot), full_page=True)
                print(f"\nscreenshot of the failed test kept at {shot}")
            except Exception as exc:  # the page may be gone with the failure
                print(f"\nno screenshot: {exc}")
        context.close()
