"""Model selection on validation, the one way for every stage that trains a classifier.

Each evaluation scores every validation set through the model family's score for its task
(`scorer(task)`: an encoder's logits, a seq2seq model's label-word ranking;
inference.predict_scores), computes the task's metrics with metrics.task_metrics plus the
validation loss, and keeps the weights with the best selection value: the chosen metric of a
single task (finetune), or the mean of each task's own metric (multitask).

On a small validation set the best value is mostly noise, so the strict best is often an early
evaluation that happened to draw lucky rows (docs/guide.md gives a measured case).
With a `tolerance`, the kept evaluation is the latest one within that margin of the best, so
training counts for more than a lucky draw: "auto" takes one standard error of the best value,
estimated by bootstrap over the validation rows (any metric: accuracy, F1, MCC, Pearson,
loss); 0 keeps the strict best (ties go to the earlier, as the HF Trainer does).

The kept weights are held in memory and restored at the end, as load_best_model_at_end would,
without writing a checkpoint per evaluation (for multitask those would store the shared
encoder once per head); the resumable checkpoint a stage writes after each evaluation carries
them (save_state), so a resumed run selects among every evaluation, before the kill and after.
The reference code chose its epoch on the test set; here test data never reaches this module.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from datasets import Dataset
from safetensors.torch import load_file, save_file
from scipy.stats import bootstrap
from torch import nn

from bertfit.data.tasks import Task
from bertfit.inference import Batch, predict_scores
from bertfit.metrics import metric_value, score_loss, task_metrics

log = logging.getLogger(__name__)

MEAN_KEY = "mean_main"  # the multitask selection value: mean of each task's own metric
STATE_FILE = "bertfit_selection.json"  # in a checkpoint: the evaluations so far
BEST_WEIGHTS = "bertfit_selection_best.safetensors"  # in a checkpoint: the best weights so far
SE_SUFFIX = "_se"  # a row's standard error of its selection value, with tolerance "auto"
BOOTSTRAP_DRAWS = 200  # enough for a standard error to about 5 % of itself


@dataclass
class ValidationSet:
    task: Task
    dataset: Dataset  # tokenised, with `labels` and `length`
    metric: str  # what selection reads of this task: a task_metrics key, or loss


def selection_metric(choice: str, task: Task) -> str:
    """`task` is the task's own metric (tasks.<name>.metric); else the metric named."""
    chosen = task.metric if choice == "task" else choice
    if task.problem == "regression" and chosen in ("accuracy", "macro_f1"):
        raise ValueError(
            f"params.yaml: finetune.metric_for_best_model {chosen!r} does not exist for a "
            "regression task; use task (Pearson) or loss"
        )
    return chosen


def bootstrap_error(
    task: Task, metric: str, labels: npt.NDArray[Any], scores: npt.NDArray[Any]
) -> float:
    """The standard error of a validation metric, from resampling the validation rows (seeded,
    so a rerun selects the same evaluation)."""

    def statistic(rows: npt.NDArray[Any]) -> float:
        return metric_value(task, metric, labels[rows], scores[rows])

    result = bootstrap(
        (np.arange(len(labels)),),
        statistic,
        vectorized=False,
        n_resamples=BOOTSTRAP_DRAWS,
        method="percentile",  # the interval is not used; BCa would score every leave-one-out
        rng=np.random.default_rng(0),
    )
    return float(result.standard_error)


