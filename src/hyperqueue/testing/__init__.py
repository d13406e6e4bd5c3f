"""Helpers for testing code that uses hyperqueue, and for testing storage backends.

- :class:`FakeClock`: time that moves only when the test says so.
- :class:`StorageContract`: the behaviour every :class:`~hyperqueue.abc.Storage` must
  share, as pytest tests. Subclass it and provide a ``storage`` fixture that yields an
  opened backend (and, for an asyncio-only backend, an ``anyio_backend`` fixture
  returning ``"asyncio"``). Importing it needs pytest; :class:`FakeClock` does not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._clock import FakeClock

if TYPE_CHECKING:
    from ._contract import StorageContract

__all__ = ["FakeClock", "StorageContract"]


def __getattr__(name: str) -> Any:
    if name == "StorageContract":
        from ._contract import StorageContract

        return StorageContract
    raise AttributeError(name)
