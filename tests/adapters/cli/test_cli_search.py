"""Finding jobs by query, bulk cancel and retry with the count confirmed first, the
dead-letter queue grouped by fingerprint, and the same listings read straight from the
SQLite file with ``--db`` (no server in between)."""

from __future__ import annotations

from pathlib import Path

import click
import httpx
import pytest
from cli_helpers import Invoke, as_json, wait_status
from server_process import Server


def _submit_failures(invoke: Invoke, server: Server, queue: str, n: int) -> list[str]:
    ids = []
    for i in range(n):
        job = as_json(
            invoke(
                "jobs",
                "submit",
                "fail",
                "--kwargs",
                f'{{"message": "no route to host {i}"}}',
                "--queue",
                queue,
                "--json",
                "--url",
                server.url,
            )
        )
        ids.append(job["id"])
    for job_id in ids:
        wait_status(server.url, job_id, {"failed"})
    return ids


def test_list_by_query_and_a_bad_query_is_exit_2(server: Server, invoke: Invoke) -> None:
    url = ("--url", server.url)
    ids = _submit_failures(invoke, server, "find-q", 2)
    found = as_json(invoke("jobs", "list", "queue:find-q status:failed", "--json", *url))
    assert {job["id"] for job in found} == set(ids)
    assert as_json(invoke("jobs", "list", "queue:find-q status:completed", "--json", *url)) == []
    bad = invoke("jobs", "list", "colour:blue", *url)
    assert bad.exit_code == 2
    assert "unknown qualifier 'colour'" in bad.stderr


