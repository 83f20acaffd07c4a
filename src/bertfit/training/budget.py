"""How long finetune trains and how much of each text it reads, decided from the data.

Fixed epochs and a fixed input length suit one dataset size and one text length. A user's own
set is often small and long: 1,400 reviews at batch 24 are 59 steps an epoch, too few to train
a classifier in one or two epochs, and at 128 tokens most of each review is cut away. So:

- Training length (`training_length`): `num_train_epochs`, raised until the run has at least
  `min_train_steps` optimisation steps, but never beyond `max_train_epochs`; a large set keeps
  its epochs. When even `max_train_epochs` fall short (a few hundred rows), the batch drops to
  `min_train_batch_size` as well, with the epochs that then reach the steps (sst2, 500 rows,
  3 seeds: batch 24 for 10 epochs 0.800, the largest batch that reaches 400 steps in 10
  epochs, 12, 0.795, batch 8 for 7 epochs 0.803; validation agreed). Validation
  runs each epoch, or, when the run has fewer than `min_validations` epochs, every
  steps / min_validations steps, so the best point is chosen among several even in a
  one-epoch run. `early_stopping_patience` validations in a row that selection does not
  keep (none better than the best, nor within `selection_tolerance` of it) end the run
  (EarlyStopping below).
- Tuning method (`tuning_method`): with at most `few_labels_per_class` train rows per class
  (rows / classes), `few_labels_method` trains instead of `method`, when it fits the model, the
  task and the head (a contrastive run needs an encoder and classes) and finetune does not
  start from a multitask head of the target; the plan line says which and why
  (docs/results.md, "Few labels", measured the threshold).
- Input length (`input_length`): when more than `long_text_share` of the train texts are longer
  than `model.max_seq_length`, finetune reads `long_text_max_seq_length` tokens instead (within
  the model's position limit), with the head part of head+tail truncation scaled alike; the
  manifest records it, so evaluate and `load_trained` encode test text the same way.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from transformers import TrainerCallback, TrainingArguments

from bertfit.data.encoding import token_lengths
from bertfit.models.methods import METHODS
from bertfit.params import FinetuneParams
from bertfit.training.trainer import steps_per_epoch

if TYPE_CHECKING:  # annotations only: the caller has the family, the task and the head
    from bertfit.data.tasks import Task
    from bertfit.models.family import Family
    from bertfit.models.pooling import HeadSpec

if TYPE_CHECKING:  # an annotation only: budget runs nothing of selection
    from bertfit.training.selection import Selection

log = logging.getLogger(__name__)


def tuning_method(
    params: FinetuneParams,
    family: Family,
    task: Task,
    head: HeadSpec | None,
    examples: int,
    multitask_head: bool = False,
) -> tuple[str, str]:
    """The method finetune trains with for `examples` train rows, and why (for the plan).
    `multitask_head`: finetune starts from the target's multitask head, which multitask trained
    on the whole train split: the labels are not few, and the recipe goes on from that head."""
    few = params.few_labels_method
    if few is None or few == params.method or task.problem != "classification":
        return params.method, "finetune.method"
    if multitask_head and params.init_head_from_multitask:
        return params.method, (
            "finetune.method; not few_labels_method: the model's multitask head for the target "
            "was trained on its whole train split"
        )
    per_class = examples / max(len(task.labels), 1)
    limit = params.few_labels_per_class
    if per_class > limit:
        return params.method, f"{per_class:.0f} train rows per class > few_labels_per_class {limit}"
    unfit = METHODS[few].unfit(family, task, head)
    if unfit is not None:
        log.info("few_labels_method %s is not used: %s", few, unfit)
        return params.method, f"few_labels_method {few} does not fit: {unfit}"
    return few, f"{per_class:.0f} train rows per class <= few_labels_per_class {limit}"


@dataclass(frozen=True)
class InputLength:
    max_seq_length: int
    head_tokens: int
    share_over_configured: float  # train texts longer than model.max_seq_length
    share_truncated: float  # train texts longer than max_seq_length (what is cut after all)
    median_tokens: float


def position_limit(config: Any) -> int | None:
    """The longest input the model can take (None: relative positions, no fixed limit)."""
    return getattr(config, "max_position_embeddings", None)


def input_length(
    params: FinetuneParams,
    tokenizer: Any,
    train_df: pd.DataFrame,
    max_seq_length: int,
    config: Any,
    task_name: str,
    lengths: np.ndarray | None = None,
) -> InputLength:
    """The input length finetune uses: model.max_seq_length, or the long-text length;
    `lengths`: the train rows' token_lengths, when the caller has counted them already."""
    if lengths is None:
        lengths = token_lengths(tokenizer, train_df)
    over = float((lengths > max_seq_length).mean())
    chosen, head = max_seq_length, params.head_tokens
    long_length = params.long_text_max_seq_length
    limit = position_limit(config)
    if limit is not None:  # the method's own positions (a prompt's) come off the model's
        limit -= METHODS[params.method].extra_positions(params)
    if long_length is not None and limit is not None:
        long_length = min(long_length, limit)
    if over <= params.long_text_share:
        pass
    elif params.truncation == "hierarchical":
        log.info(
            "%.0f %% of %s's train texts are longer than %d tokens: hierarchical truncation "
            "reads them in pieces",
            100 * over,
            task_name,
            max_seq_length,
        )
    elif long_length is None or long_length <= max_seq_length:
        log.warning(
            "%.0f %% of %s's train texts are longer than model.max_seq_length %d tokens (median "
            "%d) and are truncated; finetune.long_text_max_seq_length (%s) does not lengthen "
            "them: set it (up to %s) or use truncation: hierarchical",
            100 * over,
            task_name,
            max_seq_length,
            np.median(lengths),
            params.long_text_max_seq_length,
            limit,
        )
    else:
        chosen = long_length
        head = round(params.head_tokens * chosen / max_seq_length)
    truncated = float((lengths > chosen).mean())
    if chosen != max_seq_length:
        tail = chosen - head - 2  # [CLS] and [SEP] take two positions
        split = f", head+tail {head} + {tail}" if params.truncation == "head_tail" else ""
        log.warning(
            "%.0f %% of %s's train texts are longer than model.max_seq_length %d tokens (median "
            "%d): finetune reads %d tokens instead (finetune.long_text_max_seq_length%s); %.0f %% "
            "are still truncated. Each text costs about %.1fx the time of a %d-token one",
            100 * over,
            task_name,
            max_seq_length,
            np.median(lengths),
            chosen,
            split,
            100 * truncated,
            chosen / max_seq_length,
            max_seq_length,
        )
    return InputLength(chosen, head, over, truncated, float(np.median(lengths)))


