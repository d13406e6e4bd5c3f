"""The server's front door, against real ``hyperqueue serve`` processes (issue 9): JSON
bodies only (415), no cross-site changes to an open server (403), bounded request heads
(431) on uvicorn and hypercorn, ``OPTIONS`` behind the keys, and ``/metrics`` and the
OpenAPI document public or not as configured."""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from hyperqueue_litestar._config import ApiKey

sys.path.insert(0, str(Path(__file__).parents[1] / "server"))
from server_process import Server, start_server, stop

ADMIN = {"Authorization": "Bearer front-admin"}
VIEWER = {"X-API-Key": "front-viewer"}
JOB = b'{"task": "add", "args": [1, 2]}'
KEYS_TOML = f"""
[[keys]]
name = "admin"
key_hash = "{ApiKey.hash_key("front-admin")}"
roles = ["admin"]

[[keys]]
name = "viewer"
key_hash = "{ApiKey.hash_key("front-viewer")}"
roles = ["viewer"]
"""


def _serve(folder: Path, config: str | None = None, *extra: str) -> Server:
    folder.mkdir()
    options = list(extra)
    if config is not None:
        (folder / "hq.toml").write_text(config)
        options += ["--config", str(folder / "hq.toml")]
    return start_server(folder, *options)


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = _serve(tmp_path_factory.mktemp("front") / "open")
    yield server
    stop(server)


@pytest.fixture(scope="module")
def keyed_private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    config = KEYS_TOML + "\n[metrics]\npublic = false\n\n[openapi]\npublic = false\n"
    server = _serve(tmp_path_factory.mktemp("front") / "private", config)
    yield server
    stop(server)


def _count(url: str, headers: dict[str, str] | None = None) -> int:
    listing = httpx.get(f"{url}/api/v1/jobs", params={"limit": 500}, headers=headers)
    return len(listing.json()["items"])


def _post(url: str, content: bytes, content_type: str | None, **headers: str) -> httpx.Response:
    sent = dict(headers)
    if content_type is not None:
        sent["Content-Type"] = content_type
    return httpx.post(f"{url}/api/v1/jobs", content=content, headers=sent)


# -- JSON only ---------------------------------------------------------------------------


def test_bodies_that_are_not_json_get_415_and_store_nothing(open_server: Server) -> None:
    url = open_server.url
    before = _count(url)
    bodies = {
        "text/plain": JOB,
        "text/plain;charset=UTF-8": JOB,
        "application/x-www-form-urlencoded": b"task=add&args=1",
        "multipart/form-data; boundary=xyz": (
            b'--xyz\r\nContent-Disposition: form-data; name="task"\r\n\r\nadd\r\n--xyz--\r\n'
        ),
        "application/xml": b"<job><task>add</task></job>",
        None: JOB,
    }
    for content_type, body in bodies.items():
        answer = _post(url, body, content_type)
        assert answer.status_code == 415, (content_type, answer.text)
        error = answer.json()
        assert error["status_code"] == 415
        assert "application/json" in error["detail"]
        assert error["extra"]["accepted"] == ["application/json", "application/*+json"]
    # a multipart batch, through httpx's own encoder
    batch = httpx.post(f"{url}/api/v1/jobs/batch", files={"jobs": ("j.json", JOB)})
    assert batch.status_code == 415
    assert _count(url) == before


def test_json_and_plus_json_are_accepted(open_server: Server) -> None:
    url = open_server.url
    for content_type in (
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/vnd.hyperqueue+json",
    ):
        answer = _post(url, JOB, content_type)
        assert answer.status_code == 201, (content_type, answer.text)


def test_a_post_without_a_body_needs_no_content_type(open_server: Server) -> None:
    url = open_server.url
    job = _post(url, b'{"task": "add", "args": [1, 1], "delay": 3600}', "application/json")
    assert job.status_code == 201
    cancel = httpx.post(f"{url}/api/v1/jobs/{job.json()['id']}/cancel")
    assert cancel.status_code == 200, cancel.text
    assert cancel.json()["status"] == "cancelled"


# -- cross-site request forgery -------------------------------------------------------


def test_an_open_server_refuses_cross_site_changes(open_server: Server) -> None:
    url = open_server.url
    own = f"http://{urlsplit(url).netloc}"
    before = _count(url)
    refused = [
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Origin": own.rsplit(":", 1)[0] + ":1"},  # the same host, another port
    ]
    for headers in refused:
        answer = _post(url, JOB, "application/json", **headers)
        assert answer.status_code == 403, (headers, answer.text)
        assert "cross-site request refused" in answer.json()["detail"]
    assert _count(url) == before
    # the same origin (the dashboard's own pages), and no browser headers at all
    for headers in ({"Origin": own, "Sec-Fetch-Site": "same-origin"}, {}):
        assert _post(url, JOB, "application/json", **headers).status_code == 201
    # reads are not changes
    assert httpx.get(f"{url}/api/v1/jobs", headers={"Sec-Fetch-Site": "cross-site"}).is_success


