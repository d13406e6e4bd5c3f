"""The live web dashboard at ``/dashboard`` (issue 13).

A page shell and its assets (plain ES modules and one stylesheet, shipped in the wheel,
no build step, nothing fetched from elsewhere), served under a strict content security
policy; and the two read routes the pages need that the API lacked: the worker pools on
the storage (``GET {api_prefix}/workers``) and who the caller is
(``GET {api_prefix}/session``: key name, roles, whether the server is open), so the
pages show action buttons only to a key that may use them.

The pages call the same API as every other client, with the same keys: the key is
typed once on the dashboard's sign-in form, kept in the tab's ``sessionStorage`` and
sent as ``X-API-Key`` on each ``fetch`` (the event stream is read with ``fetch`` too,
since ``EventSource`` cannot send a header). No cookie is involved, so the dashboard
adds nothing a cross-site page could ride on.
"""

from __future__ import annotations

from ._api import SessionInfo, WorkersResponse, dashboard_api_routes
from ._pages import CONTENT_SECURITY_POLICY, dashboard_page_routes

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "SessionInfo",
    "WorkersResponse",
    "dashboard_api_routes",
    "dashboard_page_routes",
]
