"""Property-based fuzzing of the whole API from its OpenAPI document: whatever
schemathesis sends (valid, or invalid by the schema), the server never answers 5xx.

Bounded: 30 valid and 30 invalid examples per operation against one server process.
The event stream is left out: it is an endless response, tested in test_e2e.py.
(Schemathesis' own pytest plugin does not run on this pytest, so each operation's
strategy is driven here with hypothesis directly.)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from server_process import Server, start_server, stop
from test_worker_routes import FUZZED as WORKER_ROUTES

OPERATIONS = [
    ("POST", "/api/v1/jobs"),
    ("GET", "/api/v1/jobs"),
    ("POST", "/api/v1/jobs/batch"),
    ("GET", "/api/v1/jobs/{job_id}"),
    ("POST", "/api/v1/jobs/{job_id}/cancel"),
    ("POST", "/api/v1/jobs/{job_id}/retry"),
    ("GET", "/api/v1/queues"),
    ("GET", "/api/v1/insights"),
    ("GET", "/api/v1/workers"),
    ("GET", "/api/v1/session"),
    ("GET", "/api/v1/dead-letters"),
    ("GET", "/api/v1/dead-letters/groups"),
    ("GET", "/api/v1/jobs/count"),
    ("POST", "/api/v1/jobs/cancel"),
    ("POST", "/api/v1/jobs/retry"),
    ("POST", "/api/v1/jobs/discard"),
    ("GET", "/api/v1/audit"),
    ("GET", "/api/v1/config"),
    ("GET", "/api/v1/config/history"),
    ("GET", "/api/v1/config/versions/{version}"),
    ("GET", "/api/v1/config/diff"),
    ("GET", "/api/v1/config/export"),
    ("PUT", "/api/v1/config"),
    ("POST", "/api/v1/config/rollback/{version}"),
    ("POST", "/api/v1/workflows"),
    ("GET", "/api/v1/workflows/{workflow_id}"),
    ("POST", "/api/v1/workflows/{workflow_id}/cancel"),
    ("POST", "/api/v1/workflows/{workflow_id}/retry"),
    ("GET", "/api/v1/schedules"),
    ("POST", "/api/v1/schedules/{name}/pause"),
    ("POST", "/api/v1/schedules/{name}/resume"),
    ("POST", "/api/v1/queues/{name}/pause"),
    ("POST", "/api/v1/queues/{name}/resume"),
    ("GET", "/health"),
    ("GET", "/health/live"),
    ("GET", "/health/ready"),
]

INVALID_INPUT = {
    ("GET", "/api/v1/insights"),
    ("GET", "/api/v1/audit"),
    ("GET", "/api/v1/config/history"),
    ("GET", "/api/v1/config/versions/{version}"),
    ("GET", "/api/v1/config/diff"),
    ("GET", "/api/v1/config/export"),
    ("POST", "/api/v1/config/rollback/{version}"),
    ("POST", "/api/v1/jobs"),
    ("GET", "/api/v1/jobs"),
    ("POST", "/api/v1/jobs/batch"),
    ("GET", "/api/v1/dead-letters"),
    ("POST", "/api/v1/workflows"),
    ("GET", "/api/v1/workflows/{workflow_id}"),
}


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(Path(tmp_path_factory.mktemp("fuzz")))
    yield running
    stop(running)


@pytest.fixture(scope="module")
def api(live_server: Server) -> Any:
    return schemathesis.openapi.from_url(f"{live_server.url}/schema/openapi.json")


def test_every_operation_is_fuzzed(api: Any) -> None:
    found = {(op.ok().method.upper(), op.ok().path) for op in api.get_all_operations()}
    # the worker protocol and storage routes are fuzzed in test_worker_routes.py, with
    # their long polls told not to wait
    assert found == {*OPERATIONS, *WORKER_ROUTES, ("GET", "/api/v1/events")}


CASES = [
    pytest.param(method, path, mode, id=f"{method} {path} {mode.value}")
    for method, path in OPERATIONS
    for mode in GenerationMode
    # an operation whose only input is a string in the path cannot be sent invalid input
    if mode is GenerationMode.POSITIVE or (method, path) in INVALID_INPUT
]


@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_no_input_gets_a_server_error(
    api: Any, live_server: Server, method: str, path: str, mode: GenerationMode
) -> None:
    operation = api[path][method]

    @given(case=operation.as_strategy(mode))
    @settings(
        max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None
    )
    def check(case: Any) -> None:
        response = case.call(base_url=live_server.url, timeout=10)
        case.validate_response(response, checks=[not_a_server_error])

    check()
