"""Training logs through DVCLive: per logging step the training loss and learning
rate, per validation its scores, in `reports/<stage>/live/`: `plots/metrics/<stage>/<name>.tsv`
(one row per step) and DVCLive's `metrics.json` (the step and the latest training values).

Every name starts with the stage (`finetune/loss`, `multitask/validation/mr/accuracy`), so
`dvc exp show` lists each once (`finetune.loss`), never under a file path. A small callback on
DVCLive's Live API rather than transformers' DVCLiveCallback, which counts its own steps (a
training log and a validation at the same optimisation step become two steps) and logs every
TrainingArguments field as a param (a hundred more `dvc exp show` columns). Inside the pipeline
DVCLive writes no dvc.yaml (the stages declare its files), starts no experiment and makes no
report. Only the main process of a multi-process run writes.

A resumed stage starts its log afresh and first replays the history its checkpoint restored
(the Trainer's `log_history`), so it ends with the files an uninterrupted run writes.

The same records also go, in one long table per kind, into `reports/<stage>/curves/`,
which dvc.yaml's plots draw: one chart per metric with a line per `series` (a task; or
training / validation / held-out), so that a chart says which task it shows without one file
per task in dvc.yaml, and a task set changed in params.yaml needs no new plot definitions.
`training.json` has a row per logging step and series (loss, learning rate); `validation.json`
a row per validation and series with every score, `selection` (the value model selection
reads: the task's own metric, or finetune's metric_for_best_model; multitask's `mean` row
holds their mean), `low`/`high` (the selection value ± its bootstrap standard error, where
selection estimated one) and `kept` (1 at the step whose weights were kept). JSON rather than
CSV: a score a row does not have is null, which a chart leaves out (an empty CSV cell would
be drawn as 0). The files are small and kept in git, so `dvc plots diff` shows the baseline's
curves beside the branch's without a DVC remote.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dvclive import Live
from transformers import TrainerCallback, TrainingArguments

from bertfit.reporting import CURVES_DIR, write_json, write_text
from bertfit.training.selection import MEAN_KEY, SE_SUFFIX

LIVE_DIR = "live"  # in the stage's report directory
TRAINING_KEYS = ("loss", "learning_rate")
# validation columns every row has (null where a series has none), so that each chart's field
# exists whatever the tasks are (a classification chart of a regression task draws nothing)
VALIDATION_COLUMNS = ("accuracy", "macro_f1", "loss", "selection", "low", "high")
# what the series of the training loss is called (multitask: the mixed batches, beside a series
# per task), and of validation rows that are not a task's
TRAINING_SERIES = {"multitask": "all tasks"}
VALIDATION_SERIES = {"pretrain": "held-out", "finetune": "validation"}
MEAN_SERIES = "mean"  # multitask: the mean of the tasks' own metrics, the selection value


class LiveLog(TrainerCallback):
    """Logs a stage's training and validation to DVCLive, at the Trainer's global step, and
    writes the stage's curves (`curves/` beside `live_dir`) at its end.

    `tasks`: multitask's task names, which split its validation keys `<task>_<metric>` into
    `validation/<task>/<metric>` (one folder of curves per task); a mapping gives each task's
    own metric too (its `selection` value). `selected_on`: the metric a single-task stage selects
    on (finetune's metric_for_best_model)."""

    def __init__(
        self,
        live_dir: Path,
        stage: str,
        tasks: Sequence[str] | Mapping[str, str] = (),
        selected_on: str | None = None,
    ) -> None:
        self.live_dir = live_dir
        self.stage = stage
        self.tasks = sorted(tasks, key=len, reverse=True)  # the longest name that fits wins
        self.task_metrics = dict(tasks) if isinstance(tasks, Mapping) else {}
        self.selected_on = selected_on
        self.live: Live | None = None
        self.training_rows: list[dict[str, Any]] = []
        self.validation_rows: list[dict[str, Any]] = []

    def on_train_begin(self, args: TrainingArguments, state: Any, control: Any, **_: Any) -> None:
        if not state.is_world_process_zero:
            return
        self.live = Live(
            str(self.live_dir), resume=False, report=None, save_dvc_exp=False, dvcyaml=False
        )
        self.training_rows, self.validation_rows = [], []
        for logs in state.log_history:  # a resumed run: what its checkpoint restored
            self.record(logs["step"], logs)

    def on_log(
        self, args: TrainingArguments, state: Any, control: Any, logs: Any = None, **_: Any
    ) -> None:
        if self.live is not None and logs:
            self.record(state.global_step, logs)

    def record(self, step: int, logs: dict[str, Any]) -> None:
        values = self.names(logs)
        if not values:  # the Trainer's closing summary: run times, in run.json
            return
        assert self.live is not None
        self.training_rows += self.training_curve(int(step), logs)
        self.validation_rows += self.validation_curve(int(step), logs)
        self.live.step = int(step)
        for name, value in values.items():
            self.live.log_metric(name, value)
        # validation: curves only; the selected step's scores are metrics.json's, and the
        # latest ones beside them would put the same numbers in `dvc exp show` twice
        latest = self.live.summary.get(self.stage, {})
        for key in [k for k in latest if k.startswith("validation")]:
            del latest[key]
        self.live.make_summary()

    def names(self, logs: dict[str, Any]) -> dict[str, float]:
        """A log dict's values under their DVCLive names; nothing else of it."""
        named = {}
        for key, value in logs.items():
            if not isinstance(value, int | float) or isinstance(value, bool):
                continue
            if key in TRAINING_KEYS:
                named[key] = value
            elif key.startswith("loss_"):  # multitask: each task's training loss
                named[f"task_loss/{key.removeprefix('loss_')}"] = value
            elif key.startswith("eval_") and key != "eval_epoch":
                named[self.validation_name(key.removeprefix("eval_"))] = value
        # sorted: a resumed run replays its history from trainer_state.json, whose keys are
        # sorted, and its summary must list them in the order an uninterrupted run does
        return {f"{self.stage}/{name}": named[name] for name in sorted(named)}

    def validation_name(self, key: str) -> str:
        for task in self.tasks:
            if key.startswith(f"{task}_"):
                return f"validation/{task}/{key.removeprefix(f'{task}_')}"
        if self.tasks:  # multitask's selection value (and its error), beside the tasks' folders
            return f"validation_{key}"
        return f"validation/{key}"

    def training_curve(self, step: int, logs: dict[str, Any]) -> list[dict[str, Any]]:
        """A training log's rows: the loss and learning rate; multitask adds a row per task."""
        if "loss" not in logs:
            return []
        series = TRAINING_SERIES.get(self.stage, "training")
        rows = [{"step": step, "series": series} | {k: logs.get(k) for k in TRAINING_KEYS}]
        for key, value in sorted(logs.items()):
            if key.startswith("loss_"):
                rows.append({"step": step, "series": key.removeprefix("loss_"), "loss": value})
        return rows

    def validation_curve(self, step: int, logs: dict[str, Any]) -> list[dict[str, Any]]:
        """A validation log's rows: one per task (multitask, with the mean of their own
        metrics), else one."""
        scores = {
            k.removeprefix("eval_"): v
            for k, v in logs.items()
            if k.startswith("eval_") and k != "eval_epoch" and isinstance(v, int | float)
        }
        if not scores:
            return []
        if not self.tasks:
            series = VALIDATION_SERIES.get(self.stage, "validation")
            return [self.validation_row(step, series, scores, self.selected_on)]
        by_task: dict[str, dict[str, float]] = {}
        rest = {}
        for key, value in scores.items():
            task = next((t for t in self.tasks if key.startswith(f"{t}_")), None)
            if task is None:
                rest[key] = value
            else:
                by_task.setdefault(task, {})[key.removeprefix(f"{task}_")] = value
        rows = [
            self.validation_row(step, task, values, self.task_metrics.get(task))
            for task, values in sorted(by_task.items())
        ]
        if MEAN_KEY in rest:
            rows.append(self.validation_row(step, MEAN_SERIES, rest, MEAN_KEY, keep=False))
        return rows

    @staticmethod
    def validation_row(
        step: int, series: str, scores: dict[str, float], selected: str | None, keep: bool = True
    ) -> dict[str, Any]:
        """One row: the scores (`keep`; standard errors as the low/high band instead),
        `selection` the selected metric's value, low/high its value ± its standard error."""
        row: dict[str, Any] = {"step": step, "series": series}
        if keep:
            row |= {k: v for k, v in scores.items() if not k.endswith(SE_SUFFIX)}
        if selected is not None and selected in scores:
            row["selection"] = scores[selected]
            se = scores.get(f"{selected}{SE_SUFFIX}")
            if se is not None:
                row |= {"low": scores[selected] - se, "high": scores[selected] + se}
        return row

    def end(self, kept_step: int | None = None) -> None:
        """The final summary (after the last validation, which may come after training), and
        the curves; `kept_step`: the step whose weights the stage kept, marked on its curves."""
        if self.live is None:
            return
        self.live.end()
        write_curves(
            self.live_dir.parent / CURVES_DIR,
            self.training_rows,
            self.validation_rows,
            kept_step,
        )


def write_curves(
    curves_dir: Path,
    training: Sequence[dict[str, Any]],
    validation: Sequence[dict[str, Any]],
    kept_step: int | None = None,
) -> None:
    """`training.json` and `validation.json`, each `{"rows": [...]}` sorted by step and series,
    every row with the same keys (DVC's plots read a list of like records)."""
    if kept_step is not None:
        validation = [row | {"kept": int(row["step"] == kept_step)} for row in validation]
    tables = {
        "training.json": (training, ("step", "series", *TRAINING_KEYS)),
        "validation.json": (validation, ("step", "series", *VALIDATION_COLUMNS)),
    }
    for name, (rows, columns) in tables.items():
        keys = sorted(set(columns).union(*(row.keys() for row in rows)))
        full = [{k: row.get(k) for k in keys} for row in rows]
        full.sort(key=lambda row: (row["step"], str(row["series"])))
        write_json(curves_dir / name, {"rows": full})


def empty_log(live_dir: Path, stage: str, names: Sequence[str]) -> None:
    """A stage that did not train (passed its model through): an empty summary, each named
    curve with its header only and empty curve tables, so the stage's declared outputs and plots
    exist."""
    shutil.rmtree(live_dir, ignore_errors=True)
    write_curves(live_dir.parent / CURVES_DIR, [], [])
    write_json(live_dir / "metrics.json", {})
    for name in names:
        field = name.rpartition("/")[2]
        write_text(live_dir / "plots" / "metrics" / stage / f"{name}.tsv", f"step\t{field}\n")
