"""Helpers for testing code that uses hyperqueue, and for testing storage backends.

- :class:`FakeClock`: time that moves only when the test says so.
- :class:`StorageContract`: the behaviour every :class:`~hyperqueue.abc.Storage` must
  share, as pytest tests. Subclass it and provide a ``storage`` fixture that yields an
  opened backend (and, for an asyncio-only backend, an ``anyio_backend`` fixture
  returning ``"asyncio"``). Importing it needs pytest; :class:`FakeClock` does not.
- :class:`SharedLogContract`: more of it, for a backend that several processes open
  (entries of two origins in one event log); it also needs a ``sibling`` fixture, a
  second storage object on the same backend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._clock import FakeClock

if TYPE_CHECKING:
    from ._contract import StorageContract
    from ._contract_shared_log import SharedLogContract

__all__ = ["FakeClock", "SharedLogContract", "StorageContract"]


def __getattr__(name: str) -> Any:
    if name == "StorageContract":
        from ._contract import StorageContract

        return StorageContract
    if name == "SharedLogContract":
        from ._contract_shared_log import SharedLogContract

        return SharedLogContract
    raise AttributeError(name)
