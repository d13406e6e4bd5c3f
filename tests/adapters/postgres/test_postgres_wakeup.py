"""The NOTIFY gate on its own: at most one notification in flight, and every
transaction that committed without one is followed by one."""

from __future__ import annotations

import asyncio

import pytest

from hyperqueue_postgres._wakeup import NotifyGate

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class _Sender:
    """A trailing NOTIFY that completes when the test says so."""

    def __init__(self) -> None:
        self.sent = 0
        self.in_flight = 0
        self.release = asyncio.Event()

    async def __call__(self) -> None:
        self.in_flight += 1
        assert self.in_flight == 1, "two notifications in flight"
        await self.release.wait()
        self.release.clear()
        self.in_flight -= 1
        self.sent += 1


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_one_in_flight_and_a_trailing_one_for_those_that_missed() -> None:
    sender = _Sender()
    gate = NotifyGate(sender)
    assert gate.take()  # the first transaction carries it
    assert not gate.take() and not gate.take()  # two more commit without
    gate.missed()
    gate.missed()
    await _settle()
    assert sender.in_flight == 0  # still owed: the carrier has not landed yet
    gate.landed()
    await _settle()
    assert sender.in_flight == 1  # one trailing notify covers both
    assert not gate.take()  # while it flies, nobody else carries one
    gate.missed()
    sender.release.set()
    await _settle()
    assert sender.sent == 1 and sender.in_flight == 1  # owed again: one more
    sender.release.set()
    await _settle()
    assert sender.sent == 2 and sender.in_flight == 0
    assert gate.take()  # quiet again: the next transaction carries it
    gate.landed()
    await _settle()
    assert sender.sent == 2  # nothing owed, nothing sent
    await gate.aclose()


async def test_a_failed_trailing_notify_does_not_jam_the_gate() -> None:
    calls = 0

    async def broken() -> None:
        nonlocal calls
        calls += 1
        raise OSError("connection lost")

    gate = NotifyGate(broken)
    gate.missed()
    await gate.aclose()
    assert calls == 1
    assert gate.take()  # free again
