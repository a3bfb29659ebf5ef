"""docs/params.md, generated from `stages/core/params.py`: every key, the values it takes, what it means.

    python -m tests.params_doc     # rewrite docs/params.md; tests/core/test_params_doc.py checks it is current

Each key's meaning is the string under its field in params.py; the values come from its type and range.
"""

from __future__ import annotations

import ast
import dataclasses
import itertools
import types
import typing
from pathlib import Path
from typing import Any, Literal

from stages.core import params
from stages.core.params import Params

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "params.md"
INTRO = """# Params

Every key of `params.yaml`, one section per stage (`runtime` is shared by `parity` and `infer`). Every key is
required and validated on load: unknown keys fail with a did-you-mean, choices are listed, numbers are
range-checked, and an error names the key (`infer.batch_size = 0 is out of range; it must be >= 1`). A stage
reads only the keys it declares, which are its `params` in `dvc.yaml`. This page is generated from
`stages/core/params.py` by `python -m tests.params_doc`.
"""


def field_docs() -> dict[str, dict[str, str]]:
    """Each dataclass's field -> the string literal under it in params.py."""
    tree = ast.parse(Path(params.__file__).read_text(encoding="utf-8"))
    found: dict[str, dict[str, str]] = {}
    for node in tree.body:
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
    names = {bool: "true or false", int: "integer", float: "number", str: "text"}
    low, high = spec.metadata.get("min"), spec.metadata.get("max")
    bounds = "" if low is None else f" >= {low:g}" if high is None else f" {low:g} to {high:g}"
    return names.get(kind, kind.__name__) + bounds


def section_table(prefix: str, cls: type, docs: dict[str, dict[str, str]]) -> list[str]:
    rows = ["| key | values | meaning |", "|---|---|---|"]
    hints = typing.get_type_hints(cls)
    for spec in dataclasses.fields(cls):
        key, kind = f"{prefix}.{spec.name}", hints[spec.name]
        if dataclasses.is_dataclass(kind):
            rows.append(f"| `{key}` | `atol`, `rtol`, `min_label_agreement` | {docs[cls.__name__][spec.name]} |")
            continue
        rows.append(f"| `{key}` | {describe(kind, spec)} | {docs[cls.__name__][spec.name]} |")
    return rows


def render() -> str:
    docs = field_docs()
    lines = [INTRO]
    for section in dataclasses.fields(Params):
        cls = typing.get_type_hints(Params)[section.name]
        lines += [f"## `{section.name}`", "", cls.__doc__.strip(), "", *section_table(section.name, cls, docs), ""]
    return "\n".join(lines)


def main() -> None:
    PAGE.write_text(render(), encoding="utf-8")
    print(f"wrote {PAGE}")


if __name__ == "__main__":
    main()
