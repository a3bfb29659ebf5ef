"""Prose that cannot drift: every message the troubleshooting page quotes is one the code raises, the page covers
every module that raises a user error or a failed check, and params.yaml's comments are the params' own docs."""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import REPO
from tools.generate.params_doc import commented_params

PAGE = REPO / "docs" / "troubleshooting.md"
ERRORS = ("UserError", "CheckFailed", "AnnotationError")  # what a user sees as `error:` or `check failed:` lines
WILDCARD = "\x00"


def quoted_messages(page: Path) -> list[str]:
    """The messages in the first column of the page's table (each in backticks; `...` stands for any text)."""
    messages = []
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("| `"):
            first_cell = line.split(" | ")[0]
            messages += re.findall(r"`([^`]+)`", first_cell)
    return messages


def template(node: ast.AST) -> str | None:
    """A string expression as text with each formatted value a wildcard; None if it is not a string."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return re.sub(r"%[sdr]", WILDCARD, node.value)  # a logging call's placeholders
    if isinstance(node, ast.JoinedStr):
        return "".join(part.value if isinstance(part, ast.Constant) else WILDCARD for part in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = template(node.left), template(node.right)
        return None if left is None and right is None else (left or WILDCARD) + (right or WILDCARD)
    return None


def is_call_of(node: ast.AST, names: tuple[str, ...]) -> bool:
    callee = getattr(node, "func", None)
    return (
        isinstance(node, ast.Call)
        and bool(node.args)
        and (getattr(callee, "id", None) or getattr(callee, "attr", None)) in names
    )


def message_expressions(tree: ast.AST, warnings: bool) -> Iterator[ast.expr]:
    """The messages a module builds for the user: an error's first argument and what a `..._message` function
    returns, and with `warnings` a logged warning's."""
    for node in ast.walk(tree):
        if is_call_of(node, ERRORS + (("warning",) if warnings else ())):
            yield node.args[0]
        elif isinstance(node, ast.FunctionDef) and node.name.endswith("_message"):
            yield from (inner.value for inner in ast.walk(node) if isinstance(inner, ast.Return) and inner.value)


@functools.cache
def raised_messages(warnings: bool = False) -> dict[str, list[str]]:
    """Per module of `stages/`, the message templates of the errors it raises (UserError, CheckFailed, ...) and with
    `warnings` the warnings it logs."""
    found: dict[str, list[str]] = {}
    for path in sorted((REPO / "stages").rglob("*.py")):
        for expression in message_expressions(ast.parse(path.read_text(encoding="utf-8")), warnings):
            if (text := template(expression)) is not None:
                found.setdefault(str(path.relative_to(REPO)), []).append(text)
    return found


def matches(message: str, code: str) -> bool:
    """Whether some text fits both the page's message (`...` any text) and the code's template (a formatted value any
    text): the two patterns intersect. The page quotes a message from its start (a quote that skips the start opens
    with `...`) and may stop before its end."""
    left = message.replace("...", WILDCARD) + WILDCARD
    right = code + WILDCARD
    after = [True] * (len(right) + 1)  # row i + 1 of fits(i, j): the rest of left[i + 1:] fits right[j:]
    for j in range(len(right) - 1, -1, -1):
        after[j] = after[j + 1] and right[j] == WILDCARD
    for i in range(len(left) - 1, -1, -1):
        row = [False] * (len(right) + 1)
        row[len(right)] = after[len(right)] and left[i] == WILDCARD
        for j in range(len(right) - 1, -1, -1):
            if left[i] == WILDCARD:
                row[j] = after[j] or row[j + 1]
            elif right[j] == WILDCARD:
                row[j] = row[j + 1] or after[j]
            else:
                row[j] = left[i] == right[j] and after[j + 1]
        after = row
    return after[0]


def words_of(text: str) -> set[str]:
    return set(re.findall(r"[a-z]{5,}", re.sub(r"'[^']*'", "", text)))


def modules_raising(message: str, warnings: bool = False) -> list[str]:
    """The modules whose error templates (and with `warnings` warning templates) the message fits."""
    wanted = words_of(message)
    return sorted({
        module
        for module, templates in raised_messages(warnings).items()
        for code in templates
        if len(wanted & words_of(code)) * 2 >= len(wanted) and matches(message, code)
    })  # fmt: skip


def test_every_message_the_page_quotes_is_raised_by_the_code():
    messages = quoted_messages(PAGE)
    assert len(messages) > 30
    unknown = [message for message in messages if not modules_raising(message, warnings=True)]
    assert not unknown, f"the page quotes messages no code raises: {unknown}"


def test_the_page_covers_every_module_that_raises_an_error_the_user_reads():
    covered = {module for message in quoted_messages(PAGE) for module in modules_raising(message)}
    missing = sorted(set(raised_messages()) - covered - {"stages/core/errors.py"})
    assert not missing, f"docs/troubleshooting.md quotes no message of {missing}"


def test_params_yaml_comments_are_the_params_docs():
    assert (REPO / "params.yaml").read_text(encoding="utf-8") == commented_params(), (
        "params.yaml's comments are stale: python -m tools.generate.params_doc rewrites them"
    )
