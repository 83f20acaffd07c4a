"""Fingerprints of what the pipeline reads from outside itself, so `dvc repro` sees them change.

collect reads the catalogue's sources (local files, files inside installed wheels, the shared
datasets) and the model's tokenizer; pretrain reads the model's weights. None of these can be
listed as plain DVC dependencies: which files are read depends on params (the target, the
corpus, the multitask set, model.name), `../shared/...` would point inside `.dvc/tmp/exps/` in a
`dvc exp run --temp` copy, and a wheel's files sit in a site-packages path that differs per
machine. So the `inputs` stage (`always_changed`, a second or two) writes an md5 of every such
input to data/inputs/{collect,model}.json, and collect and pretrain depend on those files: a
changed input changes its fingerprint, and only the stages that read it run again. DVC itself
lacks a dependency whose path list comes from params (`deps: ${list}` is refused).

Hub sources and hub model ids cannot be fingerprinted offline; they are recorded by name only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bertfit.data.corpus import collected_tasks
from bertfit.data.sources import SPLITS
from bertfit.fingerprints import fingerprint
from bertfit.params import (
    PACKAGE_PREFIX,
    SCRATCH_PREFIX,
    FilesSource,
    PackageSource,
    TaskSpec,
    parse_section,
    parse_target,
    parse_tasks,
    read_params_file,
)
from bertfit.paths import package_path, package_root
from bertfit.reporting import write_json


def source_paths(spec: TaskSpec, root: Path) -> dict[str, Path | None]:
    """What a task's source reads, by a name that is the same on every machine."""
    source = spec.source
    if isinstance(source, PackageSource):
        name = f"{PACKAGE_PREFIX}{source.package}/{source.path}"
        try:
            return {name: package_root(source.package) / source.path}
        except FileNotFoundError:
            return {name: None}
    if isinstance(source, FilesSource):
        rels = [getattr(source, split) for split in SPLITS] + [source.unlabeled]
        return {rel: root / rel for rel in rels if rel is not None}
    label = f"hub:{source.path}" + (f"/{source.name}" if source.name else "")
    return {label: None}


def model_paths(model_name: str, root: Path) -> dict[str, Path | None]:
    """The model directory (or scratch config) a model.name reads; a hub id by name only."""
    if model_name.startswith(PACKAGE_PREFIX):
        try:
            return {model_name: package_path(model_name.removeprefix(PACKAGE_PREFIX))}
        except FileNotFoundError:
            return {model_name: None}
    if model_name.startswith(SCRATCH_PREFIX):
        return {model_name: root / model_name.removeprefix(SCRATCH_PREFIX)}
    local = root / model_name
    if local.exists():
        return {model_name: local}
    return {f"hub:{model_name}": None}


def fingerprints(paths: dict[str, Path | None]) -> dict[str, dict[str, Any]]:
    return {
        name: fingerprint(path) if path is not None else {"not_fingerprinted": "hub"}
        for name, path in paths.items()
    }


def collect_tasks(data: dict[str, Any], source: str) -> tuple[dict[str, TaskSpec], list[str]]:
    """The catalogue and the tasks collect loads (corpus.collected_tasks; a multitask task
    missing from the catalogue is left to collect's error)."""
    tasks = parse_tasks(data, source)
    target = parse_target(data, tasks, source)
    corpus = parse_section(data, "pretrain", source).corpus
    multitask = parse_section(data, "multitask", source)
    chosen = [t for t in multitask.trained_tasks(target) if t in tasks]
    return tasks, collected_tasks(corpus, target, tasks, chosen)


def stage_inputs(params_file: Path, root: Path) -> dict[str, dict[str, Any]]:
    """{"collect": ..., "model": ...}: the fingerprints collect's and pretrain's runs depend on."""
    data = read_params_file(params_file)
    tasks, names = collect_tasks(data, str(params_file))
    model = model_paths(parse_section(data, "model", str(params_file)).name, root)
    task_inputs = {name: fingerprints(source_paths(tasks[name], root)) for name in names}
    return {
        "collect": {"tasks": task_inputs, "model": fingerprints(model)},
        "model": {"model": fingerprints(model)},
    }


def write_inputs(params_file: Path, root: Path, out_dir: Path) -> dict[str, dict[str, Any]]:
    inputs = stage_inputs(params_file, root)
    for name, content in inputs.items():
        write_json(out_dir / f"{name}.json", content)  # atomic, as every report
    return inputs
