"""The code's layout holds: every stage's code is in its DVC deps, arrows point down, nothing grows too big."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
STAGE_COMMAND = "python -m stages."
# What each library package may import (besides itself); stage modules are imported by nothing.
LAYERS = {
    "core": set(),
    "model": {"core"},
    "graph": {"core", "model"},
    "scoring": {"core", "graph"},
    "verify": {"core", "model", "graph", "scoring"},
    "bench": {"core", "model", "graph", "scoring"},
    "demo": {"core", "model", "scoring"},
}
MAX_FILE_LINES = 300
MAX_FUNCTION_LINES = 60


def module_file(name: str) -> Path | None:
    """The file of project module `name` (`stages.x.y`), or None if it is not one."""
    base = REPO / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def imports_of(path: Path) -> frozenset[Path]:
    """Project files `path` imports anywhere in it (function-level imports included), with their packages."""
    found: set[Path] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        for name in names:
            parts = name.split(".")
            for end in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
                if parts[0] == "stages" and (file := module_file(".".join(parts[:end]))) is not None:
                    found.add(file)
    found.discard(path)
    return frozenset(found)


def transitive_imports(path: Path) -> set[Path]:
    seen: set[Path] = set()
    pending = [path]
    while pending:
        for imported in imports_of(pending.pop()):
            if imported not in seen:
                seen.add(imported)
                pending.append(imported)
    return seen | {path}


def pipeline() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]


def docstring_only(path: Path) -> bool:
    """A file with no code (a package's docstring): changing it cannot change what a stage computes."""
    body = ast.parse(path.read_text(encoding="utf-8")).body
    return len(body) == 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)


def uncovered(stage: dict, files: set[Path]) -> list[str]:
    """Files with code in `files` that no `stages/...` dep of `stage` covers (as itself or a folder above it)."""
    deps = [REPO / dep for dep in stage["deps"] if dep.startswith("stages")]
    return sorted(
        str(file.relative_to(REPO))
        for file in files
        if not docstring_only(file) and not any(file == dep or dep in file.parents for dep in deps)
    )


@pytest.mark.parametrize("name", sorted(pipeline()))
def test_every_module_a_stage_imports_is_in_its_dvc_deps(name):
    stage = pipeline()[name]
    assert stage["cmd"].startswith(STAGE_COMMAND), stage["cmd"]
    module = stage["cmd"][len("python -m ") :].split()[0]
    files = transitive_imports(module_file(module))
    assert not uncovered(stage, files), f"stage {name} runs code its deps in dvc.yaml do not list"


def test_the_check_sees_a_missing_folder():
    stage = pipeline()["parity"]
    files = transitive_imports(module_file("stages.parity"))
    trimmed = {**stage, "deps": [dep for dep in stage["deps"] if dep != "stages/verify"]}
    assert uncovered(trimmed, files) == ["stages/verify/cases.py", "stages/verify/compare.py"]


def library_files() -> list[Path]:
    return sorted(path for path in (REPO / "stages").rglob("*.py") if path.parent != REPO / "stages")


def stage_modules() -> set[Path]:
    return {path for path in (REPO / "stages").glob("*.py") if path.name != "__init__.py"}


def test_stages_are_exactly_the_dvc_stages():
    names = {module_name(path).split(".")[-1] for path in stage_modules()}
    assert names == set(pipeline())


def test_arrows_point_down():
    problems = []
    for path in library_files():
        package = path.relative_to(REPO / "stages").parts[0]
        for imported in imports_of(path):
            if imported in stage_modules():
                problems.append(f"{module_name(path)} imports stage module {module_name(imported)}")
            elif imported != REPO / "stages/__init__.py":
                target = imported.relative_to(REPO / "stages").parts[0]
                if target != package and target not in LAYERS[package]:
                    problems.append(f"{module_name(path)} ({package}) imports {module_name(imported)} ({target})")
    assert not problems, "\n".join(problems)


def test_no_import_cycles():
    graph = {path: imports_of(path) for path in (REPO / "stages").rglob("*.py")}
    state: dict[Path, str] = {}
    cycles = []

    def visit(path: Path, trail: list[Path]) -> None:
        state[path] = "open"
        for imported in graph[path]:
            if imported.name == "__init__.py" and imported.parent in path.parents:
                continue  # a package's own __init__ runs before its modules; it imports none of them
            if state.get(imported) == "open":
                cycles.append(" -> ".join(module_name(p) for p in [*trail, path, imported]))
            elif imported not in state:
                visit(imported, [*trail, path])
        state[path] = "done"

    for path in graph:
        if path not in state:
            visit(path, [])
    assert not cycles, "\n".join(cycles)


def test_files_and_functions_stay_small():
    problems = []
    for path in (REPO / "stages").rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        if (lines := source.count("\n")) > MAX_FILE_LINES:
            problems.append(f"{path.relative_to(REPO)}: {lines} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    problems.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}: {length} lines")
    assert not problems, "\n".join(problems)
