"""The params a stage declares, and only those: every other key is hidden from it.

Each stage module lists the param keys it reads (`PARAMS`), the same list as its `params:` in dvc.yaml
(`tests/test_params_deps.py` checks the two agree). A stage loads its params through `load_declared`, which
replaces every undeclared key by an `Undeclared` stand-in: any use of one raises `UndeclaredParamError` (or,
where a C extension refuses it, a TypeError naming the key), a bug with its traceback, because DVC would not
rerun the stage when that key changes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any, NoReturn

from stages.core.params import Params, load_params

REFUSED_OPERATIONS = (
    "__getattr__", "__bool__", "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "__hash__", "__iter__",
    "__len__", "__contains__", "__getitem__", "__str__", "__format__", "__int__", "__float__", "__index__",
    "__fspath__", "__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__", "__neg__",
)  # fmt: skip


class UndeclaredParamError(RuntimeError):
    """A stage used a param it does not declare (a bug: DVC would not rerun the stage when it changes)."""


class Undeclared:
    """Stands for a param the running stage did not declare; using it in any way raises `UndeclaredParamError`."""

    def __init__(self, key: str) -> None:
        object.__setattr__(self, "key", key)

    def __repr__(self) -> str:  # what a C extension's TypeError shows, where it refuses the value without using it
        return f"<{self.key}: a param the stage does not declare>"

    def refuse(self, *_: object, **__: object) -> NoReturn:
        raise UndeclaredParamError(
            f"{object.__getattribute__(self, 'key')} is read by a stage that does not declare it: add it to the "
            "stage's PARAMS and to its params in dvc.yaml (else DVC does not rerun the stage when it changes)"
        )


for _operation in REFUSED_OPERATIONS:
    setattr(Undeclared, _operation, Undeclared.refuse)


def load_declared(declared: Iterable[str]) -> Params:
    """params.yaml, parsed and validated as a whole, with every key outside `declared` hidden."""
    return declared_view(load_params(), tuple(declared))


def declared_view(params: Params, declared: tuple[str, ...]) -> Params:
    """`params` with the keys outside `declared` (sections such as `runtime`, or keys such as `infer.input`)
    replaced by `Undeclared` stand-ins."""
    sections = {field.name: field for field in dataclasses.fields(params)}
    for key in declared:
        section, _, name = key.partition(".")
        if section not in sections or (
            name and name not in {f.name for f in dataclasses.fields(getattr(params, section))}
        ):
            raise UndeclaredParamError(f"a stage declares {key}, which params.yaml does not have")
    view = {}
    for section in sections:
        value = getattr(params, section)
        if section in declared:
            view[section] = value
            continue
        view[section] = rebuilt(
            type(value),
            {
                field.name: getattr(value, field.name)
                if f"{section}.{field.name}" in declared
                else Undeclared(f"{section}.{field.name}")
                for field in dataclasses.fields(value)
            },
        )
    return rebuilt(Params, view)


def rebuilt(cls: type, values: dict[str, Any]) -> Any:
    """A frozen dataclass instance with `values`, skipping `__post_init__`: its checks ran when params.yaml was read."""
    instance = object.__new__(cls)
    for name, value in values.items():
        object.__setattr__(instance, name, value)
    return instance
