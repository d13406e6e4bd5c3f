"""hyperqueue_cli: the ``hyperqueue`` command (``serve``, ``worker``, ``status``, ``health``).

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
