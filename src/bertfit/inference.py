"""Batched scoring through a model family's `score` (models.family), and what the scores mean.

Examples are sorted by length before batching so each batch pads only to its own longest member;
Trainer.predict batches in dataset order, where one long text pads its whole batch. With `bf16`
the forward pass runs under bf16 autocast (weights stay fp32), as training does.

model_scores is the one scoring path of a loaded model directory (evaluate, bertfit predict),
class_probabilities and probability_columns what those scores say per class; here, below the
model families, so that predict and serve score without the evaluate stage's code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from datasets import Dataset
from torch import nn
from tqdm.auto import tqdm

from bertfit import terminal
from bertfit.calibration import probabilities
from bertfit.hardware import keep_freed_memory

if TYPE_CHECKING:  # an annotation only
    from bertfit.data.tasks import Task

Batch = dict[str, torch.Tensor]
NOT_INPUTS = ("labels", "length")
ROWS_PER_READ = 512  # rows read from Arrow at once when scoring (sorted_rows)


class Loaded(Protocol):
    """What model_scores needs of a loaded model directory: models.family.Trained, named by
    what it offers so that scoring stays below the model families."""

    model: nn.Module

    def collator(self) -> Any: ...

    def scorer(self, task: Task) -> Callable[[nn.Module, Batch], torch.Tensor]: ...


def sorted_rows(
    dataset: Dataset, order: np.ndarray, batch_size: int
) -> Iterator[list[dict[str, Any]]]:
    """The rows of `dataset` in `order`, a batch of `batch_size` rows at a time, as the
    collator takes them. Rows are read from Arrow a few hundred at a time: a `select` per batch
    builds a new Dataset (a fingerprint, a copy of its info), a large share of a short text's
    time at batch 1, while reading the whole set at once would hold a large file's rows as
    Python lists."""
    per_read = batch_size * max(1, ROWS_PER_READ // batch_size)  # whole batches per read
    for start in range(0, len(order), per_read):
        rows = dataset.select(order[start : start + per_read]).to_list()
        for first in range(0, len(rows), batch_size):
            yield rows[first : first + batch_size]


def predict_scores(
    model: nn.Module,
    dataset: Dataset,
    batch_size: int,
    collator: Callable[[list[dict]], Batch],
    score: Callable[[nn.Module, Batch], torch.Tensor],
    bf16: bool = False,
    disable_progress: bool | None = None,
) -> np.ndarray:
    """[rows, num_labels] scores for every row of a tokenised dataset (with `length`), in order.

    `collator` batches the rows (the family's: dynamic padding, ChunkCollator for hierarchical
    rows); `score` is the family's. `bf16`: autocast to bf16 (the caller checks the device has
    it: hardware.use_bf16). `disable_progress`: None shows the bar where
    terminal.progress_bars says (stderr is a terminal), True / False never / always. The process's
    allocator is left as it is (a server scoring here keeps glibc's defaults); evaluate and
    bertfit predict set it for their own process (model_scores below).
    """
    model.eval()
    device = next(model.parameters()).device
    features = [c for c in dataset.column_names if c not in NOT_INPUTS]
    order = np.argsort(np.asarray(dataset["length"]), kind="stable")
    out: np.ndarray | None = None
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    disable = not terminal.progress_bars() if disable_progress is None else disable_progress
    with torch.inference_mode(), autocast:
        batches = range(0, len(order), batch_size)
        rows = sorted_rows(dataset.select_columns(features), order, batch_size)
        for start in tqdm(batches, desc="predicting", unit="batch", disable=disable):
            idx = order[start : start + batch_size]
            batch = {k: v.to(device) for k, v in collator(next(rows)).items()}
            scores = score(model, batch).float().cpu().numpy()
            if out is None:
                out = np.empty((len(dataset), scores.shape[-1]), dtype=np.float32)
            out[idx] = scores
    return out if out is not None else np.empty((0, 0), dtype=np.float32)


def model_scores(
    trained: Loaded,
    dataset: Dataset,
    task: Task,
    batch_size: int,
    bf16: bool,
    disable_progress: bool | None = None,
) -> np.ndarray:
    """[rows, num_labels] scores of a loaded model directory on rows its `encoder()` tokenised.

    The one scoring path of evaluate and bertfit predict: on the GPU when there is one, in
    length-sorted batches with the family's collator and score (logits, or label-word
    log-likelihoods; regression: the one value). Freed memory is kept for reuse, as in
    training (hardware.keep_freed_memory; process-wide, which a one-shot stage or
    command can own and a library call such as TaskServer's scoring does not).
    """
    keep_freed_memory()
    if torch.cuda.is_available():
        trained.model.to("cuda")
    return predict_scores(
        trained.model,
        dataset,
        batch_size,
        trained.collator(),
        trained.scorer(task),
        bf16,
        disable_progress,
    )


def class_probabilities(scores: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Each class's probability: the softmax of an encoder's logits, or of a seq2seq model's
    label-word log-likelihoods (the label words renormalised among themselves), the scores
    divided by the model's temperature first (bertfit.calibration)."""
    return probabilities(scores, temperature).astype(scores.dtype)


def probability_columns(labels: list[str], probs: np.ndarray) -> dict[str, np.ndarray]:
    """`prob_<label>` per class: the columns bertfit predict and evaluate write."""
    return {f"prob_{label}": probs[:, i].astype(float) for i, label in enumerate(labels)}
