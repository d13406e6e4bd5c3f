"""Job ids: UUIDv7 strings, ordered by creation time and unique across processes.

Ordered ids give every backend the same cheap cursor for "newest first" listings.
Layout: 48 bits of milliseconds, the version, 26 random bits fixed per process (the
node), the variant, and a 48-bit counter. Within one process ids strictly increase;
between processes the millisecond decides first, and the node keeps two processes
from minting the same id. A clock that steps back keeps the last millisecond until it
passes it again.

Minting is on every enqueue's path, so it formats as little as it can: the id but the
counter's last three hex digits (its head) is kept, and those digits come from a table.
Most ids cost a comparison of the time, a table look-up and one concatenation; the head
is formatted again when the millisecond moves on or the last three digits wrap (once
in 4,096 ids).
"""

from __future__ import annotations

import secrets

__all__ = ["IdFactory"]

_COUNTER_MASK = (1 << 48) - 1
_LOW_BITS = 12
_LOW_MASK = (1 << _LOW_BITS) - 1
_HEX3 = tuple(f"{low:03x}" for low in range(1 << _LOW_BITS))


class IdFactory:
    """Mints ids for times given in seconds since the epoch: ``factory(now)``, or
    ``factory.new(now)`` (a bound method is a cheaper call than the instance)."""

    __slots__ = ("_head", "_high", "_low", "_node_a", "_node_b", "_prefix", "_until")

    def __init__(self) -> None:
        node = secrets.randbits(26)
        self._node_a = 0x7000 | (node >> 14)  # version 7 + 12 node bits
        self._node_b = 0x8000 | (node & 0x3FFF)  # variant 0b10 + 14 node bits
        counter = secrets.randbits(32)
        self._high = counter >> _LOW_BITS  # the counter, less its last three hex digits
        self._low = _LOW_MASK  # as if they had just run out: the first id formats
        self._until = float("-inf")  # the end of the current millisecond (x 1000)
        self._prefix = ""
        self._head = ""

    def new(self, now: float) -> str:
        low = self._low + 1
        if now * 1000.0 < self._until and low <= _LOW_MASK:
            self._low = low  # the common case: only the last three digits move
            return self._head + _HEX3[low]
        return self._next_head(now)

    __call__ = new

    def _next_head(self, now: float) -> str:
        """A new millisecond, or a carry out of the last three digits: format the head
        again (the counter wraps at 48 bits)."""
        ms = int(now * 1000)
        if ms >= self._until:
            self._until = float(ms + 1)
            h = f"{ms:012x}"
            self._prefix = f"{h[:8]}-{h[8:]}-{self._node_a:04x}-{self._node_b:04x}-"
        counter = ((self._high << _LOW_BITS) + self._low + 1) & _COUNTER_MASK
        self._high, self._low = counter >> _LOW_BITS, counter & _LOW_MASK
        self._head = f"{self._prefix}{self._high:09x}"
        return self._head + _HEX3[self._low]
