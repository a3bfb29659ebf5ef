"""The tools' command lines: a frozen dataclass of settings is both the parser and what a tool's functions take.

Each field is a `--flag` (underscores as dashes) whose help is the field's `help` metadata; `Literal` fields take
their values as choices, `bool` fields are `--flag/--no-flag`, fields without a default are required. The
description is the tool's docstring, which says what it prints.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

Settings = TypeVar("Settings")


@dataclass(frozen=True)
class NoSettings:
    """A tool that takes no settings: its command line is `--help` alone."""


def option(default: Any = dataclasses.MISSING, help: str = "", factory: Callable[[], Any] | None = None) -> Any:
    """A settings field with its help (and a default, or a factory computing it when the tool starts)."""
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def parse(cls: type[Settings], argv: Sequence[str] | None, description: str | None) -> Settings:
    """`cls` built from the command line `argv` (None: `sys.argv[1:]`)."""
    parser = argparse.ArgumentParser(
        description=(description or "").strip(), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        add_option(parser, field, hints[field.name])
    values = vars(parser.parse_args(argv))
    settings = {name: tuple(value) if isinstance(value, list) else value for name, value in values.items()}
    return cls(**{name: value for name, value in settings.items() if value is not None})  # None: the field's default


def add_option(parser: argparse.ArgumentParser, field: dataclasses.Field, kind: Any) -> None:
    """One field as a `--flag`: typed, with its choices, default and help."""
    flag = "--" + field.name.replace("_", "-")
    help_text = field.metadata.get("help", "")
    if field.default not in (dataclasses.MISSING, None):
        help_text += f" (default: {field.default})"
    options: dict[str, Any] = {"help": help_text, "dest": field.name, "default": None}
    inner = optional_inner(kind)
    if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
        options["required"] = True
    if inner is bool:
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, **options)
        return
    if typing.get_origin(inner) is Literal:
        options["choices"] = typing.get_args(inner)
    elif typing.get_origin(inner) is tuple:
        item = typing.get_args(inner)[0]
        options["nargs"] = "+"
        if typing.get_origin(item) is Literal:  # --precisions int8 fp32: each one of the choices
            options["choices"] = typing.get_args(item)
        else:
            options["type"] = item
    else:
        options["type"] = inner if inner in (int, float, Path) else str
    parser.add_argument(flag, **options)


def optional_inner(kind: Any) -> Any:
    """`X` for `X | None`, else `kind`."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        arguments = [argument for argument in typing.get_args(kind) if argument is not type(None)]
        if len(arguments) == 1:
            return arguments[0]
    return kind
