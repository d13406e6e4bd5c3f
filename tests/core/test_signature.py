"""Argument checks: the type-only fast path for plain scalar parameters accepts and
refuses exactly what the full msgspec check does, so speed never changes an answer."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from hyperqueue._errors import ArgumentError
from hyperqueue._signature import Signature


async def scalars(a: int, b: float, c: str = "x", d: bool = False, e: Any = None) -> None:
    pass


FAST = Signature("scalars", scalars)


def full_check(args: tuple[Any, ...]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The same call through the full path (keyword form skips the fast path)."""
    kwargs = dict(zip(("a", "b", "c", "d", "e"), args, strict=False))
    stored_kwargs = FAST.check((), kwargs)[1]
    return tuple(stored_kwargs.values()), {}


values = st.one_of(
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False),
    st.text(max_size=5),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=2),
)


@given(st.lists(values, max_size=6))
def test_fast_path_answers_as_the_full_check(args: list[Any]) -> None:
    try:
        # more arguments than parameters: refused (the keyword form cannot say it)
        expected: object = full_check(tuple(args)) if len(args) <= 5 else ArgumentError
    except ArgumentError:
        expected = ArgumentError
    try:
        got: object = FAST.check(tuple(args), {})
    except ArgumentError:
        got = ArgumentError
    if expected is ArgumentError or got is ArgumentError:
        assert got is expected
    else:
        assert isinstance(got, tuple) and isinstance(expected, tuple)
        assert list(got[0]) == list(expected[0]) and got[1] == {}


def test_fast_path_refuses_a_bool_for_an_int_and_a_missing_argument() -> None:
    for bad in [(True, 1.0), (1,), ("1", 1.0), (1, 1.0, "x", False, None, "extra")]:
        try:
            FAST.check(bad, {})
        except ArgumentError:
            continue
        raise AssertionError(f"{bad!r} was accepted")
    assert FAST.check((1, 2), {}) == ((1, 2), {})
