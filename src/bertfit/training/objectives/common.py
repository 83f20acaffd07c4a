"""What both pretraining objectives share: the corpus tokenised and packed into blocks, and the
held-out blocks capped, masked once with a fixed seed and scored.

Each objective says only what differs: how a batch of texts is tokenised (special tokens, an eos
after each text), the block length, and a batch's summed loss, correct and scored tokens. The
packing (the remainder of each batch of 2000 texts dropped, as run_mlm and the Flax T5 example
do), the held-out sample and the order the RNGs are drawn in are the same for both.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from itertools import chain

import numpy as np
import torch
from datasets import Dataset
from transformers import PreTrainedModel

from bertfit.params import PretrainParams

log = logging.getLogger(__name__)

# a batch of texts -> its tokenizer's columns (input_ids, ...), as Dataset.map(batched=True) calls
Tokenize = Callable[[dict[str, list]], dict[str, list]]
# (model, a batch on the model's device) -> (summed loss, correct predictions, scored tokens)
BatchSums = Callable[[PreTrainedModel, dict[str, torch.Tensor]], tuple[float, int, int]]
# the collator a held-out batch is masked with: examples -> a batch of tensors
Collate = Callable[[list[dict]], dict[str, torch.Tensor]]

PACK_BATCH_TEXTS = 2000  # texts concatenated per packing batch; each batch's remainder is dropped


def check_corpus(texts: list[str], params: PretrainParams, where: str) -> None:
    """A corpus with no text is an error naming pretrain.corpus, not an empty training run."""
    if not texts:
        raise ValueError(
            f"{where}: the corpus is empty; collect built no text for pretrain.corpus="
            f"{params.corpus!r}. Use a task with train or unlabelled text, or pretrain.corpus: none"
        )


def tokenize_and_pack(
    texts: list[str], tokenize: Tokenize, block: int | None, block_name: str, where: str
) -> Dataset:
    """The texts tokenised by `tokenize`, then concatenated and cut into full blocks of `block`
    tokens (every column alike), or left one text per example when `block` is None.

    `block_name` says the block length in the error for a corpus shorter than one block.
    """
    ds = Dataset.from_dict({"text": texts})
    ds = ds.map(tokenize, batched=True, remove_columns=["text"], desc=f"tokenising {where}")
    if block is None:
        return ds

    def pack(batch: dict[str, list]) -> dict[str, list]:
        # the whole batch concatenated, cut into full blocks; the remainder is dropped (run_mlm)
        joined = {k: list(chain.from_iterable(v)) for k, v in batch.items()}
        n = len(joined["input_ids"]) // block * block
        return {k: [v[i : i + block] for i in range(0, n, block)] for k, v in joined.items()}

    packed = ds.map(pack, batched=True, batch_size=PACK_BATCH_TEXTS, desc=f"packing {where}")
    if len(packed) == 0:
        total = sum(len(x) for x in ds["input_ids"])
        raise ValueError(
            f"{where}: the corpus has {total} tokens, less than one block of {block_name}; "
            f"add text or lower max_seq_length"
        )
    return packed


def cap_heldout(dataset: Dataset, max_blocks: int | None, seed: int) -> Dataset:
    """At most max_blocks held-out examples, a seeded random choice kept in corpus order.

    A 5 % slice of a large corpus (in_domain with IMDb's 50k reviews) is thousands of blocks,
    scored before and after training; a fixed sample of a few hundred measures the change as
    well at a small share of the cost.
    """
    if max_blocks is None or len(dataset) <= max_blocks:
        return dataset
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(dataset), size=max_blocks, replace=False))
    log.info(
        "held-out MLM scored on %d of %d blocks (pretrain.heldout_max_blocks)",
        max_blocks,
        len(dataset),
    )
    return dataset.select(keep)


def fixed_masks(
    dataset: Dataset, collator: Collate, batch_size: int, seed: int
) -> list[dict[str, torch.Tensor]]:
    """Mask the held-out set once with a fixed seed, so before/after scores see the same masks."""
    torch_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    rows = dataset.to_list()
    batches = [collator(rows[i : i + batch_size]) for i in range(0, len(rows), batch_size)]
    torch.random.set_rng_state(torch_state)
    return batches


def heldout_batches(
    dataset: Dataset, collator: Collate, params: PretrainParams
) -> tuple[Dataset, list[dict[str, torch.Tensor]]]:
    """The held-out blocks to score, capped (pretrain.heldout_max_blocks), and their batches,
    masked once with pretrain.seed."""
    capped = cap_heldout(dataset, params.heldout_max_blocks, params.seed)
    return capped, fixed_masks(capped, collator, params.per_device_eval_batch_size, params.seed)


@torch.inference_mode()
def heldout_scores(
    model: PreTrainedModel,
    batches: list[dict[str, torch.Tensor]],
    batch_sums: BatchSums,
    count_name: str,
) -> dict[str, float]:
    """Held-out loss (token-weighted over the batches), its perplexity, and accuracy at the
    scored tokens, whose number is reported under `count_name`."""
    model.eval()
    device = next(model.parameters()).device
    total_loss, correct, count = 0.0, 0, 0
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        batch_loss, batch_correct, n = batch_sums(model, batch)
        total_loss += batch_loss
        correct += batch_correct
        count += n
    loss = total_loss / max(count, 1)
    return {
        "loss": loss,
        "perplexity": math.exp(loss),
        "accuracy": correct / max(count, 1),
        count_name: count,
    }
