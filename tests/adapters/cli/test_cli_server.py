"""The operator commands against a real ``hyperqueue serve`` process: the output a script
parses (``--json``), the exit statuses it relies on, API keys, and the JSON-lines
submission."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import httpx
from cli_helpers import ADMIN, OPERATOR, VIEWER, Invoke, as_json, wait_status
from server_process import CLI, Server

# ------------------------------------------------------------------------- status, health


def test_status_json_lists_the_queues_and_the_health(server: Server, invoke: Invoke) -> None:
    invoke("jobs", "submit", "add", "--args", "[1, 2]", "--queue", "status-q", "--url", server.url)
    document = as_json(invoke("status", "--json", "--detailed", "--url", server.url))
    assert "status-q" in {q["queue"] for q in document["queues"]}
    assert document["status"] == "healthy"
    assert document["health"]["checks"]["storage"]["status"] == "healthy"
    table = invoke("status", "--url", server.url)
    assert table.exit_code == 0
    assert "status-q" in table.stdout


def test_health_json(server: Server, invoke: Invoke) -> None:
    document = as_json(invoke("health", "--json", "--url", server.url))
    assert document["status"] == "healthy"
    assert "queue_depth" in invoke("health", "--url", server.url).stdout


def test_a_server_that_is_not_there_is_exit_3_with_one_line(invoke: Invoke) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    for args in (("status",), ("health",), ("jobs", "list"), ("insights",), ("keys", "list")):
        result = invoke(*args, "--url", url)
        assert result.exit_code == 3, (args, result.output)
        assert result.stderr.count("\n") == 1
        assert "cannot reach" in result.stderr and "connection refused" in result.stderr


# ------------------------------------------------------------------------------ API keys


def test_without_a_key_a_keyed_server_is_exit_4_naming_the_variable(
    keyed: Server, invoke: Invoke
) -> None:
    for args in (("status",), ("jobs", "list"), ("insights",), ("jobs", "show", "x")):
        result = invoke(*args, "--url", keyed.url)
        assert result.exit_code == 4, (args, result.output)
        assert "HYPERQUEUE_API_KEY" in result.stderr
    wrong = invoke("status", "--url", keyed.url, "--api-key", "guess")
    assert wrong.exit_code == 4
    assert "refused" in wrong.stderr


def test_the_key_comes_from_the_environment_or_the_option(keyed: Server, invoke: Invoke) -> None:
    env = {"HYPERQUEUE_URL": keyed.url, "HYPERQUEUE_API_KEY": VIEWER}
    assert as_json(invoke("status", "--json", env=env))["status"] == "healthy"
    assert invoke("health", "--url", keyed.url, "--api-key", VIEWER).exit_code == 0


def test_a_role_that_may_not_is_exit_4(keyed: Server, invoke: Invoke) -> None:
    job = as_json(
        invoke(
            "jobs",
            "submit",
            "sleep",
            "--args",
            "[30]",
            "--delay",
            "60",
            "--json",
            "--url",
            keyed.url,
            "--api-key",
            OPERATOR,
        )
    )
    refused = invoke("jobs", "cancel", job["id"], "--url", keyed.url, "--api-key", VIEWER)
    assert refused.exit_code == 4
    assert "403" in refused.stderr and "operator" in refused.stderr
    done = invoke("jobs", "cancel", job["id"], "--url", keyed.url, "--api-key", OPERATOR)
    assert done.exit_code == 0, done.output


def test_rate_limited_is_exit_7(keyed: Server, invoke: Invoke) -> None:
    key = ("--url", keyed.url, "--api-key", VIEWER)
    assert invoke("insights", "--json", *key).exit_code == 0
    limited = invoke("insights", "--json", *key)
    assert limited.exit_code == 7
    assert limited.stdout == ""


def test_keys_create_list_revoke_through_the_config_api(keyed: Server, invoke: Invoke) -> None:
    admin = {"HYPERQUEUE_URL": keyed.url, "HYPERQUEUE_API_KEY": ADMIN}
    created = as_json(invoke("keys", "create", "ci", "--role", "viewer", "--json", env=admin))
    secret = created["key"]
    assert created["roles"] == ["viewer"] and secret.startswith("hq_")
    # the new key works at once, and only its hash is in the configuration
    assert invoke("status", "--url", keyed.url, "--api-key", secret).exit_code == 0
    listed = as_json(invoke("keys", "list", "--json", env=admin))
    assert {k["name"] for k in listed} == {"root", "ops", "look", "ci"}
    assert secret not in json.dumps(listed)
    again = invoke("keys", "create", "ci", env=admin)
    assert again.exit_code == 6
    # a viewer may not manage keys
    assert invoke("keys", "list", "--url", keyed.url, "--api-key", VIEWER).exit_code == 4
    revoked = invoke("keys", "revoke", "ci", "--yes", env=admin)
    assert revoked.exit_code == 0, revoked.output
    assert invoke("status", "--url", keyed.url, "--api-key", secret).exit_code == 4
    assert invoke("keys", "revoke", "ci", "--yes", env=admin).exit_code == 5
    # each change is a configuration version, with the command as its comment
    history = httpx.get(
        f"{keyed.url}/api/v1/config/history", headers={"Authorization": f"Bearer {ADMIN}"}
    ).json()["items"]
    assert [h["comment"] for h in history[:2]] == ["keys revoke ci", "keys create ci"]


def test_two_admins_changing_keys_at_once_lose_neither_change(keyed: Server) -> None:
    """The window between the command's read and its write, with another admin's change
    made in it (through the same API): the write is refused (If-Match), the command reads
    again, and both keys are in the configuration."""
    from hyperqueue_cli._client import Client
    from hyperqueue_cli._keys import _edit_keys

    auth = {"Authorization": f"Bearer {ADMIN}"}
    calls = 0

    def add_mine(keys: list[dict[str, object]]) -> list[dict[str, object]]:
        nonlocal calls
        calls += 1
        if calls == 1:  # another admin adds a key while this command holds its copy
            config = httpx.get(f"{keyed.url}/api/v1/config", headers=auth).json()
            config["keys"].append({"name": "theirs", "key_hash": "a" * 64, "roles": ["viewer"]})
            put = httpx.put(f"{keyed.url}/api/v1/config", json=config, headers=auth)
            assert put.status_code == 200, put.text
        return [*keys, {"name": "mine", "key_hash": "b" * 64, "roles": ["viewer"]}]

    with Client(keyed.url, ADMIN) as client:
        applied = _edit_keys(client, add_mine, "keys create mine")
    assert calls == 2, "the first write was refused and made again on the newer keys"
    names = {
        k["name"] for k in httpx.get(f"{keyed.url}/api/v1/config", headers=auth).json()["keys"]
    }
    assert {"theirs", "mine"} <= names
    for name in ("theirs", "mine"):  # leave the module's server as it was
        config = httpx.get(f"{keyed.url}/api/v1/config", headers=auth).json()
        config["keys"] = [k for k in config["keys"] if k["name"] != name]
        assert httpx.put(f"{keyed.url}/api/v1/config", json=config, headers=auth).is_success
    assert applied["version"]["version"] >= 3


def test_keys_create_prints_the_secret_once_on_stdout(keyed: Server, invoke: Invoke) -> None:
    admin = {"HYPERQUEUE_URL": keyed.url, "HYPERQUEUE_API_KEY": ADMIN}
    result = invoke("keys", "create", "once", "--role", "operator", env=admin)
    assert result.exit_code == 0, result.output
    secret = result.stdout.strip()
    assert secret.startswith("hq_") and "\n" not in secret
    assert "shown only this once" in result.stderr
    assert invoke("keys", "revoke", "once", "--yes", env=admin).exit_code == 0


# ------------------------------------------------------------------------------ jobs


def test_submit_show_and_list(server: Server, invoke: Invoke) -> None:
    url = ("--url", server.url)
    submitted = invoke("jobs", "submit", "add", "--args", "[40, 2]", *url)
    assert submitted.exit_code == 0, submitted.output
    job_id = submitted.stdout.strip()
    wait_status(server.url, job_id, {"completed"})
    shown = as_json(invoke("jobs", "show", job_id, "--json", *url))
    assert (shown["id"], shown["status"], shown["result"]) == (job_id, "completed", 42)
    assert "42" in invoke("jobs", "show", job_id, *url).stdout
    listed = as_json(invoke("jobs", "list", "--json", "--limit", "500", *url))
    assert job_id in {job["id"] for job in listed}
    assert len(as_json(invoke("jobs", "list", "--json", "--limit", "1", *url))) == 1


def test_submit_and_show_errors_have_their_exit_status(server: Server, invoke: Invoke) -> None:
    url = ("--url", server.url)
    missing = invoke("jobs", "show", "no-such-job", *url)
    assert missing.exit_code == 5
    assert "no-such-job" in missing.stderr
    unknown = invoke("jobs", "submit", "nosuch", *url)
    assert unknown.exit_code == 2
    assert "unknown task 'nosuch'" in unknown.stderr
    bad_args = invoke("jobs", "submit", "add", "--args", '["a", "b"]', *url)
    assert bad_args.exit_code == 2
    not_json = invoke("jobs", "submit", "add", "--args", "[1,", *url)
    assert not_json.exit_code == 2
    assert "--args" in not_json.stderr


def test_cancel_and_retry_by_id(server: Server, invoke: Invoke) -> None:
    url = ("--url", server.url)
    waiting = invoke("jobs", "submit", "sleep", "--args", "[30]", "--delay", "600", *url)
    job_id = waiting.stdout.strip()
    cancelled = invoke("jobs", "cancel", job_id, "--json", *url)
    assert as_json(cancelled)["jobs"][0]["status"] == "cancelled"
    retried = as_json(invoke("jobs", "retry", job_id, "--json", *url))
    assert retried["jobs"][0]["status"] == "pending"
    again = invoke("jobs", "retry", job_id, *url)
    assert again.exit_code == 6  # a pending job cannot be retried: 409
    # an unknown id among good ones: the good one is done, the exit status says 5
    mixed = invoke("jobs", "cancel", job_id, "nope", *url)
    assert mixed.exit_code == 5
    assert "nope" in mixed.stderr
    assert wait_status(server.url, job_id, {"cancelled"})["status"] == "cancelled"
    assert invoke("jobs", "cancel", *url).exit_code == 2  # neither ids nor --where


# ------------------------------------------------------------------------- submit --file


def test_submit_a_jsonl_file_reports_bad_lines_by_number(
    server: Server, invoke: Invoke, tmp_path: Path
) -> None:
    lines = [
        '{"task": "add", "args": [1, 2], "queue": "file-q"}',
        "# a comment, skipped",
        "not json",
        '{"task": "nosuch", "queue": "file-q"}',
        '{"task": "add", "args": [1, 2], "bogus": 1}',
        "",
        '{"task": "add", "args": ["a", "b"], "queue": "file-q"}',
        *[json.dumps({"task": "echo", "args": [i], "queue": "file-q"}) for i in range(25)],
    ]
    path = tmp_path / "jobs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = invoke(
        "jobs",
        "submit",
        "--file",
        str(path),
        "--batch-size",
        "10",
        "--json",
        "--url",
        server.url,
    )
    assert result.exit_code == 1, result.output  # some lines made no job
    summary = json.loads(result.stdout)
    assert (summary["submitted"], summary["created"]) == (26, 26)
    assert (summary["bad_lines"], summary["refused"]) == (2, 2)
    assert [e["line"] for e in summary["errors"]] == [3, 4, 5, 7]
    assert "unknown task 'nosuch'" in summary["errors"][1]["error"]
    assert "bogus" in summary["errors"][2]["error"]
    wait_status(server.url, summary["ids"][-1], {"completed"})
    queues = as_json(invoke("status", "--json", "--url", server.url))["queues"]
    assert {q["queue"]: q["total"] for q in queues}["file-q"] == 26
    table = invoke("jobs", "submit", "--file", str(path), "--url", server.url)
    assert "line 3: not JSON" in table.stderr
    assert "submitted 26 jobs" in table.stderr


def test_submit_file_strict_submits_nothing_when_a_line_is_bad(
    server: Server, invoke: Invoke, tmp_path: Path
) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text('{"task": "add", "args": [1, 2], "queue": "strict-q"}\n{"task": 3}\n')
    result = invoke("jobs", "submit", "--file", str(path), "--strict", "--url", server.url)
    assert result.exit_code == 2
    assert "line 2:" in result.stderr
    queues = as_json(invoke("status", "--json", "--url", server.url))["queues"]
    assert "strict-q" not in {q["queue"] for q in queues}


def test_submit_file_from_stdin_in_a_real_process(server: Server) -> None:
    lines = "".join(json.dumps({"task": "add", "args": [i, 1]}) + "\n" for i in range(5))
    result = subprocess.run(
        [*CLI, "jobs", "submit", "--file", "-", "--json", "--url", server.url],
        input=lines.encode(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["created"] == 5
