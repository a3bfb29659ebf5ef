"""Reference labels for the tokens scored, so `infer` can report a token accuracy against them.

`infer.reference` names a function `module:function` that maps one token piece (as the tokenizer
spells it) to its expected label name, and depends on nothing else (its answers are cached); the demo's is `stages.demo.rules:rule_label`. Scoring code
never imports it by name: it reaches it only through the param.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable

from stages.core.errors import UserError

ReferenceLabel = Callable[[str], str]
PIECES_CACHED = 1 << 18


@functools.cache
def load_reference(spec: str) -> ReferenceLabel | None:
    """The function `spec` names (`module:function`), or None for `none`."""
    if spec == "none":
        return None
    module_name, _, name = spec.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as error:
        raise UserError(
            f"infer.reference = {spec!r} cannot be loaded ({error}); name an importable module:function, or none"
        ) from None
    if not callable(function):
        raise UserError(f"infer.reference = {spec!r} is not a function")
    return functools.lru_cache(maxsize=PIECES_CACHED)(function)  # a function of the piece alone; vocabularies repeat
