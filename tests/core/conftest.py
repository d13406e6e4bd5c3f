from __future__ import annotations

import pytest

import hyperqueue as hq
from hyperqueue.testing import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def queue(clock: FakeClock) -> hq.Queue:
    return hq.Queue(clock=clock)
