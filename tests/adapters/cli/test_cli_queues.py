"""``hyperqueue queues list|pause|resume`` against a real ``hyperqueue serve`` process
(with its worker pool on SQLite): a paused queue's job waits while other queues run, the
same through the server or the database file, and the exit statuses scripts rely on."""

from __future__ import annotations

from typing import Any

from cli_helpers import OPERATOR, VIEWER, Invoke, as_json, wait_status
from server_process import Server


def _submit(invoke: Invoke, url: str, queue: str) -> str:
    job = as_json(
        invoke(
            "jobs", "submit", "add", "--args", "[1, 2]", "--queue", queue, "--json", "--url", url
        )
    )
    job_id: str = job["id"]
    return job_id


def _listed(invoke: Invoke, *where: str) -> dict[str, Any]:
    return {row["queue"]: row for row in as_json(invoke("queues", "list", "--json", *where))}


def test_a_paused_queue_waits_while_others_run_until_resumed(
    server: Server, invoke: Invoke
) -> None:
    paused = invoke("queues", "pause", "cli-held", "--url", server.url)
    assert paused.exit_code == 0 and "cli-held paused" in paused.stdout
    assert _listed(invoke, "--url", server.url)["cli-held"]["paused"] is True  # no jobs yet
    held = _submit(invoke, server.url, "cli-held")
    other = _submit(invoke, server.url, "cli-free")  # enqueued after, runs first
    wait_status(server.url, other, {"completed"})
    assert wait_status(server.url, held, {"pending", "running", "completed"})["status"] == "pending"
    table = invoke("queues", "list", "--url", server.url)
    assert table.exit_code == 0 and "paused" in table.stdout and "cli-held" in table.stdout
    resumed = as_json(invoke("queues", "resume", "cli-held", "--json", "--url", server.url))
    assert resumed == {"queue": "cli-held", "paused": False}
    wait_status(server.url, held, {"completed"})
    assert _listed(invoke, "--url", server.url)["cli-held"]["paused"] is False


def test_the_database_file_and_the_server_see_one_state(server: Server, invoke: Invoke) -> None:
    assert invoke("queues", "pause", "cli-direct", "--db", str(server.db)).exit_code == 0
    assert _listed(invoke, "--url", server.url)["cli-direct"]["paused"] is True
    held = _submit(invoke, server.url, "cli-direct")
    assert _listed(invoke, "--db", str(server.db))["cli-direct"] == {
        "queue": "cli-direct",
        "pending": 1,
        "running": 0,
        "completed": 0,
        "failed": 0,
        "cancelled": 0,
        "total": 1,
        "unserved": 0,
        "paused": True,
    }
    assert invoke("queues", "resume", "cli-direct", "--db", str(server.db)).exit_code == 0
    wait_status(server.url, held, {"completed"})  # the server's idle pool woke


def test_exit_statuses(server: Server, keyed: Server, invoke: Invoke) -> None:
    too_long = invoke("queues", "pause", "q" * 201, "--url", server.url)
    assert too_long.exit_code == 2 and too_long.stderr.count("\n") == 1
    assert invoke("queues", "pause", "q" * 201, "--db", str(server.db)).exit_code == 2
    viewer = invoke("queues", "pause", "cli-keyed", "--url", keyed.url, "--api-key", VIEWER)
    assert viewer.exit_code == 4 and "operator" in viewer.stderr
    assert invoke("queues", "list", "--url", keyed.url, "--api-key", VIEWER).exit_code == 0
    ops = invoke("queues", "pause", "cli-keyed", "--url", keyed.url, "--api-key", OPERATOR)
    assert ops.exit_code == 0
    assert (
        invoke("queues", "resume", "cli-keyed", "--url", keyed.url, "--api-key", OPERATOR).exit_code
        == 0
    )