def test_an_open_server_answers_loopback_host_names_only(open_server: Server) -> None:
    """DNS rebinding: an attacker's name pointed at 127.0.0.1 reaches the server with
    its own name in Host; refused, reads included, and audited."""
    url = open_server.url
    port = urlsplit(url).port
    for host in ("evil.example", f"evil.example:{port}", "10.0.0.1"):
        answer = httpx.get(f"{url}/api/v1/jobs", headers={"Host": host})
        assert answer.status_code == 403, (host, answer.text)
        assert "loopback host names" in answer.json()["detail"]
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "localhost"):
        assert httpx.get(f"{url}/api/v1/jobs", headers={"Host": host}).status_code == 200


def test_with_keys_the_origin_check_is_left_out(keyed_private: Server) -> None:
    answer = _post(
        keyed_private.url, JOB, "application/json", Origin="https://tool.example", **ADMIN
    )
    assert answer.status_code == 201, answer.text
    assert _post(keyed_private.url, JOB, "text/plain", **ADMIN).status_code == 415


# -- request heads ------------------------------------------------------------------------


def _raw(url: str, request: bytes) -> tuple[int, bytes]:
    """Send ``request`` from one thread while reading the answer in this one: a server
    that refuses early closes while the client is still sending."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:

        def send() -> None:
            with contextlib.suppress(OSError):  # the server closes once it has refused
                sock.sendall(request)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except OSError:
            pass
        sender.join(10)
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
    return status, answer


def _head(path: str = "/api/v1/jobs", *headers: bytes) -> bytes:
    return b"\r\n".join([b"GET " + path.encode() + b" HTTP/1.1", b"Host: x", *headers, b"", b""])


def _check_head_limits(url: str) -> None:
    huge = _raw(url, _head("/api/v1/jobs", b"X-Big: " + b"a" * (11 << 20)))
    assert huge[0] == 431, huge[1][:300]
    assert httpx.get(f"{url}/health/live").status_code == 200
    long_line = _raw(url, _head("/api/v1/jobs?q=" + "a" * 200_000))
    assert long_line[0] == 431, long_line[1][:300]
    many = {f"X-H{i}": "1" for i in range(200)}
    answer = httpx.get(f"{url}/api/v1/jobs", headers=many)
    assert answer.status_code == 431
    assert answer.json()["extra"] == {"max_headers": 100}
    # a head within the limits, on the same server
    fine = {f"X-H{i}": "v" * 500 for i in range(50)}
    assert httpx.get(f"{url}/api/v1/jobs", headers=fine).status_code == 200


def test_uvicorn_bounds_request_heads(open_server: Server) -> None:
    _check_head_limits(open_server.url)


def test_hypercorn_bounds_request_heads(tmp_path: Path) -> None:
    pytest.importorskip("hypercorn", reason="needs the http2 extra")
    server = _serve(tmp_path / "hypercorn", None, "--server", "hypercorn")
    try:
        _check_head_limits(server.url)
    finally:
        stop(server)


def test_the_limits_are_configuration_keys(tmp_path: Path) -> None:
    config = "[server]\nmax_header_bytes = 8192\nmax_headers = 20\n"
    server = _serve(tmp_path / "small", config)
    try:
        url = server.url
        assert _raw(url, _head("/api/v1/jobs", b"X-Big: " + b"a" * 20_000))[0] == 431
        assert httpx.get(f"{url}/api/v1/jobs", headers={"X-Mid": "a" * 4000}).status_code == 200
        many = {f"X-H{i}": "1" for i in range(25)}
        assert httpx.get(f"{url}/api/v1/jobs", headers=many).status_code == 431
    finally:
        stop(server)


# -- OPTIONS, /metrics, /schema -------------------------------------------------------------


def test_options_needs_a_key_on_a_keyed_server(keyed_private: Server) -> None:
    url = keyed_private.url
    for path in ("/api/v1/config", "/api/v1/jobs"):
        anonymous = httpx.options(f"{url}{path}")
        assert anonymous.status_code == 401, (path, anonymous.text)
        assert httpx.options(f"{url}{path}", headers={"X-API-Key": "wrong"}).status_code == 401
        assert httpx.options(f"{url}{path}", headers=VIEWER).status_code == 204


def test_options_on_an_open_server_still_answers(open_server: Server) -> None:
    assert httpx.options(f"{open_server.url}/api/v1/jobs").status_code == 204


def test_metrics_and_schema_can_be_private(keyed_private: Server) -> None:
    url = keyed_private.url
    for path in ("/metrics", "/schema/openapi.json"):
        assert httpx.get(f"{url}{path}").status_code == 401, path
        assert httpx.get(f"{url}{path}", headers={"X-API-Key": "nope"}).status_code == 401
        assert httpx.get(f"{url}{path}", headers=VIEWER).status_code == 200, path
    assert "hyperqueue_" in httpx.get(f"{url}/metrics", headers=VIEWER).text


def test_metrics_and_schema_are_public_by_default(tmp_path: Path) -> None:
    server = _serve(tmp_path / "public", KEYS_TOML)
    try:
        for path in ("/metrics", "/schema/openapi.json"):
            assert httpx.get(f"{server.url}{path}").status_code == 200, path
        # the API itself still needs a key
        assert httpx.get(f"{server.url}/api/v1/jobs").status_code == 401
    finally:
        stop(server)
