"""Helpers of the CLI tests (a module of its own: every test folder has a ``conftest``)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
from click.testing import Result

ADMIN, OPERATOR, VIEWER = "admin-secret", "operator-secret", "viewer-secret"

Invoke = Callable[..., Result]


def keys_toml() -> str:
    lines = []
    for name, secret, role in (
        ("root", ADMIN, "admin"),
        ("ops", OPERATOR, "operator"),
        ("look", VIEWER, "viewer"),
    ):
        digest = hashlib.sha256(secret.encode()).hexdigest()
        lines.append(f'[[keys]]\nname = "{name}"\nkey_hash = "{digest}"\nroles = ["{role}"]\n')
    # a route only the test of exit status 7 asks with a key: its second request gets 429
    lines.append('[rate_limits.routes]\n"GET /api/v1/insights" = "1/minute"\n')
    return "\n".join(lines)


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def wait_status(url: str, job_id: str, statuses: set[str], *, key: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    deadline = time.monotonic() + 15
    while True:
        job = httpx.get(f"{url}/api/v1/jobs/{job_id}", headers=headers, timeout=5).json()
        if job["status"] in statuses:
            return job
        assert time.monotonic() < deadline, f"job stayed {job['status']}"
        time.sleep(0.02)
