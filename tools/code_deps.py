"""Each stage's code deps in dvc.yaml: exactly the project files its module imports, directly or not (a package
directory whose every file it imports listed as the directory).

    python -m tools.code_deps            # rewrite the code deps of every stage in dvc.yaml; print what changed
    python -m tools.code_deps --check    # print the differences and exit 1 if dvc.yaml is not current

A stage's deps keep their data paths (`${...}`) first, then list its code files sorted, so editing a file reruns
exactly the stages that run it: a Ray file reruns `infer`, a tool reruns nothing. `tests/test_layout.py` fails
when dvc.yaml and the imports differ. Imports are read from the source (`ast`), function-level ones included;
importing `a.b.c` runs `a/__init__.py` and `a/b/__init__.py` too, so those count.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from ruamel.yaml import YAML

from tools.cli import option, parse

REPO = Path(__file__).resolve().parents[1]
PIPELINE = REPO / "dvc.yaml"
STAGE_COMMAND = "python -m stages."


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
def imports_of(path: Path, root: str = "stages") -> frozenset[Path]:
    """Files of package `root` that `path` imports anywhere in it (function-level imports included), with their
    packages' `__init__` files."""
    found: set[Path] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        for name in names:
            parts = name.split(".")
            for end in range(1, len(parts) + 1):
                if parts[0] == root and (file := module_file(".".join(parts[:end]))) is not None:
                    found.add(file)
    found.discard(path)
    return frozenset(found)


def transitive_imports(path: Path, root: str = "stages") -> set[Path]:
    """`path` and every file of `root` it imports, directly or not."""
    seen: set[Path] = set()
    pending = [path]
    while pending:
        for imported in imports_of(pending.pop(), root):
            if imported not in seen:
                seen.add(imported)
                pending.append(imported)
    return seen | {path}


def stage_module(stage: dict) -> str:
    """The module a dvc.yaml stage runs (`python -m stages.<stage>`)."""
    command = stage["cmd"]
    if not command.startswith(STAGE_COMMAND):
        raise ValueError(f"stage command {command!r} does not run a stage module ({STAGE_COMMAND}...)")
    return command[len("python -m ") :].split()[0]


def code_deps(stage: dict) -> list[str]:
    """The stage's code, relative to the repository, sorted: each package directory whose files it all imports as one
    dep, and its other files one by one (`collapse`)."""
    files = {file.relative_to(REPO) for file in transitive_imports(module_file(stage_module(stage)))}
    return sorted(str(dep) for dep in collapse(files, package_files))


def collapse(files: set[Path], contents: Callable[[Path], set[Path]]) -> list[Path]:
    """`files`, where every file under a directory (`contents`) is one of them, as that directory (the outermost one):
    the same files, fewer entries. dvc.lock holds one entry per dep, and dvc parses it several times per run."""
    directories: list[Path] = []
    for directory in sorted(
        {parent for file in files for parent in file.parents if parent.parts}, key=lambda d: len(d.parts)
    ):
        if (
            not any(chosen in (directory, *directory.parents) for chosen in directories)
            and contents(directory) <= files
        ):
            directories.append(directory)
    return directories + [file for file in files if not any(directory in file.parents for directory in directories)]


def package_files(directory: Path) -> set[Path]:
    """Every file under `directory` (relative to the repository) that dvc hashes: compiled `__pycache__` files are in
    .dvcignore."""
    return {
        path.relative_to(REPO)
        for path in (REPO / directory).rglob("*")
        if path.is_file() and "__pycache__" not in path.relative_to(REPO).parts
    }


def data_deps(stage: dict) -> list[str]:
    """The stage's deps that are not project code (data paths, params-interpolated paths)."""
    return [dep for dep in stage["deps"] if not str(dep).startswith("stages/")]


def differences(pipeline: dict) -> dict[str, tuple[list[str], list[str]]]:
    """Per stage whose code deps are not its imports: (listed but not imported, imported but not listed)."""
    found = {}
    for name, stage in pipeline["stages"].items():
        listed = {str(dep) for dep in stage["deps"]} - set(data_deps(stage))
        wanted = set(code_deps(stage))
        if listed != wanted:
            found[name] = (sorted(listed - wanted), sorted(wanted - listed))
    return found


@dataclass(frozen=True)
class CodeDeps:
    """The command's settings."""

    check: bool = option(False, "only say whether dvc.yaml is current (exit 1 if not), writing nothing")


def main(argv: Sequence[str] | None = None) -> None:
    settings = parse(CodeDeps, argv, __doc__)
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    pipeline = yaml.load(PIPELINE)
    stale = differences(pipeline)
    for name, (extra, missing) in stale.items():
        print(f"{name}: listed but not its imports {extra}; its imports but not listed {missing}")
    if settings.check:
        sys.exit(1 if stale else 0)
    for name in stale:
        deps = pipeline["stages"][name]["deps"]
        code = code_deps(pipeline["stages"][name])
        data = [dep for dep in deps if not str(dep).startswith("stages/")]
        deps.clear()
        deps.extend([*data, *code])
    if stale:
        yaml.dump(pipeline, PIPELINE)
    print(f"dvc.yaml: {len(stale)} stage(s) rewritten" if stale else "dvc.yaml is current")


if __name__ == "__main__":
    main()
