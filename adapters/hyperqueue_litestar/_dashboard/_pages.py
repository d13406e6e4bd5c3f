"""The dashboard's pages: one HTML shell for every ``/dashboard/...`` path (the pages
are drawn by ES modules from the API) and its static assets, all under a strict
content security policy.

The shell and assets hold no data, so they need no key: the data comes from the API,
which asks for one. Assets are read once from the package (they ship in the wheel)
and answered from memory; only names in the package's ``static`` folder are served,
so no path can reach beyond it.
"""

from __future__ import annotations

import hashlib
import mimetypes
from collections.abc import Callable
from importlib import resources
from typing import Any

from litestar import Request, Response, get
from litestar.exceptions import NotFoundException
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath

__all__ = ["CONTENT_SECURITY_POLICY", "dashboard_page_routes"]

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)
"""No inline script or style, nothing from another origin, no framing."""

_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}
_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}


def _load_static() -> dict[str, bytes]:
    """Every file under ``static/`` by its relative path (``js/app.js``)."""
    found: dict[str, bytes] = {}
    root = resources.files(__package__ or __name__).joinpath("static")

    def walk(folder: resources.abc.Traversable, prefix: str) -> None:
        for item in folder.iterdir():
            if item.is_dir():
                walk(item, f"{prefix}{item.name}/")
            elif not item.name.startswith("."):
                found[f"{prefix}{item.name}"] = item.read_bytes()

    walk(root, "")
    return found


def dashboard_page_routes(
    *,
    path: str = "/dashboard",
    api_prefix: str = "/api/v1",
    is_open: Callable[[], bool] = lambda: True,
) -> list[HTTPRouteHandler]:
    """The shell at ``path`` and ``path/...``, and the assets at ``path/static/...``.

    The shell says whether the server is open right now (``is_open``: no API key is
    configured), so a page asks for a key before its first request instead of after
    a 401; that much anyone can learn from any API route."""
    base = "/" + path.strip("/")
    files = _load_static()
    shell = (
        files.pop("index.html")
        .decode()
        .replace("{{base}}", base)
        .replace("{{api}}", "/" + api_prefix.strip("/"))
    )
    shells = {flag: shell.replace("{{open}}", str(flag).lower()).encode() for flag in (True, False)}
    page_headers = {**_HEADERS, "Cache-Control": "no-store"}

    @get([base, f"{base}/{{page:path}}"], include_in_schema=False, name="hyperqueue_dashboard")
    async def dashboard_page() -> Response[bytes]:
        """The shell: the ES modules draw the page the URL names."""
        return Response(
            shells[bool(is_open())], media_type="text/html; charset=utf-8", headers=page_headers
        )

    tags = {name: f'"{hashlib.sha256(body).hexdigest()[:20]}"' for name, body in files.items()}

    @get(f"{base}/static/{{name:path}}", include_in_schema=False, name="hyperqueue_dashboard_asset")
    async def dashboard_asset(
        name: FromPath[str], request: Request[Any, Any, Any]
    ) -> Response[bytes]:
        """An asset; revalidated on each use (``ETag``), so an upgrade shows at once."""
        key = name.lstrip("/")
        body = files.get(key)
        if body is None:
            raise NotFoundException(f"no dashboard asset {name!r}")
        headers = {**_HEADERS, "Cache-Control": "no-cache", "ETag": tags[key]}
        if request.headers.get("if-none-match") == tags[key]:
            return Response(b"", status_code=304, headers=headers)
        suffix = key[key.rfind(".") :]
        media = _TYPES.get(suffix) or mimetypes.guess_type(key)[0] or "application/octet-stream"
        return Response(body, media_type=media, headers=headers)

    return [dashboard_page, dashboard_asset]
