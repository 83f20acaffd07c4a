"""Pruned against unpruned hyperparameter search: the same trials and seed, one run each.

`bertfit search` on the collected target (data/tasks/<target>) from models/multitask, once per
pruner (search.yaml's space for params.yaml's finetune.method; its n_trials, max_train_samples
and pruner replaced by the options here), each in its own study. Reported per pruner: wall
time, the optimisation steps trained over all trials (the work, which load does not change),
trials completed and pruned, and the best validation score; one run, so on a shared machine
the walls are noisy and the steps are the figure to compare.

    .venv/bin/python benchmarks/search_pruning.py --trials 20 --pruners none median
    .venv/bin/python benchmarks/search_pruning.py --trials 3 --train-samples 100 \
        --validation-samples 100   # a quick look that it works

Writes reports/benchmarks/search_pruning.json (and each search's folder under --work-dir).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from bertfit import search  # noqa: E402
from bertfit.params import read_params_file  # noqa: E402
from bertfit.search.study import STEPS_ATTR  # noqa: E402


def edited(path: Path, source: Path, section: str, values: dict) -> Path:
    """A copy of a params file (its task catalogue inlined) with `values` in `section`."""
    data = read_params_file(source)
    data[section] |= values
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def one_search(args: argparse.Namespace, pruner: str, work_dir: Path) -> dict:
    """One search with `pruner`; its wall time, trial states and best validation."""
    trials = {"n_trials": args.trials, "max_train_samples": args.train_samples, "pruner": pruner}
    space = edited(work_dir / f"search-{pruner}.yaml", args.space, "search", trials)
    params = edited(
        work_dir / "params.yaml",
        args.params,
        "finetune",
        {"max_validation_samples": args.validation_samples},
    )
    out = work_dir / pruner
    argv = ["--params", str(params), "--space", str(space), "--data-dir", str(args.data_dir),
            "--base-model-dir", str(args.base_model_dir), "--out", str(out),
            "--study-name", f"pruning-benchmark-{pruner}-{time.time_ns()}"]  # fmt: skip
    started = time.perf_counter()
    study = search.main(argv)
    wall = time.perf_counter() - started
    states = [t.state.name for t in study.trials]
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    steps = [t.user_attrs.get(STEPS_ATTR, 0) for t in study.trials]
    batches = [t.params.get("per_device_train_batch_size", 0) for t in study.trials]
    return {
        "wall_s": round(wall, 1),
        # the work done, which the machine's load does not change: optimisation steps and
        # training examples over all trials
        "steps": sum(steps),
        "train_examples": sum(s * b for s, b in zip(steps, batches, strict=True)),
        "completed": states.count("COMPLETE"),
        "pruned": states.count("PRUNED"),
        "failed": states.count("FAIL"),
        "best_value": study.best_value if complete else None,
        "best_params": study.best_params if complete else None,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--space", type=Path, default=ROOT / "search.yaml")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data")
    parser.add_argument("--base-model-dir", type=Path, default=ROOT / "models/multitask")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--train-samples", type=int, default=2000)
    parser.add_argument(
        "--validation-samples", type=int, default=None, help="validation rows; default: all"
    )
    parser.add_argument("--pruners", nargs="+", default=["none", "median"])
    parser.add_argument("--work-dir", type=Path, default=None, help="default: a temporary one")
    parser.add_argument("--out", type=Path, default=ROOT / "reports/benchmarks/search_pruning.json")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bertfit-pruning-") as scratch:
        work_dir = args.work_dir or Path(scratch)
        work_dir.mkdir(parents=True, exist_ok=True)
        runs = {p: one_search(args, p, work_dir) for p in args.pruners}

    record = {
        "trials": args.trials,
        "train_samples": args.train_samples,
        "validation_samples": args.validation_samples,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"{args.trials} trials of {args.train_samples} train rows each, one run:")
    print(f"{'pruner':<20} {'wall':>8} {'steps':>7} {'completed':>10} {'pruned':>7} {'best':>7}")
    for pruner, run in runs.items():
        best = f"{run['best_value']:.4f}" if run["best_value"] is not None else "-"
        print(
            f"{pruner:<20} {run['wall_s']:>7.0f}s {run['steps']:>7} {run['completed']:>10} "
            f"{run['pruned']:>7} {best:>7}"
        )
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