def test_bulk_retry_asks_with_the_exact_count_and_no_changes_nothing(
    server: Server, invoke: Invoke
) -> None:
    url = ("--url", server.url)
    ids = _submit_failures(invoke, server, "bulk-q", 3)
    query = "queue:bulk-q status:failed"
    declined = invoke("jobs", "retry", "--where", query, *url, input="n\n")
    assert declined.exit_code == 1
    assert "Retry 3 jobs matching" in declined.stderr
    assert all(wait_status(server.url, i, {"failed"})["attempts"] == 1 for i in ids)
    counted = as_json(invoke("jobs", "retry", "--where", query, "--dry-run", "--json", *url))
    assert (counted["count"], counted["dry_run"]) == (3, True)
    accepted = invoke("jobs", "retry", "--where", query, *url, input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert "retry: 3 jobs" in accepted.stderr
    for job_id in ids:  # they ran again (and failed again: the task always fails)
        assert wait_status(server.url, job_id, {"failed"}) is not None
    cancelled = invoke(
        "jobs", "cancel", "--where", "queue:bulk-q status:pending", "--yes", "--json", *url
    )
    assert as_json(cancelled)["count"] == 0  # nothing pending: nothing asked, nothing done


def test_bulk_cancel_with_yes_changes_exactly_the_matching_jobs(
    server: Server, invoke: Invoke
) -> None:
    url = ("--url", server.url)
    for _ in range(4):
        invoke(
            "jobs",
            "submit",
            "sleep",
            "--args",
            "[1]",
            "--delay",
            "600",
            "--queue",
            "cancel-q",
            *url,
        )
    invoke("jobs", "submit", "sleep", "--args", "[1]", "--delay", "600", "--queue", "keep-q", *url)
    done = as_json(invoke("jobs", "cancel", "--where", "queue:cancel-q", "--yes", "--json", *url))
    assert (done["count"], done["dry_run"]) == (4, False)
    left = as_json(invoke("jobs", "list", "status:pending queue:keep-q", "--json", *url))
    assert len(left) == 1
    invoke("jobs", "cancel", "--where", "queue:keep-q", "--yes", *url)


def test_dlq_list_groups_by_fingerprint_and_replay_one_group(
    server: Server, invoke: Invoke
) -> None:
    url = ("--url", server.url)
    _submit_failures(invoke, server, "dlq-q", 3)
    groups = as_json(invoke("dlq", "list", "--where", "queue:dlq-q", "--json", *url))
    [group] = groups  # "no route to host 0/1/2": one kind of failure
    assert (group["count"], group["task"], group["error_type"]) == (3, "fail", "RuntimeError")
    flat = as_json(invoke("dlq", "list", "--flat", "--where", "queue:dlq-q", "--json", *url))
    assert len(flat) == 3 and {job["status"] for job in flat} == {"failed"}
    table = invoke("dlq", "list", "--where", "queue:dlq-q", *url)
    assert group["fingerprint"] in table.stdout
    replayed = invoke(
        "dlq",
        "replay",
        "--fingerprint",
        group["fingerprint"],
        "--where",
        "queue:dlq-q",
        "--yes",
        "--json",
        *url,
    )
    assert as_json(replayed)["count"] == 3


def test_direct_database_reads_without_a_server(server: Server, invoke: Invoke) -> None:
    """``--db`` reads the server's SQLite file itself (the server keeps running: SQLite
    readers and a writer share the file)."""
    db = ("--db", str(server.db))
    ids = _submit_failures(invoke, server, "direct-q", 2)
    queues = as_json(invoke("status", "--json", *db))["queues"]
    assert {q["queue"]: q["failed"] for q in queues}["direct-q"] == 2
    listed = as_json(invoke("jobs", "list", "queue:direct-q", "--json", *db))
    assert {job["id"] for job in listed} == set(ids)
    shown = as_json(invoke("jobs", "show", ids[0], "--json", *db))
    assert shown["status"] == "failed" and "no route to host" in shown["error"]
    assert invoke("jobs", "show", "no-such-job", *db).exit_code == 5
    groups = as_json(invoke("dlq", "list", "--where", "queue:direct-q", "--json", *db))
    assert [g["count"] for g in groups] == [2]
    flat = as_json(invoke("dlq", "list", "--flat", "--where", "queue:direct-q", "--json", *db))
    assert {job["id"] for job in flat} == set(ids)
    assert "direct-q" in invoke("status", *db).stdout


def test_direct_mode_with_no_database_file_is_exit_3(invoke: Invoke, tmp_path: Path) -> None:
    result = invoke("status", "--db", str(tmp_path / "missing.db"))
    assert result.exit_code == 3
    assert "no database at" in result.stderr
    assert not (tmp_path / "missing.db").exists()
    both = invoke("jobs", "list", "--db", "x.db", "--dsn", "postgresql://localhost/test")
    assert both.exit_code == 2


def test_a_count_that_changed_after_the_confirmation_changes_nothing(
    server: Server, invoke: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another client adds a matching job while the user reads the question: the action
    is refused with exit 6 (the server's 409 on ``expected``), not applied to 3 jobs
    after 2 were confirmed."""
    url = ("--url", server.url)
    later = ("sleep", "--args", "[1]", "--delay", "600", "--queue", "race-q")
    for _ in range(2):
        invoke("jobs", "submit", *later, *url)
    asked: list[str] = []

    def confirm_while_another_submits(text: str, **options: object) -> bool:
        asked.append(text)
        httpx.post(
            f"{server.url}/api/v1/jobs",
            json={"task": "sleep", "args": [1], "delay": 600, "queue": "race-q"},
            timeout=5,
        ).raise_for_status()
        return True

    monkeypatch.setattr(click, "confirm", confirm_while_another_submits)
    raced = invoke("jobs", "cancel", "--where", "queue:race-q status:pending", *url)
    assert raced.exit_code == 6, raced.output
    assert asked == ["Cancel 2 jobs matching 'queue:race-q status:pending'?"]
    assert "changed from 2 to 3" in raced.stderr
    pending = as_json(invoke("jobs", "list", "queue:race-q status:pending", "--json", *url))
    assert len(pending) == 3  # nothing was cancelled
    invoke("jobs", "cancel", "--where", "queue:race-q", "--yes", *url)
