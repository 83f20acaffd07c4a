"""Batched prediction for sequence classifiers.

Examples are sorted by length before batching so each batch pads only to its own longest member;
Trainer.predict batches in dataset order, where one long text pads its whole batch. With `bf16`
the forward pass runs under bf16 autocast (weights stay fp32), as training does.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from datasets import Dataset
from tqdm.auto import tqdm
from transformers import DataCollatorWithPadding, PreTrainedModel, PreTrainedTokenizerBase


def predict_logits(
    model: PreTrainedModel | torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    dataset: Dataset,
    batch_size: int,
    collator: Callable[[list[dict]], dict[str, torch.Tensor]] | None = None,
    bf16: bool = False,
) -> np.ndarray:
    """Logits for every row of a tokenised dataset (with `length`), in the dataset's order.

    `collator` batches the rows (default: dynamic padding; ChunkCollator for hierarchical rows).
    `bf16`: autocast to bf16 (the caller checks the device has it: training.hardware).
    """
    model.eval()
    device = next(model.parameters()).device
    collator = collator or DataCollatorWithPadding(tokenizer)
    features = [c for c in dataset.column_names if c in tokenizer.model_input_names]
    order = np.argsort(np.asarray(dataset["length"]), kind="stable")
    out = np.empty((len(dataset), model.config.num_labels), dtype=np.float32)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    with torch.inference_mode(), autocast:
        for start in tqdm(range(0, len(order), batch_size), desc="predicting", unit="batch"):
            idx = order[start : start + batch_size]
            rows = dataset.select(idx).select_columns(features)
            batch = {k: v.to(device) for k, v in collator(rows.to_list()).items()}
            out[idx] = model(**batch).logits.float().cpu().numpy()
    return out
