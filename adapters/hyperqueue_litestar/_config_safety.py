"""The rule every configuration change at run time goes through (MISSION D4).

A running server's configuration changes four ways: ``PUT {api_prefix}/config`` (an
import, JSON or TOML), ``POST {api_prefix}/config/rollback/{version}``, an edit of the
watched file, and :meth:`ConfigApi.apply <._config_routes.ConfigApi.apply>` called by
the host app. :class:`ConfigApi <._config_routes.ConfigApi>` checks each one with
:func:`check_change`, against the running configuration and under the same lock that
applies it, so two changes cannot slip past the rule together. A change is refused
(:class:`ConfigRefused`) when:

1. **keys left out** (422, rule ``keys_missing``): the document has no ``keys`` while the
   server has some. Keys are never dropped by omission, and a ``PUT`` is not merged
   with the running configuration either (it replaces the whole document, as ``PUT``
   says): send the keys (``GET {api_prefix}/config/export`` has them, as hashes), or
   ``keys: []`` (``keys = []`` in TOML) to open the server on purpose. A stored version
   (a rollback) always says what its keys are.
2. **opening** (409, rule ``open_beyond_loopback``): the change leaves a server that
   has keys with none, and the server does not listen on loopback only. ``hyperqueue
   serve`` knows its address; an app built with ``create_app`` does not, so the address
   counts as beyond loopback unless the host app passes ``loopback=True`` to
   ``ConfigApi``. A server that is already open (started without keys on loopback, or
   with ``--allow-open``) may change its other settings and stay open.
3. **admins locked out** (409, rule ``no_admin``): keys remain but none has the
   ``admin`` role without a tenant (a tenant-bound key cannot reach the configuration
   routes), so nobody could change the configuration again over HTTP. A server that
   already runs without such a key (its admins edit the watched file) has nobody to
   lock out: its changes pass this rule.

A refusal leaves the running configuration as it was, records no version, is published
as a :class:`ConfigChangeRefused` security event (an audit record, one per refusal) and
answers ``{status_code, detail}`` over HTTP; a refused file reload is one warning line.
"""

from __future__ import annotations

import ipaddress
import tomllib
from typing import Any, Literal

import msgspec

from ._config import Config, ConfigError
from ._security import SecurityEvent

__all__ = [
    "ConfigChangeRefused",
    "ConfigRefused",
    "check_change",
    "document_has_keys",
    "is_loopback",
]

Rule = Literal["keys_missing", "open_beyond_loopback", "no_admin"]


class ConfigRefused(ConfigError):
    """A valid configuration that may not replace the running one: ``rule`` names the
    rule it breaks, ``status_code`` the HTTP answer (422 for a document that leaves its
    keys out, 409 for a change the server's state forbids)."""

    def __init__(self, reason: str, *, rule: Rule, status_code: int, source: str = "") -> None:
        super().__init__(reason, source=source)
        self.path = "keys"
        self.rule: Rule = rule
        self.status_code = status_code


class ConfigChangeRefused(SecurityEvent, frozen=True, kw_only=True, tag="security.config_refused"):
    """A configuration change was refused by :func:`check_change`: ``route`` is the
    HTTP route (or the watched file's path, with ``method`` ``"RELOAD"``), ``detail``
    the reason."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address to listen on) is reachable from this machine only:
    ``localhost``, ``127.0.0.0/8`` or ``::1``. ``0.0.0.0``, ``::`` and any name other
    than ``localhost`` are not."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def document_has_keys(body: bytes | str, *, format: Literal["toml", "json"]) -> bool:
    """Whether a configuration document names ``keys`` at its top level (``keys = []``
    does). A document that cannot be decoded answers True: reading it fails on its own."""
    try:
        if format == "json":
            document: Any = msgspec.json.decode(body)
        else:
            document = tomllib.loads(body.decode() if isinstance(body, bytes) else body)
    except (msgspec.DecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return True
    return not isinstance(document, dict) or "keys" in document


def _admin_reachable(config: Config) -> bool:
    return any("admin" in key.roles and key.tenant is None for key in config.keys)


def check_change(
    current: Config, new: Config, *, loopback: bool, keys_given: bool = True, source: str = ""
) -> None:
    """Raise :class:`ConfigRefused` when ``new`` may not replace ``current`` (see the
    module doc). ``loopback``: the server listens on loopback only; ``keys_given``:
    the document that ``new`` was read from names ``keys``; ``source`` names it in the
    message (a file's path)."""
    if current.keys and not keys_given:
        raise ConfigRefused(
            f"keys missing: the document leaves `keys` out and the server has "
            f"{len(current.keys)}, which are never dropped by omission: send them "
            "(the export has them, as hashes), or `keys: []` to open the server",
            rule="keys_missing",
            source=source,
            status_code=422,
        )
    if current.keys and not new.keys and not loopback:
        raise ConfigRefused(
            "refused: the change removes every API key and would open the server, which "
            "does not listen on loopback only; keep at least one key (an open server "
            "must listen on 127.0.0.1, ::1 or localhost)",
            rule="open_beyond_loopback",
            source=source,
            status_code=409,
        )
    admins_before = not current.keys or _admin_reachable(current)
    if new.keys and not _admin_reachable(new) and admins_before:
        raise ConfigRefused(
            "refused: no key would have the admin role without a tenant, which would lock "
            "every admin out of the configuration; keep at least one such key",
            rule="no_admin",
            source=source,
            status_code=409,
        )
