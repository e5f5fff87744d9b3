"""Dataclasses to and from JSON, checked against their type hints.

The manifest and the caches are read by other tools and by later versions of this one, so a value of the wrong
type, a missing field or an unknown one is reported with its place in the file (``model.num_classes``), never
passed on as a KeyError three modules later.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

R = TypeVar("R", bound="DataclassInstance")


class RecordError(ValueError):
    """A JSON value does not fit the record type; ``str(error)`` starts with where it is."""


def to_json(record: Any) -> Any:
    """A dataclass (nested in dataclasses, lists, tuples and dicts) as plain JSON values; optional fields that
    are unset (None, their default) are left out."""
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        return {f.name: to_json(value) for f in dataclasses.fields(record)
                if (value := getattr(record, f.name)) is not None or f.default is not None}
    if isinstance(record, (list, tuple)):
        return [to_json(v) for v in record]
    if isinstance(record, dict):
        return {k: to_json(v) for k, v in record.items()}
    return record


def from_json(cls: type[R], data: Any, where: str = "") -> R:
    """Build the dataclass ``cls`` from JSON values, checking every field against ``cls``'s type hints."""
    return _decode_record(cls, data, where)


def _decode(tp: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _decode_record(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _decode(option, value, where)
            except RecordError as exc:
                errors.append(str(exc))
        raise RecordError(errors[0] if len(errors) == 1 else f"{where or 'value'}: {value!r} fits none of {tp}")
    if origin is list:
        _expect(value, list, where)
        return [_decode(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        _expect(value, list, where)
        item_types = [args[0]] * len(value) if args[-1] is Ellipsis else list(args)
        if len(item_types) != len(value):
            raise RecordError(f"{where}: expected {len(item_types)} values, got {len(value)}")
        return tuple(_decode(t, v, f"{where}[{i}]") for i, (t, v) in enumerate(zip(item_types, value, strict=True)))
    if origin is dict:
        _expect(value, dict, where)
        return {k: _decode(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        _expect(value, (int, float), where)
        return float(value)
    _expect(value, tp, where)
    return value


def _decode_record(cls: type[R], value: Any, where: str) -> R:
    _expect(value, dict, where)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    prefix = f"{where}." if where else ""
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise RecordError(f"{prefix}{unknown[0]}: unknown field")
    missing = [name for name, f in fields.items() if name not in value and _required(f)]
    if missing:
        raise RecordError(f"{prefix}{missing[0]}: missing")
    return cls(**{name: _decode(hints[name], v, f"{prefix}{name}") for name, v in value.items()})


def _required(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _expect(value: Any, types_: type | tuple[type, ...], where: str) -> None:
    # bool is an int to isinstance; a JSON true where a number belongs is still a mistake.
    if not isinstance(value, types_) or (isinstance(value, bool) and bool not in _as_tuple(types_)):
        names = " or ".join(t.__name__ for t in _as_tuple(types_))
        raise RecordError(f"{where or 'value'}: expected {names}, got {type(value).__name__} {value!r}"[:300])


def _as_tuple(types_: type | tuple[type, ...]) -> tuple[type, ...]:
    return types_ if isinstance(types_, tuple) else (types_,)
