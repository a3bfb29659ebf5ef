"""Parsing a params mapping into typed, frozen dataclasses: keys checked, values typed, ranges enforced.

Unknown keys fail with a did-you-mean suggestion; enum values list their choices; numbers are range-checked
against each field's `metadata` (`value_range`). Errors name the key by its full dotted path. A key the mapping
lacks takes its field's declared default (`setting`), and its name joins the list the caller logs; a key without
a default is required.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

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


def setting(default: Any, low: float | None = None, high: float | None = None) -> Any:
    """A field with its default and allowed range (inclusive)."""
    return dataclasses.field(default=default, metadata=value_range(low, high))


def parse_file(cls: type, path: Path) -> Any:
    """The params file `path` as dataclass `cls`; one log line names the keys it lacks, which take their defaults."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise UserError(f"{path} is not valid YAML: {error}") from None
    defaulted: list[str] = []
    parsed = parse_section(cls, {} if raw is None else raw, "", defaulted)
    if defaulted:
        values = []
        for key in defaulted:
            value = parsed
            for name in key.split("."):
                value = getattr(value, name)
            values.append(f"{key} = {value!r}")
        log.info(
            "%s lacks %d keys, which take their defaults (docs/params.md): %s", path, len(values), ", ".join(values)
        )
    return parsed


def parse_section(cls: type, raw: Any, prefix: str, defaulted: list[str] | None = None, defaults: Any = None) -> Any:
    """Build dataclass `cls` from a mapping, checking keys, types and ranges. A key the mapping lacks takes its
    field's default (or `defaults`' value, for a section whose default is an instance) and is added to
    `defaulted`; a key without one is a `UserError`."""
    defaulted = [] if defaulted is None else defaulted
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
        default = getattr(defaults, name) if defaults is not None else spec.default
        if name in raw:
            values[name] = _parse_value(hints[name], raw[name], key, defaulted, default)
            _check_range(spec, values[name], key)
        elif default is not dataclasses.MISSING:
            values[name] = default
            defaulted.append(key)
        elif dataclasses.is_dataclass(hints[name]):  # a section the file lacks: its keys' defaults, if all have one
            values[name] = parse_section(hints[name], {}, key + ".", defaulted)
        else:
            raise UserError(f"missing key {key} in params.yaml; it has no default: set it (docs/params.md)")
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


def _parse_value(kind: Any, value: Any, key: str, defaulted: list[str], default: Any = None) -> Any:
    origin = typing.get_origin(kind)
    arguments = typing.get_args(kind)
    if dataclasses.is_dataclass(kind):
        return parse_section(kind, value, key + ".", defaulted, None if default is dataclasses.MISSING else default)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in arguments:
            return None
        (inner,) = [argument for argument in arguments if argument is not type(None)]
        return _parse_value(inner, value, key, defaulted)
    if origin is Literal:
        if value not in arguments:
            choices = ", ".join(str(argument) for argument in arguments)
            raise UserError(f"{key} = {value!r} is not allowed; choose one of: {choices}")
        return value
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(name, str) for name in value):
            raise UserError(f"{key} must be a mapping of names to values, got {value!r}")
        return dict(value)
    if origin is tuple:
        if not isinstance(value, list):
            raise UserError(f"{key} must be a list, got {value!r}")
        return tuple(_parse_value(arguments[0], item, f"{key}[{index}]", defaulted) for index, item in enumerate(value))
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
    for item in value if isinstance(value, tuple) else (value,) if value is not None else ():
        if (low is not None and item < low) or (high is not None and item > high):
            bounds = f">= {low}" if high is None else f"between {low} and {high}"
            raise UserError(f"{key} = {value!r} is out of range; it must be {bounds}")
