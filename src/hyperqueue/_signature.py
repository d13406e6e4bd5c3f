"""Checking a job's arguments against its task's signature, with msgspec.

At registration a task's parameters become a msgspec Struct type. At enqueue the
arguments are turned into their JSON-like form (what every backend stores) and converted
to that Struct: a wrong type, a missing or an unknown argument fails then, in the
producer, with a message naming the argument, instead of later inside a worker.
At run time the stored form is converted back to the annotated types (only when some
parameter needs it, such as a datetime or a Struct).
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec

from ._errors import ArgumentError
from ._json import args_to_json_form

__all__ = ["Signature"]

_PLAIN = {int, float, str, bool, type(None), Any}
_FIELD_RE = re.compile(r"`\$\.([A-Za-z_][A-Za-z0-9_]*)")
_MISSING_RE = re.compile(r"missing required field `([A-Za-z_][A-Za-z0-9_]*)`")


def _is_plain(tp: Any) -> bool:
    """Whether values of ``tp`` come back from JSON as they went in."""
    if tp in _PLAIN:
        return True
    origin = typing.get_origin(tp)
    if origin in (list, dict, typing.Union) or str(origin) == "<class 'types.UnionType'>":
        return all(_is_plain(arg) for arg in typing.get_args(tp) if arg is not Ellipsis)
    return False


_SCALAR_TYPES: dict[Any, frozenset[type]] = {
    int: frozenset({int}),
    float: frozenset({float, int}),
    str: frozenset({str}),
    bool: frozenset({bool}),
    Any: frozenset({int, float, str, bool, type(None)}),
}
"""The value types msgspec accepts, as they are, for a parameter of each plain scalar type
(it refuses a bool for an int, and takes an int for a float)."""


def _fast_check(
    fields: list[tuple[str, Any, Any]],
    positional: list[str],
    var_positional: Any,
    var_keyword: Any,
) -> tuple[frozenset[type], ...] | None:
    """The accepted value types per positional parameter when a call can be checked by
    type alone: every parameter positional, of a plain scalar type, none variadic."""
    if var_positional is not None or var_keyword is not None or len(fields) != len(positional):
        return None
    accepted = [_SCALAR_TYPES.get(tp) for _, tp, _ in fields]
    if any(types is None for types in accepted):
        return None
    return tuple(types for types in accepted if types is not None)


class Signature:
    """The calling convention of one task function, prepared once."""

    __slots__ = (
        "_fast",
        "_fast_most",
        "_fast_one",
        "_names",
        "_optional",
        "_positional",
        "_required",
        "_struct",
        "_types",
        "_var_keyword",
        "_var_keyword_type",
        "_var_positional",
        "_var_positional_type",
        "convert_at_run",
        "name",
    )

    def __init__(self, name: str, fn: Callable[..., Any]) -> None:
        self.name = name
        sig = inspect.signature(fn)
        try:
            hints = typing.get_type_hints(fn)
        except Exception:  # unresolvable forward refs: fall back to no checking of those
            hints = {}
        fields: list[tuple[str, Any, Any]] = []
        positional: list[str] = []
        self._var_positional: Any = None
        self._var_keyword: Any = None
        for param in sig.parameters.values():
            tp = hints.get(param.name, Any)
            if param.kind is param.VAR_POSITIONAL:
                self._var_positional = tp
                continue
            if param.kind is param.VAR_KEYWORD:
                self._var_keyword = tp
                continue
            if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
                positional.append(param.name)
            if param.default is param.empty:
                fields.append((param.name, tp, msgspec.NODEFAULT))
            else:
                fields.append((param.name, tp, param.default))
        # msgspec wants required fields first; keyword-only structs accept any order
        self._struct = msgspec.defstruct(
            f"{name}_args",
            [(n, t) if d is msgspec.NODEFAULT else (n, t, d) for n, t, d in fields],
            kw_only=True,
        )
        self._names = tuple(n for n, _, _ in fields)
        self._types = {n: t for n, t, _ in fields}
        self._optional = frozenset(n for n, _, d in fields if d is not msgspec.NODEFAULT)
        self._required = sum(1 for _, _, d in fields if d is msgspec.NODEFAULT)
        self._positional = tuple(positional)
        self._var_positional_type: Any = tuple[self._var_positional, ...]  # type: ignore[name-defined]
        self._var_keyword_type: Any = dict[str, self._var_keyword]  # type: ignore[name-defined]
        types = [t for _, t, _ in fields]
        types += [t for t in (self._var_positional, self._var_keyword) if t is not None]
        self.convert_at_run = not all(_is_plain(t) for t in types)
        fast = _fast_check(fields, positional, self._var_positional, self._var_keyword)
        self._fast = fast or ()
        # the fast path takes from _required to _fast_most arguments (none: -1)
        self._fast_most = -1 if fast is None else len(fast)
        # the types of the fast path for a call with one argument (the usual task
        # call), checked without a loop; None when one argument cannot take it
        self._fast_one = self._fast[0] if self._required <= 1 <= self._fast_most else None

    def check(
        self, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Validate a call; return the arguments in the form storage keeps (JSON-like)."""
        if not kwargs and len(args) == 1 and type(args) is tuple:
            one = self._fast_one  # the usual task call: one argument, checked at once
            if one is not None and type(args[0]) in one:
                return args, {}
        if not kwargs and self._required <= len(args) <= self._fast_most:
            # every parameter a plain scalar, passed by position: a type check per value
            # accepts exactly what msgspec would, anything else takes the full path
            # (an index, not zip() or enumerate(): building either costs more here)
            fast = self._fast
            i = 0
            for value in args:
                if type(value) not in fast[i]:
                    break
                i += 1  # noqa: SIM113  (enumerate() costs more here)
            else:
                return args if type(args) is tuple else tuple(args), {}
        if not args and not kwargs and not self._required:
            return (), {}
        try:
            args, kwargs = args_to_json_form(tuple(args), dict(kwargs) if kwargs else {})
        except TypeError as exc:
            raise ArgumentError(self.name, f"arguments must be serializable: {exc}") from None
        self._bind(args, kwargs)
        return args, kwargs

    def parameter_at(self, index: int) -> str | None:
        """The name of the ``index``-th positional parameter (``None`` past them)."""
        return self._positional[index] if index < len(self._positional) else None

    def check_partial(
        self, args: Sequence[Any], kwargs: Mapping[str, Any], deferred: frozenset[str]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Validate a call whose ``deferred`` parameters are filled in later (a workflow
        step's inputs, checked when the step starts); returns the stored form.

        Every given argument is checked against its parameter's type, and every
        required parameter must be given or deferred.
        """
        try:
            args, kwargs = args_to_json_form(tuple(args), dict(kwargs) if kwargs else {})
        except TypeError as exc:
            raise ArgumentError(self.name, f"arguments must be serializable: {exc}") from None
        positional = self._positional
        if len(args) > len(positional) and self._var_positional is None:
            raise ArgumentError(
                self.name,
                f"takes {len(positional)} positional arguments but {len(args)} were given",
            )
        given = dict(zip(positional, args, strict=False))
        for key, value in kwargs.items():
            if key in given:
                raise ArgumentError(self.name, "got multiple values", argument=key)
            if key not in self._names and self._var_keyword is None:
                raise ArgumentError(self.name, "unexpected keyword argument", argument=key)
            given[key] = value
        for name in deferred:
            if name in given:
                raise ArgumentError(self.name, "got multiple values", argument=name)
            if name not in self._names:
                raise ArgumentError(self.name, "unexpected keyword argument", argument=name)
        for name, value in given.items():
            tp = self._types.get(name, self._var_keyword)
            try:
                msgspec.convert(value, tp)
            except msgspec.ValidationError as exc:
                raise ArgumentError(self.name, str(exc), argument=name) from None
        missing = [
            name
            for name in self._names
            if name not in self._optional and name not in given and name not in deferred
        ]
        if missing:
            raise ArgumentError(
                self.name, f"missing required argument `{missing[0]}`", argument=missing[0]
            )
        return args, kwargs

    def _bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        positional = self._positional
        if len(args) > len(positional) and self._var_positional is None:
            raise ArgumentError(
                self.name,
                f"takes {len(positional)} positional arguments but {len(args)} were given",
            )
        data = dict(zip(positional, args, strict=False))
        extra_args = args[len(positional) :]
        extra_kwargs: dict[str, Any] = {}
        for key, value in kwargs.items():
            if key in data:
                raise ArgumentError(self.name, "got multiple values", argument=key)
            if key in self._names:
                data[key] = value
            elif self._var_keyword is not None:
                extra_kwargs[key] = value
            else:
                raise ArgumentError(self.name, "unexpected keyword argument", argument=key)
        try:
            bound = msgspec.convert(data, self._struct)
            if extra_args:
                msgspec.convert(extra_args, self._var_positional_type)
            if extra_kwargs:
                msgspec.convert(extra_kwargs, self._var_keyword_type)
        except msgspec.ValidationError as exc:
            message = str(exc)
            found = _FIELD_RE.search(message) or _MISSING_RE.search(message)
            raise ArgumentError(
                self.name, message, argument=found.group(1) if found else None
            ) from None
        return bound

    def call_arguments(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Turn stored arguments back into what the function expects."""
        if not self.convert_at_run:
            return args, kwargs
        bound = self._bind(args, kwargs)
        positional = self._positional
        call_args = tuple(getattr(bound, name) for name in positional)
        call_kwargs = {name: getattr(bound, name) for name in self._names if name not in positional}
        if len(args) > len(positional):
            call_args += msgspec.convert(args[len(positional) :], self._var_positional_type)
        for key, value in kwargs.items():
            if key not in call_kwargs and key not in positional:
                call_kwargs[key] = msgspec.convert(value, self._var_keyword)
        return call_args, call_kwargs
