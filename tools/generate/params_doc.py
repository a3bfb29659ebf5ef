"""docs/params.md and params.yaml's comments, generated from `stages/core/params.py`.

    python -m tools.generate.params_doc     # rewrite docs/params.md and the comments of params.yaml

docs/params.md lists every key, the values it takes and what it means; params.yaml keeps its values and gets each
key's meaning as the comment above it. Each meaning is the string under its field in params.py; the values come from
its type and range. tests/core/test_params_doc.py and tests/test_docs.py check both are current.
"""

from __future__ import annotations

import ast
import dataclasses
import itertools
import sys
import textwrap
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from stages.core import params
from stages.core.params import Params
from tools.cli import NoSettings, parse

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "params.md"
PARAMS_YAML = REPO / "params.yaml"
INTRO = """# Params

Every key of `params.yaml`, one section per stage (`runtime` is shared by `parity` and `infer`), validated on
load: unknown keys fail with a did-you-mean, choices are listed, numbers are range-checked, and an error names
the key (`infer.batch_size = 0 is out of range; it must be >= 1`). A key with a default may be left out: a
params file written for an earlier version runs, and each stage logs one line naming the keys it lacks and the
defaults they take; the keys without a default (*required*) must be set. `dvc repro` itself also needs the keys
that `dvc.yaml` interpolates (`${...}`) or names one by one in a stage's `params` (e.g. `parity.int8`): DVC stops
with `Parameters '...' are missing from 'params.yaml'` until they are written. A stage reads only the keys it
declares, which are its `params` in `dvc.yaml`. This page is generated from `stages/core/params.py` by
`python -m tools.generate.params_doc`.
"""
HEADER = (
    "Every stage reads its settings from here, and dvc.yaml declares which keys each stage depends on. The comments"
    " are generated from stages/core/params.py (python -m tools.generate.params_doc); docs/params.md lists the values"
    " each key takes."
)
COMMENT_WIDTH = 118


def section_modules() -> list[Path]:
    """params.py and the modules it takes section classes from."""
    modules = {sys.modules[kind.__module__].__file__ for kind in typing.get_type_hints(Params).values()}
    return sorted({Path(params.__file__), *map(Path, modules)})


def field_docs() -> dict[str, dict[str, str]]:
    """Each dataclass's field -> the string literal under it in params.py (or the module holding its section)."""
    nodes = [node for module in section_modules() for node in ast.parse(module.read_text(encoding="utf-8")).body]
    found: dict[str, dict[str, str]] = {}
    for node in nodes:
        if isinstance(node, ast.ClassDef):
            body = node.body
            found[node.name] = {
                field.target.id: " ".join(doc.value.value.split())
                for field, doc in itertools.pairwise(body)
                if isinstance(field, ast.AnnAssign)
                and isinstance(doc, ast.Expr)
                and isinstance(doc.value, ast.Constant)
            }
    return found


def describe(kind: Any, spec: dataclasses.Field) -> str:
    """The values a field takes, in words."""
    origin, arguments = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        inner = next(argument for argument in arguments if argument is not type(None))
        return f"{describe(inner, spec)}, or null"
    if origin is Literal:
        return " or ".join(f"`{argument}`" for argument in arguments)
    if origin is tuple:
        return f"list of {describe(arguments[0], spec)}"
    if origin is dict:
        return "mapping"
    names = {bool: "true or false", int: "integer", float: "number", str: "text"}
    low, high = spec.metadata.get("min"), spec.metadata.get("max")
    bounds = "" if low is None else f" >= {low:g}" if high is None else f" {low:g} to {high:g}"
    return names.get(kind, kind.__name__) + bounds


def default_of(spec: dataclasses.Field) -> str:
    """A field's default as params.yaml writes it, or *required*."""
    if spec.default is dataclasses.MISSING:
        return "*required*"
    value = dataclasses.asdict(spec.default) if dataclasses.is_dataclass(spec.default) else spec.default
    return f"`{yaml_value(list(value) if isinstance(value, tuple) else value)}`"


def section_table(prefix: str, cls: type, docs: dict[str, dict[str, str]]) -> list[str]:
    rows = ["| key | values | default | meaning |", "|---|---|---|---|"]
    hints = typing.get_type_hints(cls)
    for spec in dataclasses.fields(cls):
        key, kind = f"{prefix}.{spec.name}", hints[spec.name]
        values = (
            ", ".join(f"`{inner.name}`" for inner in dataclasses.fields(kind))
            if dataclasses.is_dataclass(kind)
            else describe(kind, spec)
        )
        rows.append(f"| `{key}` | {values} | {default_of(spec)} | {docs[cls.__name__][spec.name]} |")
    return rows


def render() -> str:
    docs = field_docs()
    lines = [INTRO]
    for section in dataclasses.fields(Params):
        cls = typing.get_type_hints(Params)[section.name]
        lines += [f"## `{section.name}`", "", cls.__doc__.strip(), "", *section_table(section.name, cls, docs), ""]
    return "\n".join(lines)


def comment(text: str, indent: str) -> list[str]:
    return [
        f"{indent}# {line}" for line in textwrap.wrap(text, COMMENT_WIDTH - len(indent) - 2, break_on_hyphens=False)
    ]


def yaml_value(value: Any) -> str:
    """One value as params.yaml writes it: scalars plain, lists and maps on one line."""
    return (
        yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=1 << 16)
        .removesuffix("\n...\n")
        .strip()
    )


def commented_params(path: Path = PARAMS_YAML) -> str:
    """params.yaml with its values and, above each section and key, its meaning from params.py."""
    values = yaml.safe_load(path.read_text(encoding="utf-8"))
    docs, hints = field_docs(), typing.get_type_hints(Params)
    lines = comment(HEADER, "")
    for section in dataclasses.fields(Params):
        cls = hints[section.name]
        lines += ["", *comment(" ".join(cls.__doc__.split()), ""), f"{section.name}:"]
        for spec in dataclasses.fields(cls):
            value = values[section.name][spec.name]
            lines += [*comment(docs[cls.__name__][spec.name], "  "), f"  {spec.name}: {yaml_value(value)}"]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parse(NoSettings, argv, __doc__)
    PAGE.write_text(render(), encoding="utf-8")
    PARAMS_YAML.write_text(commented_params(), encoding="utf-8")
    print(f"wrote {PAGE} and the comments of {PARAMS_YAML}")


if __name__ == "__main__":
    main()
