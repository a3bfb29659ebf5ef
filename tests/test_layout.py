"""The code's layout holds: each stage's code deps are its imports, arrows point down, tools stay out, nothing grows
too big."""

from __future__ import annotations

import ast
import copy
from pathlib import Path

from ruamel.yaml import YAML

from tools.code_deps import PIPELINE, REPO, collapse, differences, imports_of, module_name

# What each library package may import (besides itself); stage modules are imported by nothing.
LAYERS = {
    "core": set(),
    "model": {"core"},
    "graph": {"core", "model"},
    "scoring": {"core", "graph"},
    "verify": {"core", "model", "graph", "scoring"},
    "quantize": {"core", "model", "graph", "scoring", "verify"},
    "bench": {"core", "model", "graph", "scoring", "verify"},  # auto's serving choice judges runtimes with the gate
}
MAX_FILE_LINES = 300
MAX_FUNCTION_LINES = 60


def pipeline() -> dict:
    return YAML(typ="safe").load(PIPELINE)


def test_each_stages_code_deps_are_exactly_the_files_it_imports():
    assert differences(pipeline()) == {}, "dvc.yaml's code deps are stale: run python -m tools.code_deps"


def test_the_check_sees_a_missing_dep_and_a_dep_the_stage_does_not_import():
    edited = copy.deepcopy(pipeline())
    deps = edited["stages"]["parity"]["deps"]
    deps.remove("stages/parity.py")
    deps.append("stages/quantize/policy.py")
    assert differences(edited) == {"parity": (["stages/quantize/policy.py"], ["stages/parity.py"])}


def test_a_directory_is_one_dep_only_when_the_stage_imports_every_file_in_it():
    contents = {
        Path("a"): {Path("a/x.py"), Path("a/b/y.py")},
        Path("a/b"): {Path("a/b/y.py")},
        Path("c"): {Path("c/z.py"), Path("c/unused.py")},
        Path("c/d"): {Path("c/d/w.py")},
    }
    files = {Path("a/x.py"), Path("a/b/y.py"), Path("c/z.py"), Path("c/d/w.py")}
    assert sorted(collapse(files, contents.__getitem__)) == [Path("a"), Path("c/d"), Path("c/z.py")]


def test_no_stage_code_imports_a_tool():
    importing = [module_name(path) for path in (REPO / "stages").rglob("*.py") if imports_of(path, "tools")]
    assert not importing, f"stage code importing tools: {importing}"


def library_files() -> list[Path]:
    return sorted(path for path in (REPO / "stages").rglob("*.py") if path.parent != REPO / "stages")


def stage_modules() -> set[Path]:
    return {path for path in (REPO / "stages").glob("*.py") if path.name != "__init__.py"}


def test_stages_are_exactly_the_dvc_stages():
    names = {module_name(path).split(".")[-1] for path in stage_modules()}
    assert names == set(pipeline()["stages"])


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
