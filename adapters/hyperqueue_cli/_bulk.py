"""Bulk actions by query (``jobs cancel|retry --where``, ``dlq replay``), honest about
the count.

The server is asked first how many jobs the action would change (``dry_run``); the user
confirms that exact number (``--yes`` skips the question); the action is then sent with
``expected`` set to it, so the server refuses (409, exit status 6) when the number
changed in between, instead of changing more or fewer jobs than were confirmed.
"""

from __future__ import annotations

import click

from . import _exit
from ._client import Client
from ._exit import CliError
from ._output import print_json

__all__ = ["bulk_action"]

_VERB = {"cancel": "Cancel", "retry": "Retry", "discard": "Discard"}


def bulk_action(
    client: Client, action: str, query: str, *, yes: bool, as_json: bool, dry_run: bool = False
) -> None:
    """``POST /api/v1/jobs/{action}`` for the jobs ``query`` matches, after confirming."""
    path = f"/api/v1/jobs/{action}"
    count = int(client.post(path, {"q": query, "dry_run": True})["count"])
    if dry_run or count == 0:
        if as_json:
            print_json({"action": action, "query": query, "count": count, "dry_run": True})
        else:
            click.echo(f"{count:,} jobs match {query!r}: nothing to {action}", err=True)
        return
    if not yes:
        click.confirm(f"{_VERB[action]} {count:,} jobs matching {query!r}?", abort=True, err=True)
    response = client.send("POST", path, json={"q": query, "expected": count})
    if response.status_code == 409:
        now = (response.json().get("extra") or {}).get("count")
        shown = "?" if now is None else f"{now:,}"
        raise CliError(
            f"the number of matching jobs changed from {count:,} to {shown} since it was "
            "counted: nothing was changed; run the command again",
            _exit.CONFLICT,
        )
    if not response.is_success:
        raise client.error(response)
    changed = int(response.json()["count"])
    if as_json:
        print_json({"action": action, "query": query, "count": changed, "dry_run": False})
    else:
        click.echo(f"{action}: {changed:,} jobs", err=True)
