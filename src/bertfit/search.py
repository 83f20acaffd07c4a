"""Hyperparameter search for the finetune stage with optuna, scored on validation.

Each trial is a real finetune run (training.finetune.finetune, the same code the pipeline runs)
on a seeded subset of the target's train split, with the trial's learning rate, epochs, batch
size, warm-up ratio and layer decay in place of params.yaml's; the score is the validation metric
finetune selects on. Test data is never read. Writes every trial to `trials.csv` and the best
values as a params override, `best_params.yaml`, ready for `dvc exp run -S ...` (the command is
printed too). Not a pipeline stage, since it runs many trainings:

    .venv/bin/python -m bertfit.search --params params.yaml --space search.yaml --out reports/search

The search space (`search:` ranges, trials, seed) is its own file, search.yaml, not a section of
params.yaml: no stage reads it, and `dvc exp show` lists every key of params.yaml as a column
(issue 34).

Sampling (TPE, seeded) is optuna's; this module is only the objective and the bookkeeping.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import optuna
import yaml

from bertfit.cli import configure_logging, stage_parser
from bertfit.data.tasks import read_task
from bertfit.params import (
    FinetuneParams,
    SearchParams,
    parse_section,
    parse_target,
    parse_tasks,
    read_params_file,
)
from bertfit.reporting import write_csv, write_text
from bertfit.training.finetune import drawn, finetune
from bertfit.training.selection import selection_metric

log = logging.getLogger(__name__)

SEARCHED = (
    "learning_rate",
    "num_train_epochs",
    "per_device_train_batch_size",
    "warmup_ratio",
    "layer_decay",
)


def suggest(trial: optuna.Trial, space: SearchParams) -> dict[str, Any]:
    """The trial's values for the searched finetune params."""
    return {
        "learning_rate": trial.suggest_float("learning_rate", *space.learning_rate, log=True),
        "num_train_epochs": trial.suggest_int("num_train_epochs", *space.num_train_epochs),
        "per_device_train_batch_size": trial.suggest_categorical(
            "per_device_train_batch_size", space.per_device_train_batch_size
        ),
        "warmup_ratio": trial.suggest_float("warmup_ratio", *space.warmup_ratio),
        "layer_decay": trial.suggest_float("layer_decay", *space.layer_decay),
    }


def search(
    model_dir: str,
    task_dir: Path,
    finetune_params: FinetuneParams,
    space: SearchParams,
    max_seq_length: int,
    out_dir: Path,
) -> optuna.Study:
    task = read_task(task_dir)
    train, validation = task.split("train"), task.split("validation")
    train = drawn(train, task, "train", space.max_train_samples, space.seed)
    metric = selection_metric(finetune_params.metric_for_best_model, task)
    direction = "minimize" if metric == "loss" else "maximize"
    log.info(
        "search: %d trials on %s (%d train rows, %d validation), %s validation %s",
        space.n_trials,
        task_dir.name,
        len(train),
        len(validation),
        direction,
        metric,
    )

    def objective(trial: optuna.Trial) -> float:
        values = suggest(trial, space)
        # a trial trains the epochs it samples: no data-sized length, no early stop; its value
        # is its best validation (no tolerance: trials compare peaks)
        fixed = {"min_train_steps": None, "early_stopping_patience": None, "selection_tolerance": 0}
        params = finetune_params.model_copy(
            update=values | fixed | {"warmup_steps": None, "max_train_samples": None}
        )
        with tempfile.TemporaryDirectory(prefix="bertfit-search-") as scratch:
            metrics = finetune(
                model_dir,
                task,
                train,
                validation,
                params,
                max_seq_length,
                Path(scratch) / "model",
                Path(scratch) / "reports",
            )
        return metrics["validation"][metric]

    study = optuna.create_study(
        direction=direction, sampler=optuna.samplers.TPESampler(seed=space.seed)
    )
    study.optimize(objective, n_trials=space.n_trials)

    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [
        {"trial": t.number, "value": t.value, "state": t.state.name} | t.params
        for t in study.trials
    ]
    write_csv(out_dir / "trials.csv", rows, ["trial", "value", "state", *SEARCHED])
    best = {"finetune": dict(study.best_params) | {"warmup_steps": None}}
    header = f"# best of {len(study.trials)} trials: validation {metric} {study.best_value:.4f}\n"
    write_text(out_dir / "best_params.yaml", header + yaml.safe_dump(best, sort_keys=True))
    command = " ".join(f"-S finetune.{k}={v}" for k, v in sorted(study.best_params.items()))
    log.info("best trial %d: %s = %.4f", study.best_trial.number, metric, study.best_value)
    log.info("try it in the pipeline: dvc exp run %s", command)
    return study


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser(__doc__.splitlines()[0])  # --params, as the stage scripts have
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument(
        "--base-model-dir",
        type=Path,
        default=Path("models/multitask"),
        help="the model finetune starts from (run `dvc repro multitask` first)",
    )
    parser.add_argument("--out", type=Path, default=Path("reports/search"))
    parser.add_argument(
        "--space",
        type=Path,
        default=Path("search.yaml"),
        help="the file whose `search` section gives the ranges (default: search.yaml)",
    )
    args = parser.parse_args(argv)
    configure_logging()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    data = read_params_file(args.params)
    target = parse_target(data, parse_tasks(data, str(args.params)), str(args.params))
    model = parse_section(data, "model", str(args.params))
    finetune_params = parse_section(data, "finetune", str(args.params))
    space = parse_section(read_params_file(args.space), "search", str(args.space))
    if not (args.base_model_dir / "config.json").is_file():
        raise FileNotFoundError(
            f"{args.base_model_dir}: no model; run `dvc repro multitask` first, or point "
            "--base-model-dir at a model directory"
        )
    search(
        str(args.base_model_dir),
        args.data_dir / "tasks" / target,
        finetune_params,
        space,
        model.max_seq_length,
        args.out,
    )


if __name__ == "__main__":
    main()
