"""The JSON form of values that jobs carry (arguments, results, progress).

Every backend but memory stores jobs as JSON, so values are put in their JSON form up
front: a task then sees the same values whichever backend ran it (a tuple comes back
as a list, a datetime as a string), and an unserializable value fails in the caller.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["to_json_form", "args_to_json_form"]

_SCALARS = frozenset({str, int, float, bool, type(None)})
_encode = msgspec.json.Encoder().encode
_decode_any = msgspec.json.Decoder().decode
_decode_args = msgspec.json.Decoder(tuple[Any, ...]).decode
_decode_kwargs = msgspec.json.Decoder(dict[str, Any]).decode


def to_json_form(value: Any) -> Any:
    """``value`` as it reads back from JSON; raises TypeError when it has no JSON form."""
    if type(value) in _SCALARS:
        return value
    try:
        return _decode_any(_encode(value))
    except (msgspec.EncodeError, TypeError) as exc:
        raise TypeError(str(exc)) from None


def args_to_json_form(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    try:
        if args and not all(type(a) in _SCALARS for a in args):
            args = _decode_args(_encode(args))
        if kwargs:
            kwargs = _decode_kwargs(_encode(kwargs))
    except (msgspec.EncodeError, TypeError) as exc:
        raise TypeError(str(exc)) from None
    return args, kwargs
