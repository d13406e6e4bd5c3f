"""Fuzzing the whole API through every role, on a real server with keys configured:
whatever schemathesis sends, no answer is a 5xx, and a key whose role may not use an
operation never gets a 2xx from it (nor does a request without a key).

Bounded: 8 valid examples per operation and role against one server process.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode

from hyperqueue_litestar._config import ApiKey

sys.path.insert(0, str(Path(__file__).parents[1] / "server"))
from server_process import Server, start_server, stop

RANK = {None: 0, "viewer": 1, "operator": 2, "admin": 3}
KEYS = {"viewer": "fuzz-viewer-key", "operator": "fuzz-operator-key", "admin": "fuzz-admin-key"}


def needed(method: str, path: str) -> str | None:
    """The role an operation needs, as the security guide says (None: open to all)."""
    if path.startswith("/health"):
        return None
    if path.startswith(("/api/v1/config", "/api/v1/audit")):
        return "admin"
    if method == "GET":
        return "viewer"
    return "operator"


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = Path(tmp_path_factory.mktemp("fuzz-roles"))
    blocks = [
        f'[[keys]]\nname = "{role}"\nkey_hash = "{ApiKey.hash_key(key)}"\nroles = ["{role}"]\n'
        for role, key in KEYS.items()
    ]
    (folder / "hq.toml").write_text("\n".join(blocks))
    running = start_server(folder, "--config", str(folder / "hq.toml"))
    yield running
    stop(running)


@pytest.fixture(scope="module")
def api(live_server: Server) -> Any:
    return schemathesis.openapi.from_url(f"{live_server.url}/schema/openapi.json")


def operations(api: Any) -> list[tuple[str, str]]:
    return sorted(
        (op.ok().method.upper(), op.ok().path)
        for op in api.get_all_operations()
        if op.ok().path != "/api/v1/events"  # endless: tested in test_event_visibility
    )


@pytest.mark.parametrize("role", [None, "viewer", "operator", "admin"])
def test_no_role_gets_past_its_rights_and_nothing_is_a_server_error(
    api: Any, live_server: Server, role: str | None
) -> None:
    headers = {} if role is None else {"Authorization": f"Bearer {KEYS[role]}"}
    ops = operations(api)
    assert len(ops) >= 25
    for method, path in ops:
        fuzz(api, live_server, headers, role, method, path)


def fuzz(
    api: Any, live_server: Server, headers: dict[str, str], role: str | None, method: str, path: str
) -> None:
    allowed = RANK[role] >= RANK[needed(method, path)]
    operation = api[path][method]

    @given(case=operation.as_strategy(GenerationMode.POSITIVE))
    @settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case: Any) -> None:
        if isinstance(case.body, dict) and "wait" in case.body:
            case.body["wait"] = 0  # a long poll (worker claim, listen) answers at once
        response = case.call(base_url=live_server.url, headers=headers, timeout=10)
        case.validate_response(response, checks=[not_a_server_error])
        if not allowed:
            refused = response.status_code in (401, 403)
            assert refused, (role, method, path, response.status_code, response.text[:200])

    check()
