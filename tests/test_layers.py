"""The package's layers point down, read from the code's own imports (ast: nothing is imported,
and imports inside functions or under TYPE_CHECKING count too).

Lowest first: the ground floor (package paths, hardware and display decisions, params, writers),
data/, scoring (inference, metrics), models/, the stage bodies that train nothing (collection,
evaluation, the model card, the summary), training/, and on top the commands: cli and
everything it runs (predict, serve, plan, ...). A module may import its own layer and the ones
below it; one import that runs up (data/ importing models/, models/ importing training/,
anything below the commands importing bertfit.cli) fails here, naming the file and the import.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import PROJECT_ROOT

PACKAGE = "bertfit"
# lowest first; a layer is a list of modules or packages (a package holds all its submodules)
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "ground",
        (
            "bertfit.__init__",
            "bertfit.calibration",
            "bertfit.figures",
            "bertfit.fingerprints",
            "bertfit.hardware",
            "bertfit.params",
            "bertfit.paths",
            "bertfit.phases",
            "bertfit.plots_page",
            "bertfit.reporting",
            "bertfit.terminal",
        ),
    ),
    ("data", ("bertfit.data",)),
    ("scoring", ("bertfit.inference", "bertfit.metrics")),
    ("models", ("bertfit.models",)),
    (
        "stages that train nothing",
        ("bertfit.collection", "bertfit.evaluation", "bertfit.model_card", "bertfit.summary"),
    ),
    ("training", ("bertfit.training",)),
]
TOP = "commands"  # every module no layer above names: cli and the commands it runs


def module_name(path: Path, source_root: Path) -> str:
    """`bertfit.data.collect` for src/bertfit/data/collect.py; a package's `__init__` kept."""
    return ".".join(path.relative_to(source_root).with_suffix("").parts)


def package_modules(source_root: Path) -> dict[str, Path]:
    """Every module of the package under `source_root`, by dotted name."""
    files = sorted((source_root / PACKAGE).rglob("*.py"))
    return {module_name(f, source_root): f for f in files}


def imported_modules(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The package's modules an import statement in `path` names, at any depth.

    `from a import b` names module a.b when there is one, else module a (b is a name in it);
    a package stands for its `__init__`. Relative imports resolve against the file's package.
    """
    package = name.rpartition(".")[0]

    def known(module: str) -> str | None:
        for candidate in (module, f"{module}.__init__"):
            if candidate in modules:
                return candidate
        return None

    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(m for alias in node.names if (m := known(alias.name)))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # level 1 is the file's own package, each level above one up
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            for alias in node.names:
                module = known(f"{base}.{alias.name}") or known(base)
                if module:
                    found.add(module)
    return found


def layer_of(module: str) -> int:
    """The index of the module's layer in LAYERS, or len(LAYERS) for the commands on top."""
    for index, (_, members) in enumerate(LAYERS):
        if any(module == m or module.startswith(f"{m}.") for m in members):
            return index
    return len(LAYERS)


def layer_name(index: int) -> str:
    return LAYERS[index][0] if index < len(LAYERS) else TOP


def upward_imports(source_root: Path) -> list[str]:
    """Each import of a module from a layer above the importing one, as `file imports module`."""
    modules = package_modules(source_root)
    found = []
    for name, path in modules.items():
        own = layer_of(name)
        for imported in sorted(imported_modules(path, name, modules)):
            if layer_of(imported) > own:
                found.append(
                    f"{path.relative_to(source_root)} ({layer_name(own)}) imports "
                    f"{imported.removesuffix('.__init__')} ({layer_name(layer_of(imported))})"
                )
    return found


def test_every_import_points_down() -> None:
    found = upward_imports(PROJECT_ROOT / "src")
    assert not found, (
        "imports that run up a layer (tests/test_layers.py LAYERS says the order); move the "
        "definition down, or the importing code up:\n  " + "\n  ".join(found)
    )


def test_the_named_layers_exist() -> None:
    """A layer that names a module which is gone would quietly put nothing in its place."""
    modules = package_modules(PROJECT_ROOT / "src")
    missing = [
        m
        for _, members in LAYERS
        for m in members
        if m not in modules and f"{m}.__init__" not in modules
    ]
    assert not missing, f"LAYERS names modules that do not exist: {missing}"


# one import that runs up, added to each file of a copy of the package
UPWARD = {
    "data/collect.py": "from bertfit.models.loading import check_model",
    "models/loading.py": "from bertfit.training import trainer",
    "inference.py": "from bertfit import cli",
    "training/trainer.py": "from .. import cli",
    "hardware.py": "def later() -> None:\n    import bertfit.data.sources",
}


def test_an_import_that_runs_up_is_caught(tmp_path: Path) -> None:
    """The check itself: each import of UPWARD, added to a copy of the package, is found."""
    source = PROJECT_ROOT / "src" / PACKAGE
    copy = tmp_path / PACKAGE
    for file in source.rglob("*.py"):
        text = file.read_text(encoding="utf-8")
        added = UPWARD.get(file.relative_to(source).as_posix())
        target = copy / file.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text + (f"\n{added}\n" if added else ""), encoding="utf-8")
    found = upward_imports(tmp_path)
    assert sorted(line.partition(" ")[0] for line in found) == sorted(
        f"{PACKAGE}/{path}" for path in UPWARD
    )
