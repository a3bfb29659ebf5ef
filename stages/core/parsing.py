"""Parsing a params mapping into typed, frozen dataclasses: keys checked, values typed, ranges enforced.

Unknown keys fail with a did-you-mean suggestion; enum values list their choices; numbers are range-checked
against each field's `metadata` (`value_range`). Errors name the key by its full dotted path.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import types
import typing
from typing import Any, Literal

from stages.core.errors import UserError

log = logging.getLogger(__name__)

# Renamed keys, accepted for one release with a warning: (section, old key) -> new key, or None if dropped.
RENAMED_KEYS: dict[tuple[str, str], str | None] = {
    ("infer", "window_rows"): "block_rows",
    ("infer", "ray_batch_rows"): None,  # the ray engine scores blocks of infer.block_rows rows, as the local one
    ("infer", "reference"): None,  # token accuracy and entity F1 come from gold annotations (annotations)
}


def value_range(low: float | None = None, high: float | None = None) -> dict[str, float | None]:
    """A field's allowed range (inclusive), as dataclass field metadata."""
    return {"min": low, "max": high}


def parse_section(cls: type, raw: Any, prefix: str) -> Any:
    """Build dataclass `cls` from a mapping, checking keys, types and ranges."""
    where = prefix.rstrip(".") or "params.yaml"
    if not isinstance(raw, dict):
        raise UserError(f"{where} must be a mapping of keys to values, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    raw = _renamed(raw, prefix)
    for key in raw:
        if key not in fields:
            hint = difflib.get_close_matches(str(key), list(fields), n=1)
            suggestion = f"; did you mean {prefix}{hint[0]}?" if hint else f"; known keys: {', '.join(fields)}"
            raise UserError(f"unknown key {prefix}{key}{suggestion}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, spec in fields.items():
        key = prefix + name
        if name not in raw:
            raise UserError(f"missing key {key} in params.yaml")
        values[name] = _parse_value(hints[name], raw[name], key)
        _check_range(spec, values[name], key)
    return cls(**values)


def _renamed(raw: dict, prefix: str) -> dict:
    """`raw` with deprecated keys of this section renamed (or dropped), each with a warning naming the new key."""
    section = prefix.rstrip(".")
    renamed = dict(raw)
    for (where, old), new in RENAMED_KEYS.items():
        if where != section or old not in raw:
            continue
        value = renamed.pop(old)
        if new is None:
            log.warning("%s%s is no longer used; remove it from params.yaml", prefix, old)
        elif new in raw:
            raise UserError(f"params.yaml sets both {prefix}{old} and {prefix}{new}; keep only {prefix}{new}")
        else:
            log.warning("%s%s is renamed %s%s; the old name works for one more release", prefix, old, prefix, new)
            renamed[new] = value
    return renamed


def _parse_value(kind: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(kind)
    arguments = typing.get_args(kind)
    if dataclasses.is_dataclass(kind):
        return parse_section(kind, value, prefix=key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in arguments:
            return None
        (inner,) = [argument for argument in arguments if argument is not type(None)]
        return _parse_value(inner, value, key)
    if origin is Literal:
        if value not in arguments:
            choices = ", ".join(str(argument) for argument in arguments)
            raise UserError(f"{key} = {value!r} is not allowed; choose one of: {choices}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise UserError(f"{key} must be a list, got {value!r}")
        return tuple(_parse_value(arguments[0], item, f"{key}[{index}]") for index, item in enumerate(value))
    if kind is bool:
        if not isinstance(value, bool):
            raise UserError(f"{key} must be true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{key} must be an integer, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UserError(f"{key} must be a number, got {value!r}")
        return float(value)
    if kind is str:
        if not isinstance(value, str) or not value:
            raise UserError(f"{key} must be a non-empty string, got {value!r}")
        return value
    raise TypeError(f"unsupported params type {kind!r} for {key}")


def _check_range(spec: dataclasses.Field, value: Any, key: str) -> None:
    low, high = spec.metadata.get("min"), spec.metadata.get("max")
    for item in value if isinstance(value, tuple) else (value,):
        if (low is not None and item < low) or (high is not None and item > high):
            bounds = f">= {low}" if high is None else f"between {low} and {high}"
            raise UserError(f"{key} = {value!r} is out of range; it must be {bounds}")
