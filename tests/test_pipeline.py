"""dvc.yaml against the code: each stage's deps list every src/bertfit module its script runs.

dvc reruns a stage only when one of its deps changes, so a module missing from `deps` lets
`dvc repro` keep a stale result after that module changed. The modules a stage runs are its
script's import closure, read statically with ast (nothing is imported, so the test is cheap and
also sees imports inside functions).
"""

from __future__ import annotations

import ast
import shlex
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import pytest
import yaml

from tests.conftest import PROJECT_ROOT

PACKAGE = "bertfit"
SOURCE_ROOT = PROJECT_ROOT / "src"  # the directory that holds the package
CHECKED_PREFIXES = [PurePosixPath("src") / PACKAGE, PurePosixPath("stages")]  # code, not data


def dvc_stages() -> dict[str, dict]:
    """The stages of dvc.yaml, by name."""
    return yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]


def stage_script(name: str, stage: dict) -> PurePosixPath:
    """The script a stage's cmd runs (`stages/python stages/<name>.py ...`), relative to the
    project."""
    words = shlex.split(stage["cmd"])
    assert len(words) > 1 and words[0] == "stages/python" and words[1].endswith(".py"), (
        f"stage {name}: cmd is not `stages/python <script>.py ...`: {stage['cmd']}"
    )
    return PurePosixPath(words[1])


def stage_deps(stage: dict) -> list[PurePosixPath]:
    """A stage's deps as normalised relative paths (`./src/x/` and `src/x` compare equal)."""
    return [PurePosixPath(dep) for dep in stage.get("deps", [])]


def module_name(path: Path) -> str:
    """The dotted name a file under the project or under src/ is imported as."""
    root = SOURCE_ROOT if path.is_relative_to(SOURCE_ROOT) else PROJECT_ROOT
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_file(module: str) -> Path | None:
    """The file of a package module, `a/b.py` or `a/b/__init__.py`; None when there is none.

    None also covers names that are not modules, such as the `y` of `from a import y`.
    """
    base = SOURCE_ROOT.joinpath(*module.split("."))
    return next((f for f in (base.with_suffix(".py"), base / "__init__.py") if f.is_file()), None)


def imported_names(path: Path) -> set[str]:
    """Every absolute module name an import statement in `path` may load, at any depth.

    `from a.b import c` gives a.b and a.b.c, since c may be a submodule (module_file drops it
    when it is not); relative imports are resolved against the file's package.
    """
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # level 1 is the file's own package, each level above one up
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return names


def with_parents(module: str) -> list[str]:
    """A module and the packages above it, outermost first: importing it runs all of them."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def import_closure(script: Path) -> set[Path]:
    """The package files that running `script` executes, following its imports recursively."""
    reached: set[Path] = set()
    todo = [script]
    while todo:
        for name in imported_names(todo.pop()):
            if name.split(".")[0] != PACKAGE:
                continue
            for module in with_parents(name):
                file = module_file(module)
                if file is not None and file not in reached:
                    reached.add(file)
                    todo.append(file)
    return reached


def is_empty_init(path: Path) -> bool:
    """An `__init__.py` without code (at most a docstring): no change to it changes a result."""
    if path.name != "__init__.py":
        return False
    body = ast.parse(path.read_text(encoding="utf-8")).body
    return all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in body)


def covered(path: PurePosixPath, deps: list[PurePosixPath]) -> bool:
    """Whether `path` is a dep itself or lies under a dep that is a directory."""
    return any(path == dep or dep in path.parents for dep in deps)


def stage_code(name: str, stage: dict) -> list[PurePosixPath]:
    """The files of a stage's code dvc must track: its script and its non-empty package modules."""
    script = stage_script(name, stage)
    assert (PROJECT_ROOT / script).is_file(), f"stage {name}: {script} does not exist"
    modules = import_closure(PROJECT_ROOT / script)
    assert modules, f"stage {name}: {script} imports nothing from {PACKAGE}; is the closure right?"
    code = (f.relative_to(PROJECT_ROOT).as_posix() for f in modules if not is_empty_init(f))
    return [script, *sorted(map(PurePosixPath, code))]


def fail_listing(problem: str, paths: dict[str, list[PurePosixPath]]) -> None:
    """Fail with the paths per stage as dvc.yaml list items, ready to paste; pass when none."""
    if paths:
        lines = [problem]
        for name, stage_paths in paths.items():
            lines += [f"  {name}:", *(f"      - {path}" for path in stage_paths)]
        pytest.fail("\n".join(lines), pytrace=False)


def per_stage(find: Callable[[str, dict], list[PurePosixPath]]) -> dict[str, list[PurePosixPath]]:
    """`find(name, stage)` for every stage of dvc.yaml, keeping the stages where it found any."""
    return {name: found for name, stage in dvc_stages().items() if (found := find(name, stage))}


def test_stage_deps_cover_the_modules_the_stage_imports() -> None:
    def uncovered(name: str, stage: dict) -> list[PurePosixPath]:
        deps = stage_deps(stage)
        return [path for path in stage_code(name, stage) if not covered(path, deps)]

    fail_listing(
        "dvc.yaml: these stages run code their deps do not list; add them:", per_stage(uncovered)
    )


def test_stage_deps_on_code_exist() -> None:
    def gone(_: str, stage: dict) -> list[PurePosixPath]:
        code_deps = [dep for dep in stage_deps(stage) if covered(dep, CHECKED_PREFIXES)]
        return [dep for dep in code_deps if not (PROJECT_ROOT / dep).exists()]

    fail_listing("dvc.yaml: these deps do not exist; remove or rename them:", per_stage(gone))


def test_each_stage_lists_its_own_script_in_deps() -> None:
    def unlisted(name: str, stage: dict) -> list[PurePosixPath]:
        script = stage_script(name, stage)
        return [] if covered(script, stage_deps(stage)) else [script]

    fail_listing("dvc.yaml: add each stage's script to its deps:", per_stage(unlisted))


def test_stages_that_read_the_catalogue_depend_on_its_file() -> None:
    """params.yaml's `tasks` is the catalogue's file name (issue 13): a stage that lists the
    `tasks` param sees a renamed file through it, and an edited catalogue only through a dep."""
    file_name = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text(encoding="utf-8"))["tasks"]
    assert isinstance(file_name, str) and (PROJECT_ROOT / file_name).is_file()
    catalogue = PurePosixPath(file_name)

    def missing(_: str, stage: dict) -> list[PurePosixPath]:
        if "tasks" not in stage.get("params", []):
            return []
        return [] if covered(catalogue, stage_deps(stage)) else [catalogue]

    readers = [name for name, stage in dvc_stages().items() if "tasks" in stage.get("params", [])]
    assert {"collect", "multitask"} <= set(readers)
    fail_listing("dvc.yaml: these stages list the `tasks` param; add its file:", per_stage(missing))


def test_stage_deps_list_no_code_the_stage_does_not_run() -> None:
    """The other way round: a module a stage no longer imports, left in its deps, reruns the
    stage whenever that module changes (CPU dropout code rerunning data collection)."""

    def unused(name: str, stage: dict) -> list[PurePosixPath]:
        code = stage_code(name, stage)
        code_deps = [dep for dep in stage_deps(stage) if covered(dep, CHECKED_PREFIXES)]
        return [
            dep
            for dep in code_deps
            if not any(covered(path, [dep]) for path in code)
            and not ((PROJECT_ROOT / dep).is_file() and is_empty_init(PROJECT_ROOT / dep))
        ]

    fail_listing("dvc.yaml: these stages do not run these deps; remove them:", per_stage(unused))
