"""Batched scoring through a model family's `score` (models.family).

Examples are sorted by length before batching so each batch pads only to its own longest member;
Trainer.predict batches in dataset order, where one long text pads its whole batch. With `bf16`
the forward pass runs under bf16 autocast (weights stay fp32), as training does.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from datasets import Dataset
from torch import nn
from tqdm.auto import tqdm

from bertfit import terminal

Batch = dict[str, torch.Tensor]
NOT_INPUTS = ("labels", "length")


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
    bertfit predict set it for their own process (evaluation.model_scores).
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
        for start in tqdm(batches, desc="predicting", unit="batch", disable=disable):
            idx = order[start : start + batch_size]
            rows = dataset.select(idx).select_columns(features)
            batch = {k: v.to(device) for k, v in collator(rows.to_list()).items()}
            scores = score(model, batch).float().cpu().numpy()
            if out is None:
                out = np.empty((len(dataset), scores.shape[-1]), dtype=np.float32)
            out[idx] = scores
    return out if out is not None else np.empty((0, 0), dtype=np.float32)
