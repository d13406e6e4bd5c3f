"""``hyperqueue keys``: create, list and revoke API keys on a running server.

Keys live in the server's configuration (``[[keys]]``: a name, the SHA-256 of the
secret, roles, an optional tenant), so these commands go through its configuration API
(admin role): read the running configuration, change its ``keys``, put it back. That way
every change is a new configuration version (history, diff, rollback), is audited, and
takes effect at once; the server refuses a change that would lock every admin out (exit
status 6). A new key's secret is made here, printed once, and only its hash is sent.

A change is written with ``If-Match`` naming the version it was made from: when another
admin changed the configuration in between, the server refuses it (412) and the command
reads again and makes its change on the newer keys, so neither change is lost.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from . import _exit
from ._client import Client, server_options
from ._exit import CliError
from ._output import console, print_json

__all__ = ["keys"]

ROLES = ("viewer", "operator", "admin", "worker")


@click.group()
def keys() -> None:
    """API keys of a running server (through its configuration API: admin role)."""


_ATTEMPTS = 3  # read-modify-write rounds before giving up on a busy configuration


def _edit_keys(
    client: Client, change: Callable[[list[dict[str, Any]]], list[dict[str, Any]]], comment: str
) -> dict[str, Any]:
    """Read the configuration, change its keys with ``change``, and write it back only
    if nobody changed it meanwhile (``If-Match`` with the version read; the server
    answers 412 otherwise), so two admins at once never overwrite each other's keys.
    A lost race reads again and applies ``change`` to the newer keys."""
    for _ in range(_ATTEMPTS):
        read = client.send("GET", "/api/v1/config")
        if not read.is_success:
            raise client.error(read)
        config: dict[str, Any] = read.json()
        config["keys"] = change(list(config.get("keys", [])))
        version = read.headers.get("X-Config-Version")
        written = client.send(
            "PUT",
            "/api/v1/config",
            json=config,
            params={"comment": comment},
            headers={"If-Match": version} if version else None,
        )
        if written.status_code == 412:
            continue
        if not written.is_success:
            raise client.error(written)
        answer: dict[str, Any] = written.json()
        return answer
    raise CliError(
        f"the configuration kept changing while this command ran ({_ATTEMPTS} tries); run it again",
        _exit.CONFLICT,
    )


@keys.command("create")
@click.argument("name")
@click.option(
    "--role",
    "roles",
    multiple=True,
    default=("viewer",),
    show_default=True,
    help=f"A role ({', '.join(ROLES)}); repeat for several.",
)
@click.option("--tenant", default=None, help="Bind the key to this tenant.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with the secret).")
@server_options
def create(
    name: str,
    roles: tuple[str, ...],
    tenant: str | None,
    as_json: bool,
    url: str,
    api_key: str | None,
) -> None:
    """Make a key NAME; its secret is printed once, and only its hash is stored."""
    from hyperqueue_litestar import ApiKey

    secret = "hq_" + secrets.token_urlsafe(32)
    entry: dict[str, Any] = {
        "name": name,
        "key_hash": ApiKey.hash_key(secret),
        "roles": list(dict.fromkeys(roles)),
    }
    if tenant is not None:
        entry["tenant"] = tenant

    def add(keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if any(k["name"] == name for k in keys):
            raise CliError(f"a key named {name!r} exists: revoke it first", _exit.CONFLICT)
        return [*keys, entry]

    with Client(url, api_key) as client:
        applied = _edit_keys(client, add, f"keys create {name}")
    version = applied["version"]["version"]
    if as_json:
        print_json({**entry, "key": secret, "config_version": version})
        return
    click.echo(
        f"key {name!r} created (roles: {', '.join(entry['roles'])}; configuration version "
        f"{version}). Its secret, shown only this once:",
        err=True,
    )
    click.echo(secret)


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@server_options
def list_keys(as_json: bool, url: str, api_key: str | None) -> None:
    """The configured keys: name, roles, tenant and the start of the hash (never a
    secret: the server does not have them)."""
    with Client(url, api_key) as client:
        rows = client.get("/api/v1/config").get("keys", [])
    if as_json:
        print_json(rows)
        return
    table = Table(title=f"{len(rows)} API keys")
    for column in ("name", "roles", "tenant", "hash"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            escape(row["name"]),
            ", ".join(row.get("roles", [])),
            escape(row.get("tenant") or "-"),
            row["key_hash"][:12] + "…",
        )
    console().print(table)


@keys.command("revoke")
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask to confirm.")
@server_options
def revoke(name: str, yes: bool, url: str, api_key: str | None) -> None:
    """Remove the key NAME: requests with it are refused from now on."""

    def remove(keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
        after = [k for k in keys if k["name"] != name]
        if len(after) == len(keys):
            raise CliError(f"no key named {name!r}", _exit.NOT_FOUND)
        return after

    with Client(url, api_key) as client:
        remove(client.get("/api/v1/config").get("keys", []))  # a missing key: no question
        if not yes:
            click.confirm(f"Revoke key {name!r}?", abort=True, err=True)
        applied = _edit_keys(client, remove, f"keys revoke {name}")
    click.echo(
        f"key {name!r} revoked (configuration version {applied['version']['version']})",
        err=True,
    )