@dataclass(frozen=True)
class TrainingLength:
    epochs: float
    steps: int
    steps_per_epoch: int
    eval_steps: int | None  # None: validation at each epoch's end
    reason: str
    batch_size: int  # per device: per_device_train_batch_size, or less on a very small set


def training_length(
    params: FinetuneParams, args: TrainingArguments, examples: int
) -> TrainingLength:
    """Epochs, batch and validation interval: the rule in this module's docstring."""
    batch = args.per_device_train_batch_size
    per_epoch = steps_per_epoch(args, examples)
    epochs = params.num_train_epochs
    reason = "finetune.num_train_epochs"
    if params.min_train_steps is not None and per_epoch * epochs < params.min_train_steps:
        wanted = math.ceil(params.min_train_steps / per_epoch)
        reason = (
            f"num_train_epochs {params.num_train_epochs:g} would be "
            f"{math.ceil(per_epoch * params.num_train_epochs)} steps, fewer than "
            f"finetune.min_train_steps {params.min_train_steps}"
        )
        floor = params.min_train_batch_size
        if wanted > params.max_train_epochs and floor is not None and floor < batch:
            batch = floor
            per_epoch = steps_per_epoch(args, examples, batch)
            reason += (
                f" in finetune.max_train_epochs {params.max_train_epochs:g}, so the batch "
                f"drops from {args.per_device_train_batch_size} to {batch} "
                "(finetune.min_train_batch_size)"
            )
            wanted = math.ceil(params.min_train_steps / per_epoch)
        if wanted > params.max_train_epochs:
            reason += f", capped at finetune.max_train_epochs {params.max_train_epochs:g}"
        epochs = max(epochs, min(float(wanted), params.max_train_epochs))
    steps = math.ceil(per_epoch * epochs)
    eval_steps = None
    if epochs < params.min_validations:
        eval_steps = max(math.ceil(steps / params.min_validations), 1)
    return TrainingLength(epochs, steps, per_epoch, eval_steps, reason, batch)


class EarlyStopping(TrainerCallback):
    """Stop when the last `patience` validations were not kept by selection: none was better
    than the best before, nor within selection's tolerance of it.

    Written here rather than transformers' EarlyStoppingCallback, which reads the Trainer's own
    best metric: that needs `metric_for_best_model`, which makes the Trainer track (and keep) a
    best checkpoint of its own beside Selection's in-memory best, and warn that the best model
    is not loaded at the end (Selection restores it). Selection's history also survives a resume.
    """

    def __init__(self, selection: Selection, patience: int) -> None:
        self.selection = selection
        self.patience = patience

    def on_evaluate(self, args: TrainingArguments, state: Any, control: Any, **_: Any) -> None:
        history, best = self.selection.history, self.selection.best
        if best is None or len(history) <= self.patience:
            return
        since_best = len(history) - 1 - history.index(best)
        if since_best >= self.patience:
            log.info(
                "early stopping at step %d: %d validations since the kept one (%s %.4f, step %d)",
                state.global_step,
                since_best,
                self.selection.key,
                best[self.selection.key],
                best["step"],
            )
            control.should_training_stop = True
