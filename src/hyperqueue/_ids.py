"""Job ids: UUIDv7 strings, ordered by creation time and unique across processes.

Ordered ids give every backend the same cheap cursor for "newest first" listings.
Layout: 48 bits of milliseconds, the version, 26 random bits fixed per process (the
node), the variant, and a 48-bit counter. Within one process ids strictly increase;
between processes the millisecond decides first, and the node keeps two processes
from minting the same id. Only the counter changes between two ids of one millisecond,
so minting one costs a single formatting step.
"""

from __future__ import annotations

import secrets

__all__ = ["IdFactory"]

_COUNTER_MASK = (1 << 48) - 1


class IdFactory:
    """Mints ids for times given in seconds since the epoch."""

    __slots__ = ("_counter", "_last_ms", "_node_a", "_node_b", "_prefix")

    def __init__(self) -> None:
        node = secrets.randbits(26)
        self._node_a = 0x7000 | (node >> 14)  # version 7 + 12 node bits
        self._node_b = 0x8000 | (node & 0x3FFF)  # variant 0b10 + 14 node bits
        self._counter = secrets.randbits(32)
        self._last_ms = -1
        self._prefix = ""

    def __call__(self, now: float) -> str:
        ms = int(now * 1000)
        if ms != self._last_ms:
            if ms < self._last_ms:  # the clock stepped back: keep the old prefix
                ms = self._last_ms
            else:
                self._last_ms = ms
                h = f"{ms:012x}"
                self._prefix = f"{h[:8]}-{h[8:]}-{self._node_a:04x}-{self._node_b:04x}-"
        self._counter = counter = (self._counter + 1) & _COUNTER_MASK
        return f"{self._prefix}{counter:012x}"
