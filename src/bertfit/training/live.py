"""Training logs through DVCLive (issue 13): per logging step the training loss and learning
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
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dvclive import Live
from transformers import TrainerCallback, TrainingArguments

from bertfit.reporting import write_json, write_text

LIVE_DIR = "live"  # in the stage's report directory
TRAINING_KEYS = ("loss", "learning_rate")


class LiveLog(TrainerCallback):
    """Logs a stage's training and validation to DVCLive, at the Trainer's global step.

    `tasks`: multitask's task names, which split its validation keys `<task>_<metric>` into
    `validation/<task>/<metric>` (one folder of curves per task)."""

    def __init__(self, live_dir: Path, stage: str, tasks: Sequence[str] = ()) -> None:
        self.live_dir = live_dir
        self.stage = stage
        self.tasks = sorted(tasks, key=len, reverse=True)  # the longest name that fits wins
        self.live: Live | None = None

    def on_train_begin(self, args: TrainingArguments, state: Any, control: Any, **_: Any) -> None:
        if not state.is_world_process_zero:
            return
        self.live = Live(
            str(self.live_dir), resume=False, report=None, save_dvc_exp=False, dvcyaml=False
        )
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

    def end(self) -> None:
        """The final summary (after the last validation, which may come after training)."""
        if self.live is not None:
            self.live.end()


def empty_log(live_dir: Path, stage: str, names: Sequence[str]) -> None:
    """A stage that did not train (passed its model through): an empty summary and each named
    curve with its header only, so the stage's declared outputs and plots exist."""
    shutil.rmtree(live_dir, ignore_errors=True)
    write_json(live_dir / "metrics.json", {})
    for name in names:
        field = name.rpartition("/")[2]
        write_text(live_dir / "plots" / "metrics" / stage / f"{name}.tsv", f"step\t{field}\n")
