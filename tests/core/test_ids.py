"""Job ids: UUIDv7 strings that only grow within a process, whatever the clock does,
minted from a cached head and a table of the last three hex digits."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from hyperqueue._ids import IdFactory

T0 = 1_700_000_000.0


def millisecond_of(job_id: str) -> int:
    return int(job_id[:8] + job_id[9:13], 16)


def test_an_id_is_a_uuid7_carrying_its_millisecond() -> None:
    new = IdFactory()
    job_id = new(T0 + 0.1234)
    parsed = uuid.UUID(job_id)
    assert str(parsed) == job_id
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert millisecond_of(job_id) == int((T0 + 0.1234) * 1000)


def test_ids_grow_across_a_carry_out_of_the_last_three_digits() -> None:
    new = IdFactory()
    ids = [new(T0) for _ in range(3 * 4096 + 5)]  # one millisecond: only the counter moves
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    tails = {job_id[-3:] for job_id in ids}
    assert "fff" in tails and "000" in tails, "the last three digits wrapped at least twice"
    assert len({job_id[:-3] for job_id in ids}) >= 3, "and the head moved on each time"


def test_the_counter_wraps_at_48_bits() -> None:
    new = IdFactory()
    new(T0)
    new._high, new._low = ((1 << 48) - 2) >> 12, ((1 << 48) - 2) & 0xFFF
    new._until = float("-inf")  # a new millisecond: the head is formatted again
    assert [new(T0 + 1)[-12:] for _ in range(3)] == ["ffffffffffff", "000000000000", "000000000001"]


@given(st.lists(st.floats(min_value=-5.0, max_value=5.0), min_size=1, max_size=60))
def test_ids_only_grow_however_the_clock_moves(steps: list[float]) -> None:
    new = IdFactory()
    now, last, latest_ms = T0, "", 0
    for step in steps:
        now += step
        job_id = new(now)
        assert job_id > last
        # a clock that stepped back keeps the newest millisecond until it passes it
        latest_ms = max(latest_ms, int(now * 1000))
        assert millisecond_of(job_id) == latest_ms
        last = job_id


def test_two_factories_never_mint_the_same_id() -> None:
    a, b = IdFactory(), IdFactory()
    assert {a(T0) for _ in range(100)}.isdisjoint({b(T0) for _ in range(100)})
