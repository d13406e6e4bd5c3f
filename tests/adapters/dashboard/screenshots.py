"""The docs' screenshots of the dashboard: ``python tests/adapters/dashboard/screenshots.py``.

Starts ``hyperqueue serve`` (demo tasks) on a fresh SQLite file, submits a mix of
jobs (some fail), and saves the overview and a failed job's page, in Debian's
Chromium, to ``docs/_static/dashboard/`` (or the folder given).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "server"))
from browser_support import CHROMIUM, CHROMIUM_ARGS
from server_process import start_server, stop

ROOT = Path(__file__).parents[3]


def main(out: Path) -> None:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        server = start_server(Path(folder))
        try:
            jobs: list[dict[str, object]] = []
            for i in range(60):
                jobs.append({"task": "add", "args": [i, i]})
                if i % 3 == 0:
                    jobs.append({"task": "flaky", "args": [0.4]})
                if i % 10 == 0:
                    jobs.append({"task": "fail", "args": ["upstream timed out after 30 s"]})
            jobs.append({"task": "sleep", "args": [30]})
            httpx.post(f"{server.url}/api/v1/jobs/batch", json={"jobs": jobs}).raise_for_status()
            failed = httpx.post(
                f"{server.url}/api/v1/jobs",
                json={"task": "fail", "args": ["payment gateway answered 502"], "max_attempts": 3},
            ).json()["id"]
            time.sleep(3)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(f"{server.url}/dashboard?window=900")
                page.locator("#figures").wait_for()
                page.screenshot(path=str(out / "overview.png"), full_page=True)
                page.goto(f"{server.url}/dashboard/jobs/{failed}")
                page.locator("#job-traceback").wait_for()
                page.screenshot(path=str(out / "failed-job.png"), full_page=True)
                browser.close()
        finally:
            stop(server)
    print(f"saved {out / 'overview.png'} and {out / 'failed-job.png'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "_static" / "dashboard")
