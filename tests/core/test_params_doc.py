"""docs/params.md is what `python -m tools.generate.params_doc` generates from params.py, and every key has a meaning."""

from __future__ import annotations

import dataclasses
import typing

from stages.core.params import Params
from tools.generate.params_doc import PAGE, field_docs, render


def test_every_key_has_its_meaning_written_under_it():
    docs = field_docs()
    for section in dataclasses.fields(Params):
        cls = typing.get_type_hints(Params)[section.name]
        missing = [field.name for field in dataclasses.fields(cls) if not docs.get(cls.__name__, {}).get(field.name)]
        assert not missing, f"{cls.__name__} fields without a meaning under them in params.py: {missing}"


def test_the_params_page_is_current():
    assert PAGE.read_text(encoding="utf-8") == render(), "regenerate it: python -m tools.generate.params_doc"
