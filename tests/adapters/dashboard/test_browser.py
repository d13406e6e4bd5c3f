"""The dashboard in a real headless Chromium against real ``hyperqueue serve`` and
``hyperqueue worker`` processes on one SQLite file.

Every test's page fails it on a console error or a request to anywhere but 127.0.0.1
(see ``conftest.py``); a failed test leaves a screenshot in a temporary folder it names.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from browser_support import Watched, open_page
from server_process import CLI, Server, start_server, stop

from hyperqueue_litestar import ApiKey, demo_queue
from hyperqueue_sqlite import SQLiteStorage

E2E = Path(__file__).parents[1] / "e2e"
AXE = Path(__file__).parent / "vendor" / "axe.min.js"


def submit(
    server: Server, task: str, *args: Any, key: str | None = None, queue: str | None = None
) -> str:
    headers = {"X-API-Key": key} if key else {}
    body: dict[str, Any] = {"task": task, "args": list(args)}
    if queue is not None:
        body["queue"] = queue
    response = httpx.post(f"{server.url}/api/v1/jobs", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def enqueue_in_file(db: Path, task: str, *args: Any) -> str:
    """A job put straight into the SQLite file, as another process on it would."""
    sys.path.insert(0, str(E2E))
    from many_app import make_queue

    make = demo_queue if task == "add" else make_queue

    async def go() -> str:
        async with make(SQLiteStorage(db)) as queue:
            return (await queue.enqueue(task, args=args)).id

    with ThreadPoolExecutor(1) as pool:  # playwright's loop holds this thread
        return pool.submit(anyio.run, go).result()


def job_rows(page: Any) -> list[str]:
    return [
        str(x)
        for x in page.locator("#jobs tbody tr").evaluate_all("rs => rs.map(r => r.dataset.id)")
    ]


def jobs_loaded(page: Any) -> None:
    """The jobs page has its rows, and the live stream is open."""
    page.locator("#jobs, #no-jobs").first.wait_for()
    page.locator("#live-status[data-state='live']").wait_for()  # no eval: the CSP forbids it


def show_new(page: Any) -> None:
    page.locator("#show-new").click()


# -- live ----------------------------------------------------------------------------


def test_a_job_submitted_over_http_appears_without_a_reload(page: Watched, server: Server) -> None:
    p = page.page
    p.goto(f"{server.url}/dashboard/jobs")
    jobs_loaded(p)
    p.evaluate("window.__notReloaded = true")
    job_id = submit(server, "add", 2, 3)
    notice = p.locator("#new-notice")
    notice.get_by_text(re.compile(r"\d+ new jobs?")).wait_for()
    assert job_id not in job_rows(p)  # offered, not pushed in under the pointer
    show_new(p)
    row = p.locator(f'#jobs tr[data-id="{job_id}"]')
    row.wait_for()
    row.locator(".badge", has_text="completed").wait_for()
    assert p.evaluate("window.__notReloaded") is True


def test_pages_of_a_filter_follow_keyset_cursors_kept_in_the_url(
    page: Watched, server: Server
) -> None:
    jobs = [{"task": "add", "args": [n, 0], "queue": "paging"} for n in range(55)]
    response = httpx.post(f"{server.url}/api/v1/jobs/batch", json={"jobs": jobs})
    ids = [item["job"]["id"] for item in response.json()["items"]]
    p = page.page
    p.goto(f"{server.url}/dashboard/jobs?q=queue:paging")
    p.locator("#match-count", has_text="55 jobs match").wait_for()
    first = job_rows(p)
    assert len(first) == 50
    p.get_by_role("link", name="Older").click()
    p.wait_for_url(re.compile(r"cursor="))
    p.locator(f'#jobs tr[data-id="{ids[0]}"]').wait_for()  # the oldest, on the last page
    older = job_rows(p)
    assert len(older) == 5 and not set(older) & set(first)
    assert set(first) | set(older) == set(ids)
    p.go_back()
    p.locator(f'#jobs tr[data-id="{ids[-1]}"]').wait_for()
    assert job_rows(p) == first


def test_a_bad_filter_says_what_is_wrong(page: Watched, server: Server) -> None:
    p = page.page
    p.goto(f"{server.url}/dashboard/jobs?q=colour:red")
    p.get_by_role("alert").get_by_text("unknown qualifier").wait_for()
    assert p.locator("#q").input_value() == "colour:red"  # kept, to be corrected
    page.errors[:] = [e for e in page.errors if "422" not in e]  # the browser logs the 422s


def test_a_row_shown_changes_in_place(page: Watched, server: Server) -> None:
    p = page.page
    job_id = submit(server, "sleep", 2.0)
    p.goto(f"{server.url}/dashboard/jobs?q=task:sleep")
    row = p.locator(f'#jobs tr[data-id="{job_id}"]')
    row.locator(".badge", has_text=re.compile("pending|running")).wait_for()
    before = job_rows(p)
    row.locator(".badge", has_text="completed").wait_for(timeout=20_000)
    assert job_rows(p) == before  # same rows, same order: only the status changed


def test_a_job_run_by_a_separate_worker_process_appears(
    page: Watched, server: Server, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYPERQUEUE_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(E2E), env.get("PYTHONPATH")) if p)
    with (tmp_path / "worker.err").open("wb") as err:
        worker = subprocess.Popen(
            [*CLI, "worker", "many_app:queue", "--db", str(server.db)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        p = page.page
        p.goto(f"{server.url}/dashboard/workers")
        p.locator("#workers td", has_text="work").first.wait_for()  # its pool, seen on the storage
        p.locator("a", has_text="Jobs").first.click()
        jobs_loaded(p)
        job_id = enqueue_in_file(server.db, "work", 7)  # the server does not know `work`
        p.locator("#new-notice").get_by_text(re.compile(r"new job")).wait_for()
        show_new(p)
        row = p.locator(f'#jobs tr[data-id="{job_id}"]')
        row.locator(".badge", has_text="completed").wait_for()
        row.locator("a").click()
        p.locator("h1", has_text=job_id).wait_for()
        facts = p.locator("dl.facts")
        facts.get_by_text("work", exact=True).wait_for()
        assert str(worker.pid) in (facts.inner_text())  # the worker's name carries its pid
    finally:
        worker.kill()
        worker.wait(10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_after_a_server_restart_the_stream_resumes_without_duplicate_rows(
    page: Watched, tmp_path: Path
) -> None:
    port = _free_port()
    first = start_server(tmp_path, "--port", str(port))
    p = page.page
    try:
        submit(first, "add", 1, 1)
        p.goto(f"{first.url}/dashboard/jobs?q=task:add")
        jobs_loaded(p)
        seen = submit(first, "add", 1, 2)
        p.locator("#new-notice").get_by_text("new").wait_for()
        show_new(p)
        p.locator(f'#jobs tr[data-id="{seen}"] .badge', has_text="completed").wait_for()
    finally:
        stop(first)
    missed = [enqueue_in_file(first.db, "add", 2, n) for n in range(3)]  # while it is down
    second = start_server(tmp_path, "--port", str(port))
    try:
        p.locator("#new-notice").get_by_text("3 new jobs").wait_for(timeout=30_000)
        show_new(p)
        for job_id in missed:
            p.locator(f'#jobs tr[data-id="{job_id}"]').wait_for()
        rows = job_rows(p)
        assert len(rows) == len(set(rows)) == 5
        resumed = [
            r.headers.get("last-event-id")
            for r in page.requests
            if r.url.endswith("/api/v1/events") and r.headers.get("last-event-id")
        ]
        assert resumed, "the reconnection did not send Last-Event-ID"
        p.locator("#live-status[data-state='live']").wait_for()  # no eval: the CSP forbids it
        # the browser logged the stream cut by the kill and the refused reconnections
        cut = ("ERR_CONNECTION_REFUSED", "ERR_INCOMPLETE_CHUNKED_ENCODING")
        page.errors[:] = [e for e in page.errors if not any(c in e for c in cut)]
    finally:
        stop(second)


def test_a_hidden_tab_closes_the_stream_and_resumes_where_it_stopped(
    page: Watched, server: Server
) -> None:
    p = page.page
    p.goto(f"{server.url}/dashboard/jobs?q=task:echo")
    jobs_loaded(p)
    submit(server, "echo", "before")
    p.locator("#new-notice").get_by_text("new").wait_for()
    p.evaluate(
        """() => { Object.defineProperty(document, "hidden", {value: true, configurable: true});
                   document.dispatchEvent(new Event("visibilitychange")); }"""
    )
    p.locator("#live-status", has_text="Paused (tab hidden)").wait_for()
    hidden_at = len(page.requests)
    job_id = submit(server, "echo", "while hidden")
    p.wait_for_timeout(1500)
    assert not [r for r in page.requests[hidden_at:] if "/api/" in r.url]  # nothing asked
    p.evaluate(
        """() => { Object.defineProperty(document, "hidden", {value: false, configurable: true});
                   document.dispatchEvent(new Event("visibilitychange")); }"""
    )
    p.locator("#live-status", has_text="Live").wait_for()
    events = [r for r in page.requests[hidden_at:] if r.url.endswith("/api/v1/events")]
    assert events and events[0].headers.get("last-event-id")
    p.locator("#new-notice").get_by_text("2 new jobs").wait_for()
    show_new(p)
    p.locator(f'#jobs tr[data-id="{job_id}"]').wait_for()


def test_the_pages_poll_when_the_stream_keeps_failing(page: Watched, server: Server) -> None:
    p = page.page
    p.route("**/api/v1/events*", lambda route: route.abort())
    p.goto(f"{server.url}/dashboard/jobs?q=task:echo")
    p.locator("#live-status", has_text="Polling").wait_for(timeout=20_000)
    job_id = submit(server, "echo", "polled")
    p.locator("#new-notice").get_by_text("new").wait_for()
    show_new(p)
    p.locator(f'#jobs tr[data-id="{job_id}"]').wait_for()
    page.errors[:] = [e for e in page.errors if "/api/v1/events" not in e]  # the aborts


# -- actions ---------------------------------------------------------------------------


def test_dead_letters_retry_a_group_after_confirming_its_exact_count(
    page: Watched, server: Server
) -> None:
    ids = [submit(server, "fail", "disk full on node 7") for _ in range(3)]
    for job_id in ids:
        _wait_status(server, job_id, "failed")
    p = page.page
    p.goto(f"{server.url}/dashboard/dead-letters")
    group = p.locator("#groups tbody tr", has_text="disk full on node")  # digits masked
    group.locator("td.num", has_text="3").wait_for()
    group.get_by_role("button", name=re.compile("^Retry")).click()
    dialog = p.locator("#confirm-dialog")
    dialog.get_by_role("heading", name="Retry 3 jobs?").wait_for()
    dialog.get_by_role("button", name="Retry 3 jobs").click()
    p.locator("#dead-message", has_text="3 jobs retried").wait_for()
    for job_id in ids:
        job = httpx.get(f"{server.url}/api/v1/jobs/{job_id}").json()
        assert job["attempts"] >= 1 and job["status"] in ("pending", "running", "failed")
    audit = httpx.get(f"{server.url}/api/v1/audit", params={"limit": 1000}).json()["items"]
    bulk = [r for r in audit if r["event"] == "jobs.bulk_retry"]
    assert bulk and bulk[-1]["metadata"]["count"] == 3


def test_a_count_that_changed_before_the_confirmation_is_asked_again(
    page: Watched, server: Server
) -> None:
    for n in range(2):
        _wait_status(server, submit(server, "fail", f"race {n}"), "failed")
    p = page.page
    p.goto(f"{server.url}/dashboard/dead-letters")
    p.locator("#bulk-q").fill('status:failed error:"race "')
    p.locator("#bulk-q-discard").click()
    dialog = p.locator("#confirm-dialog")
    dialog.get_by_role("heading", name="Discard 2 jobs?").wait_for()
    _wait_status(server, submit(server, "fail", "race 2"), "failed")  # meanwhile, one more
    dialog.get_by_role("button", name="Discard 2 jobs").click()
    dialog.get_by_role("heading", name="Discard 3 jobs?").wait_for()  # the server said 409
    dialog.get_by_role("button", name="Discard 3 jobs").click()
    p.locator("#dead-message", has_text="3 jobs discarded").wait_for()
    left = httpx.get(f"{server.url}/api/v1/jobs/count", params={"q": 'error:"race "'}).json()
    assert left["count"] == 0
    page.errors[:] = [e for e in page.errors if "409" not in e]  # the browser logs the 409


def _wait_status(server: Server, job_id: str, status: str) -> None:
    import time

    deadline = time.monotonic() + 15
    while httpx.get(f"{server.url}/api/v1/jobs/{job_id}").json()["status"] != status:
        assert time.monotonic() < deadline, f"{job_id} never became {status}"
        time.sleep(0.05)


# -- roles ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("keyed")
    config = folder / "hq.toml"
    config.write_text(
        "".join(
            f'[[keys]]\nname = "{name}"\nkey_hash = "{ApiKey.hash_key(secret)}"\n'
            f'roles = ["{name}"]\n'
            for name, secret in (("viewer", "view-secret"), ("operator", "ops-secret"))
        )
    )
    running = start_server(folder, "--config", str(config))
    yield running
    stop(running)


def sign_in(p: Any, url: str, key: str) -> None:
    p.goto(f"{url}/dashboard/dead-letters")
    p.get_by_label("API key").fill(key)
    p.get_by_role("button", name="Sign in").click()
    p.locator("h1", has_text="Dead letters").wait_for()


def test_a_read_only_key_sees_no_action_and_is_refused_on_action_routes(
    page: Watched, keyed: Server
) -> None:
    job_id = submit(keyed, "fail", "nope", key="ops-secret")
    p = page.page
    p.goto(f"{keyed.url}/dashboard/jobs")
    p.locator("h1", has_text="Sign in").wait_for()
    p.get_by_label("API key").fill("not-a-key")
    p.get_by_role("button", name="Sign in").click()
    p.get_by_role("alert").get_by_text("That key is not valid.").wait_for()
    page.errors.clear()  # the browser logs the 401 it was answered
    sign_in(p, keyed.url, "view-secret")
    p.locator("#groups").wait_for()
    assert p.get_by_role("button", name=re.compile("Retry|Discard")).count() == 0
    p.goto(f"{keyed.url}/dashboard/jobs/{job_id}")
    p.locator("h1", has_text=job_id).wait_for()
    p.locator(".badge", has_text="failed").wait_for()
    assert p.get_by_role("button", name=re.compile("Retry|Cancel")).count() == 0
    assert "viewer" in p.locator("#who").inner_text()
    assert p.locator('#nav a[data-page="audit"]').is_hidden()
    p.goto(f"{keyed.url}/dashboard/queues")
    p.locator("#queues").wait_for()
    assert p.get_by_role("button", name=re.compile("^(Pause|Resume) ")).count() == 0
    statuses = p.evaluate(
        """async () => {
            const key = sessionStorage.getItem("hyperqueue.apiKey");
            const post = (path, body) => fetch(path, {method: "POST",
                headers: {"X-API-Key": key, "Content-Type": "application/json"},
                body: JSON.stringify(body)}).then(r => r.status);
            return [await post("/api/v1/jobs/retry", {q: "status:failed"}),
                    await post("/api/v1/jobs/" + id + "/retry", {})];
        }""".replace("id +", f"{job_id!r} +")
    )
    assert statuses == [403, 403]
    page.errors.clear()  # the two 403s, logged by the browser


def test_an_operator_key_gets_the_actions(page: Watched, keyed: Server) -> None:
    p = page.page
    sign_in(p, keyed.url, "ops-secret")
    p.locator("#bulk-q-retry").wait_for()
    submit(keyed, "add", 1, 2, key="ops-secret", queue="browser-held")
    p.goto(f"{keyed.url}/dashboard/queues")
    row = p.locator("#queues tr", has_text="browser-held")
    row.get_by_role("button", name="Pause browser-held").click()
    row.get_by_text("paused", exact=True).wait_for()
    p.locator("#announcer", has_text="browser-held: paused").wait_for(state="attached")
    p.reload()  # the state is the storage's, not the page's
    row.get_by_role("button", name="Resume browser-held").click()
    row.get_by_role("button", name="Pause browser-held").wait_for()
    assert row.get_by_text("active", exact=True).is_visible()
    p.get_by_role("button", name="Sign out").click()
    p.locator("h1", has_text="Sign in").wait_for()


# -- keyboard and accessibility ----------------------------------------------------------


def test_keyboard_only_from_the_skip_link_to_a_failed_jobs_traceback(
    page: Watched, server: Server
) -> None:
    job_id = submit(server, "fail", "keyboard only")
    _wait_status(server, job_id, "failed")
    p = page.page
    p.goto(f"{server.url}/dashboard")
    p.locator("h1", has_text="Overview").wait_for()
    p.keyboard.press("Tab")
    assert p.evaluate("document.activeElement.textContent") == "Skip to content"
    assert p.evaluate("document.activeElement.matches(':focus-visible')")
    p.keyboard.press("Tab")  # the brand, then the pages
    for _ in range(3):
        p.keyboard.press("Tab")
    assert p.evaluate("document.activeElement.textContent") == "Jobs"
    p.keyboard.press("Enter")
    p.locator("h1", has_text="Jobs").wait_for()
    p.locator("#main:focus").wait_for()  # focus moved to the page
    p.keyboard.press("Tab")  # the filter comes next
    assert p.evaluate("document.activeElement.id") == "q"
    p.keyboard.type('status:failed error:"keyboard only"')
    p.keyboard.press("Enter")
    p.wait_for_url(re.compile(r"q=status%3Afailed"))
    p.locator(f'#jobs tr[data-id="{job_id}"]').wait_for()
    for _ in range(40):
        p.keyboard.press("Tab")
        if p.evaluate("document.activeElement.closest('#jobs') !== null"):
            break
    assert p.evaluate("document.activeElement.matches(':focus-visible')")
    p.keyboard.press("Enter")
    p.locator("#job-traceback", has_text="keyboard only").wait_for()
    p.locator("#main:focus").wait_for()
    p.keyboard.press("Tab")  # from main, the first thing on the job's page: its action
    assert p.evaluate("document.activeElement.id") == "retry-job"
    p.keyboard.press("Enter")
    p.locator("#announcer", has_text="Job retried").wait_for(state="attached")


def test_the_theme_toggle_overrides_the_system_and_is_remembered(
    page: Watched, server: Server
) -> None:
    p = page.page
    p.emulate_media(color_scheme="light")
    p.goto(f"{server.url}/dashboard/queues")
    toggle = p.get_by_role("button", name="Dark theme")
    assert toggle.get_attribute("aria-pressed") == "false"
    background = "getComputedStyle(document.documentElement).backgroundColor"
    light = p.evaluate(background)
    toggle.click()
    assert toggle.get_attribute("aria-pressed") == "true"
    assert p.evaluate(background) != light
    p.reload()
    p.locator("h1", has_text="Queues").wait_for()
    assert p.evaluate("document.documentElement.dataset.theme") == "dark"
    assert p.get_by_role("button", name="Dark theme").get_attribute("aria-pressed") == "true"


@pytest.fixture(params=["light", "dark"])
def themed(browser: Any, request: pytest.FixtureRequest) -> Iterator[Watched]:
    """A page in the light or the dark scheme, where axe may be injected (its script
    is inline, which the dashboard's policy rightly refuses)."""
    yield from open_page(browser, request, color_scheme=request.param, bypass_csp=True)


def serious_violations(p: Any) -> list[str]:
    """axe's serious and critical findings on the page: every WCAG 2.2 AA rule in the
    light scheme; in the dark one only the colour rules (nothing else changes)."""
    options: dict[str, Any] = {
        "runOnly": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"]
    }
    if p.evaluate("matchMedia('(prefers-color-scheme: dark)').matches"):
        options = {"runOnly": {"type": "rule", "values": ["color-contrast", "link-in-text-block"]}}
    p.evaluate(AXE.read_text())
    result = p.evaluate("options => axe.run(document, options)", options)
    assert result["passes"], "axe checked nothing"
    return [
        f"{v['id']}: {v['help']} ({len(v['nodes'])} nodes: {v['nodes'][0]['target']})"
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def test_axe_finds_no_serious_violation(themed: Watched, server: Server) -> None:
    job_id = submit(server, "fail", "for axe")
    _wait_status(server, job_id, "failed")
    p = themed.page
    found: dict[str, list[str]] = {}
    for path in (
        "",
        "/jobs",
        f"/jobs/{job_id}",
        "/dead-letters",
        "/queues",
        "/workers",
        "/schedules",
        "/audit",
    ):
        p.goto(f"{server.url}/dashboard{path}")
        p.locator("h1").wait_for()
        p.locator("#live-status[data-state='live']").wait_for()  # no eval: the CSP forbids it
        bad = serious_violations(p)
        if bad:
            found[path or "/"] = bad
    assert not found, found


def test_axe_finds_no_serious_violation_on_the_sign_in_page(themed: Watched, keyed: Server) -> None:
    p = themed.page
    p.goto(f"{keyed.url}/dashboard")
    p.locator("h1", has_text="Sign in").wait_for()
    assert serious_violations(p) == []


# -- overview --------------------------------------------------------------------------


THROTTLED_APP = """
import hyperqueue as hq

queue = hq.Queue()


@queue.task(rate_limit="1/hour")
async def ping() -> None:
    pass
"""


def test_the_overview_shows_the_tasks_held_back_by_a_rate_limit(
    themed: Watched, tmp_path: Path
) -> None:
    """``ping`` may start once an hour: of two jobs the server's worker runs one and puts
    the other back without spending an attempt; the overview counts it and names it, in
    a table axe finds nothing serious in (light and dark)."""
    (tmp_path / "throttled_app.py").write_text(THROTTLED_APP)
    server = start_server(tmp_path, "throttled_app:queue")
    try:
        first, second = submit(server, "ping"), submit(server, "ping")
        _wait_status(server, first, "completed")
        _wait_deferred(server, second)
        p = themed.page
        p.goto(f"{server.url}/dashboard")
        held = p.locator("#figures li", has_text="throttled")
        held.wait_for()
        assert held.locator(".figure").inner_text() == "1"
        assert "no attempt spent" in held.inner_text()
        table = p.locator("#most-throttled")
        assert "no attempt spent" in table.locator("caption").inner_text()
        headers = table.locator("thead th").all_inner_texts()
        assert headers == ["Task", "Held back", "Runs", "Share held back"]
        cells = table.locator("tbody tr").locator("td").all_inner_texts()
        assert cells == ["ping", "1", "1", "50.0%"]  # one held back, one run
        assert serious_violations(p) == []
    finally:
        stop(server)


def _wait_deferred(server: Server, job_id: str) -> None:
    """Until the insights count a deferral (the route caches an answer for 2 s)."""
    deadline = time.monotonic() + 15
    while True:
        document = httpx.get(f"{server.url}/api/v1/insights", timeout=5).json()
        if document["summary"]["deferred"]:
            return
        assert time.monotonic() < deadline, f"{job_id} was never held back"
        time.sleep(0.2)
