"""Batched prediction for sequence classifiers.

Examples are sorted by length before batching so each batch pads only to its own longest member;
Trainer.predict batches in dataset order, where one long text pads its whole batch.
"""

from __future__ import annotations

import numpy as np
import torch
from datasets import Dataset
from tqdm.auto import tqdm
from transformers import DataCollatorWithPadding, PreTrainedModel, PreTrainedTokenizerBase


def predict_logits(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, dataset: Dataset, batch_size: int
) -> np.ndarray:
    """Logits for every row of a tokenised dataset (with `length`), in the dataset's order."""
    model.eval()
    device = next(model.parameters()).device
    collator = DataCollatorWithPadding(tokenizer)
    features = [c for c in dataset.column_names if c in tokenizer.model_input_names]
    order = np.argsort(np.asarray(dataset["length"]), kind="stable")
    out = np.empty((len(dataset), model.config.num_labels), dtype=np.float32)
    with torch.inference_mode():
        for start in tqdm(range(0, len(order), batch_size), desc="predicting", unit="batch"):
            idx = order[start : start + batch_size]
            rows = dataset.select(idx).select_columns(features)
            batch = {k: v.to(device) for k, v in collator(rows.to_list()).items()}
            out[idx] = model(**batch).logits.float().cpu().numpy()
    return out
