"""Settings dataclasses from JSON: unknown keys and wrong types are refused in one line naming the key, the
value and what is allowed (``ablations.train --config``, the presets' overrides)."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path

from probe.errors import BadInput


def _type_name(tp) -> str:
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        (inner,) = typing.get_args(tp) or (typing.Any,)
        return f"a list of {_type_name(inner)}"
    if origin is dict:
        return "an object"
    if dataclasses.is_dataclass(tp):
        return f"an object with {', '.join(f.name for f in dataclasses.fields(tp))}"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false", Path: "a path"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _fits(value, tp) -> bool:
    if tp is typing.Any:
        return True
    if tp is type(None):
        return value is None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in typing.get_args(tp))
    if origin is list:
        (inner,) = typing.get_args(tp) or (typing.Any,)
        return isinstance(value, list) and all(_fits(v, inner) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if dataclasses.is_dataclass(tp):
        return isinstance(value, (dict, tp))
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp in (str, Path):
        return isinstance(value, (str, Path))
    return isinstance(value, tp) if isinstance(tp, type) else True


def check_fields(cls, data: dict, where: str) -> None:
    """Refuse, in one line, a key of ``data`` that ``cls`` (a dataclass) has no field for, or a value of
    the wrong type (nested dataclasses in lists are checked too)."""
    if not isinstance(data, dict):
        raise BadInput(f"{where}: expected a JSON object of {cls.__name__} fields, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    for key, value in data.items():
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise BadInput(f"{where}: unknown key {key!r}{hint}; allowed: {', '.join(names)}")
        tp = hints[key]
        if not _fits(value, tp):
            raise BadInput(f"{where}: {key} = {value!r} is not {_type_name(tp)}")
        inner = typing.get_args(tp)[0] if typing.get_origin(tp) is list and typing.get_args(tp) else None
        if inner is not None and dataclasses.is_dataclass(inner):
            for i, item in enumerate(value):
                if isinstance(item, dict):
                    check_fields(inner, item, f"{where}: {key}[{i}]")


def from_fields(cls, data: dict, where: str, base=None):
    """``cls(**(asdict(base) | data))`` after :func:`check_fields` (``base``: the defaults to override)."""
    check_fields(cls, data, where)
    fields = dataclasses.asdict(base) if base is not None else {}
    return cls(**(fields | data))
