"""hyperqueue_cli: the ``hyperqueue`` command: ``serve`` (also ``--detach``) and ``stop``,
``worker``, and the operator's commands ``status``, ``health``, ``insights``, ``jobs``,
``dlq``, ``keys`` and ``config``, with the exit statuses of docs/reference/cli.md.

Install with ``pip install 'hyperqueue-jobs[server]'``; ``python -m hyperqueue_cli`` runs it
too.
"""

from __future__ import annotations

try:
    import click  # noqa: F401
    import rich  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "hyperqueue_cli needs click and rich: pip install 'hyperqueue-jobs[server]'"
    ) from exc

from ._main import load_queue, main

__all__ = ["load_queue", "main"]
