"""The exit statuses of every ``hyperqueue`` command, in one place, so scripts can trust
them (the table is in docs/reference/cli.md).

A command that fails raises :class:`CliError` with one of these: click prints its one
line on stderr (``Error: ...``) and exits with the status. Usage errors are click's own
(status 2).
"""

from __future__ import annotations

import click

__all__ = [
    "ABORTED",
    "AUTH",
    "BUSY",
    "CONFLICT",
    "FAILED",
    "GAVE_UP",
    "NOT_FOUND",
    "OK",
    "UNREACHABLE",
    "USAGE",
    "CliError",
]

OK = 0
"""Done; the server is healthy (or degraded)."""
FAILED = 1
"""It failed: the server is unhealthy or answered 5xx, or some items of a batch were
refused."""
ABORTED = 1
"""The user declined a confirmation (as click's own ``Abort``)."""
USAGE = 2
"""A bad option or argument, or input the server refused as invalid (400, 413, 422)."""
UNREACHABLE = 3
"""The server cannot be reached, or the database cannot be opened."""
AUTH = 4
"""The server refused the API key: none or unknown (401), or a role that may not (403)."""
NOT_FOUND = 5
"""No such job, key or running server (404; ``stop`` with no live pid file)."""
CONFLICT = 6
"""The job's status does not allow the change, or the count changed since it was
confirmed (409)."""
BUSY = 7
"""Rate limited (429) or refused by the server's mode (503): try again later."""
GAVE_UP = 8
"""``stop`` sent SIGTERM but the server still ran after ``--timeout``."""


class CliError(click.ClickException):
    """One line for stderr and the exit status that goes with it."""

    def __init__(self, message: str, exit_code: int = FAILED) -> None:
        super().__init__(message)
        # click declares exit_code a ClassVar yet reads it from the instance it raises
        self.exit_code = exit_code  # type: ignore[misc]
