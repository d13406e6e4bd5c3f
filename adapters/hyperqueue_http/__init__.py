"""A hyperqueue client over HTTP (extra ``client``): :class:`HttpStorage` is a storage
whose state lives in a running hyperqueue server, so ``hq.Queue(HttpStorage(url))`` has
the job API of any queue, and its ``.worker()`` runs jobs it takes over the server's
worker protocol (claim, extend, finish; leases and fencing tokens decided by the
server's clock)::

    import hyperqueue as hq
    from hyperqueue_http import HttpStorage

    queue = hq.Queue(HttpStorage("http://127.0.0.1:8000", api_key="..."))

Errors: the server's refusals come back as the core's errors where one means the same
(:class:`hyperqueue.JobNotFound`, :class:`hyperqueue.InvalidTransition`, ...), else as
:class:`RequestRejected` (:class:`Unauthorized`, :class:`Forbidden`); a server that does
not answer is :class:`ServerUnavailable` (a :class:`hyperqueue.StorageError`).
"""

from __future__ import annotations

try:
    import httpx as _httpx  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError("hyperqueue_http needs httpx: pip install 'hyperqueue-jobs[client]'") from exc

from ._errors import (
    ConnectFailed,
    Forbidden,
    HttpError,
    RequestRejected,
    ServerUnavailable,
    Unauthorized,
)
from ._storage import HttpStorage

__all__ = [
    "ConnectFailed",
    "Forbidden",
    "HttpError",
    "HttpStorage",
    "RequestRejected",
    "ServerUnavailable",
    "Unauthorized",
]