class Selection:
    """Scores validation sets, remembers every row, keeps and restores the selected weights.

    `per_task_columns`: row keys `<task>_<metric>` and the mean (multitask), else bare metric
    names (finetune). A model for each task comes from `model_for(model, task_name)`, its score
    function from `scorer(task)`. `tolerance`: 0 (the strict best), a margin in the metric's
    units, or "auto" (one bootstrap standard error of the best value); the module docstring.
    `best` is the row whose weights are kept (and restored); `peak` the best value's row.
    """

    def __init__(
        self,
        sets: list[ValidationSet],
        scorer: Callable[[Task], Callable[[nn.Module, Batch], torch.Tensor]],
        collator: Callable[[list[dict]], Batch],
        batch_size: int,
        per_task_columns: bool = False,
        model_for: Callable[[nn.Module, str], nn.Module] = lambda model, _: model,
        tolerance: float | str = 0.0,
    ) -> None:
        if tolerance != "auto" and not (isinstance(tolerance, (int, float)) and tolerance >= 0):
            raise ValueError(
                f"selection tolerance must be a number >= 0 or 'auto', not {tolerance!r}"
            )
        if len(sets) > 1 and not per_task_columns:
            raise ValueError("several validation sets need per-task columns")
        if len({s.metric == "loss" for s in sets}) > 1:
            raise ValueError("selection cannot mix loss (lower is better) with other metrics")
        self.sets = sets
        self.score = {s.task.name: scorer(s.task) for s in sets}
        self.collator = collator
        self.batch_size = batch_size
        self.per_task_columns = per_task_columns
        self.model_for = model_for
        self.greater_is_better = sets[0].metric != "loss"
        self.tolerance = tolerance
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.peak: dict[str, Any] | None = None
        self._best_weights: dict[str, torch.Tensor] | None = None

    @property
    def key(self) -> str:
        return MEAN_KEY if self.per_task_columns else self.sets[0].metric

    def set_scores(
        self, model: nn.Module, s: ValidationSet, bf16: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """One validation set's labels and the model's scores on it."""
        logits = predict_scores(
            self.model_for(model, s.task.name),
            s.dataset,
            self.batch_size,
            self.collator,
            self.score[s.task.name],
            bf16,
        )
        return np.asarray(s.dataset["labels"]), logits

    def scores(self, model: nn.Module, bf16: bool) -> dict[str, float]:
        """Every validation set's metrics and loss, and the selection value."""
        row: dict[str, float] = {}
        chosen, errors = [], []
        for s in self.sets:
            labels, logits = self.set_scores(model, s, bf16)
            values = {"loss": score_loss(s.task.problem, labels, logits)}
            values |= task_metrics(s.task.problem, labels, logits, s.task.positive_id)
            prefix = f"{s.task.name}_" if self.per_task_columns else ""
            row |= {f"{prefix}{k}": v for k, v in values.items()}
            chosen.append(values[s.metric])
            if self.tolerance == "auto":
                errors.append(bootstrap_error(s.task, s.metric, labels, logits))
        if self.per_task_columns:
            row = {MEAN_KEY: float(np.mean(chosen))} | row
        if errors:  # the sets are independent: the mean's error adds in quadrature
            row[self.key + SE_SUFFIX] = float(np.sqrt(np.sum(np.square(errors))) / len(errors))
        return row

    def margin(self) -> float:
        """How far below the peak a later evaluation may be and still be kept."""
        if self.peak is None:
            return 0.0
        if self.tolerance == "auto":
            return float(self.peak.get(self.key + SE_SUFFIX, 0.0))
        return float(self.tolerance)

    def record(self, model: nn.Module, row: dict[str, Any]) -> bool:
        """Add an evaluation row; keep a copy of its weights when it is the new peak (strictly
        better: ties keep the earlier row) or within the margin of the peak."""
        self.history.append(row)
        sign = 1.0 if self.greater_is_better else -1.0
        value = sign * row[self.key]
        if self.peak is None or value > sign * self.peak[self.key]:
            self.peak = row
        margin = self.margin()
        keep = row is self.peak or (margin > 0 and value >= sign * self.peak[self.key] - margin)
        if keep:
            self.best = row
            self._best_weights = snapshot(model)
        return keep

    def save_state(self, folder: Path) -> None:
        """Write the history and the best weights into a checkpoint folder, for a resume."""
        folder.mkdir(parents=True, exist_ok=True)
        if self._best_weights is not None:
            save_file(self._best_weights, folder / BEST_WEIGHTS)
        state = {"history": self.history, "best": self.best, "peak": self.peak}
        (folder / STATE_FILE).write_text(json.dumps(state, indent=1) + "\n")

    def load_state(self, folder: Path) -> None:
        """The history and best weights of the run a checkpoint belongs to."""
        state = json.loads((folder / STATE_FILE).read_text())
        self.history, self.best = state["history"], state["best"]
        self.peak = state.get("peak", self.best)  # written before tolerance existed: the same
        weights = folder / BEST_WEIGHTS
        self._best_weights = load_file(weights) if weights.is_file() else None
        log.info("resumed selection: %d evaluations, best %s", len(self.history), self.best)

    def restore(self, model: nn.Module) -> dict[str, Any]:
        """Put the best weights back into `model`; returns the best row."""
        if self.best is None or self._best_weights is None:
            raise RuntimeError("no validation was scored, so there is no best model to restore")
        restore(model, self._best_weights)
        return self.best


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of every parameter and buffer, each shared tensor once."""
    tensors = dict(model.named_parameters()) | dict(model.named_buffers())
    return {k: v.detach().to("cpu", copy=True) for k, v in tensors.items()}


@torch.no_grad()
def restore(model: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Copy a snapshot back in place, so shared and tied tensors stay shared."""
    tensors = dict(model.named_parameters()) | dict(model.named_buffers())
    if tensors.keys() != weights.keys():
        raise RuntimeError("the snapshot does not fit the model it is restored into")
    for name, tensor in tensors.items():
        tensor.copy_(weights[name])
