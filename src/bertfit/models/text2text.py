"""Text-to-text classification (T5): inputs with a task prefix, label words as targets, ranking.

A task's input is its prefix and text (`"mr: <review>"`; sentence pairs `"mrpc sentence1: <a>
sentence2: <b>"` as T5 writes them) and the target is the label's word (tasks.<name>.label_words,
default the label names), which training passes as `labels` (token ids, eos-terminated, padding
-100). Regression (STS-B) follows T5: the target is the number rounded to 0.2 as text.

Prediction ranks the label words (T0 / lm-evaluation-harness): one encoder pass, then every
label word's log-likelihood under the decoder, summed over its tokens (or their mean,
`label_scoring: mean`, T-Few's length normalisation), so the prediction is always a valid label
and the class scores feed the same metrics as an encoder's logits. `generate` decoding is an
option in evaluate, reporting the share of outputs that are no label word. Transformers has no
rank classification, hence this module.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import torch
from datasets import Dataset
from torch import nn
from transformers import DataCollatorForSeq2Seq, PreTrainedTokenizerBase

from bertfit.data.encoding import (
    Preprocessing,
    label_values,
    special_tokens_template,
    truncate_ids,
)
from bertfit.data.tasks import Task
from bertfit.models.adapters import is_prompt_learning

Batch = dict[str, torch.Tensor]
REGRESSION_STEP = 0.2  # T5 rounds STS-B scores to the nearest 0.2
PAIR_SEPARATOR = "sentence2:"


def regression_values(labels: pd.Series) -> list[float]:
    """The grid of target numbers (step 0.2) that covers the train labels."""
    low = math.floor(float(labels.min()) / REGRESSION_STEP + 1e-9)
    high = math.ceil(float(labels.max()) / REGRESSION_STEP - 1e-9)
    return [round(i * REGRESSION_STEP, 1) for i in range(low, high + 1)]


def target_words(task: Task, values: list[float] | None = None) -> list[str]:
    """The text each class (or regression value on the grid) is written as."""
    if task.problem == "regression":
        if not values:
            raise ValueError(f"{task.name}: a regression task needs its grid of target values")
        return [f"{v:.1f}" for v in values]
    return task.words()


def label_targets(tokenizer: PreTrainedTokenizerBase, task: Task, words: list[str]) -> list[list]:
    """Each label word's target token ids (eos-terminated); clashes and empty words are errors."""
    targets = [tokenizer(w)["input_ids"] for w in words]
    bare = [tokenizer(w, add_special_tokens=False)["input_ids"] for w in words]
    labels = task.labels or words
    for label, word, ids in zip(labels, words, bare, strict=True):
        if not ids:
            raise ValueError(
                f"tasks.{task.name}.label_words: {label!r} -> {word!r} tokenises to nothing; "
                "give it a word the tokenizer can write"
            )
    seen: dict[tuple[int, ...], str] = {}
    for label, ids in zip(labels, targets, strict=True):
        key = tuple(ids)
        if key in seen:
            raise ValueError(
                f"tasks.{task.name}.label_words: labels {seen[key]!r} and {label!r} tokenise to "
                f"the same sequence {list(key)}; give them distinct words"
            )
        seen[key] = label
    return targets


class Text2TextEncoder:
    """Turns a task's frames into prefixed, truncated inputs (and class ids as `labels`).

    The prefix and the eos are kept whole; the text is cut to the rest of max_seq_length by the
    truncation strategy (head_tail, head, tail); sentence pairs lose tokens from the longer side.
    """

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, prep: Preprocessing, section: str = "finetune"
    ) -> None:
        if prep.truncation == "hierarchical":
            raise ValueError(
                f"params.yaml: {section}.truncation hierarchical pools encoder pieces; a "
                "text-to-text model reads one input: use head_tail, head or tail"
            )
        self.tokenizer = tokenizer
        self.prep = prep
        self.section = section
        self.before, self.after = special_tokens_template(tokenizer)
        prep.validate(len(self.before) + len(self.after), section)

    def ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]

    def encode(self, task: Task, texts: list[str], pairs: list[str] | None) -> dict[str, list]:
        prefix = self.ids(task.input_prefix(pairs is not None).rstrip())
        separator = self.ids(PAIR_SEPARATOR) if pairs is not None else []
        fixed = len(self.before) + len(prefix) + len(separator) + len(self.after)
        budget = self.prep.max_seq_length - fixed
        if budget < 1:
            raise ValueError(
                f"tasks.{task.name}.prefix {task.input_prefix(pairs is not None)!r} takes "
                f"{fixed} of model.max_seq_length={self.prep.max_seq_length} tokens with the "
                "special tokens, leaving none for the text; shorten it or raise max_seq_length"
            )
        text_ids = self.tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
        if pairs is None:
            strategy, head = self.prep.truncation, self.prep.head_tokens
            bodies = [truncate_ids(x, budget, strategy, min(head, budget)) for x in text_ids]
        else:
            pair_ids = self.tokenizer(pairs, add_special_tokens=False, verbose=False)["input_ids"]
            bodies = [
                a + separator + b
                for a, b in (
                    longest_first(x, y, budget) for x, y in zip(text_ids, pair_ids, strict=True)
                )
            ]
        input_ids = [self.before + prefix + body + self.after for body in bodies]
        return {"input_ids": input_ids, "attention_mask": [[1] * len(x) for x in input_ids]}

    def labelled(self, df: pd.DataFrame, task: Task, split: str) -> Dataset:
        """Inputs, `length`, and `labels`: class ids (floats for regression), as encoders have."""
        return self.inputs(df, task).add_column("labels", label_values(df, task, split))

    def inputs(self, df: pd.DataFrame, task: Task) -> Dataset:
        """The rows as the task's prefixed inputs, with `length`."""
        pairs = df["text_pair"].tolist() if "text_pair" in df.columns else None
        encoded = self.encode(task, df["text"].tolist(), pairs)
        encoded["length"] = [len(x) for x in encoded["input_ids"]]
        return Dataset.from_dict(encoded)


class Seq2SeqCollator(DataCollatorForSeq2Seq):
    """DataCollatorForSeq2Seq (targets padded with -100) that leaves out the `labels: None` it
    adds to batches without targets (scoring batches), which `.to(device)` cannot move."""

    def __call__(self, features: list[dict[str, Any]], return_tensors: Any = None) -> dict:
        batch = super().__call__(features, return_tensors)
        return {k: v for k, v in batch.items() if v is not None}


def longest_first(a: list[int], b: list[int], budget: int) -> tuple[list[int], list[int]]:
    """Drop tokens from the end of the longer of two texts until both fit `budget` together."""
    a, b = list(a), list(b)
    while len(a) + len(b) > budget:
        (a if len(a) >= len(b) else b).pop()
    return a, b


def with_targets(dataset: Dataset, targets: list[list[int]], values: list[float] | None) -> Dataset:
    """A training set: `labels` replaced by the target token ids of each row's class (or value)."""

    def to_ids(batch: dict[str, list]) -> dict[str, list]:
        if values is None:
            return {"labels": [targets[i] for i in batch["labels"]]}
        low = values[0]
        return {
            "labels": [
                targets[min(max(round((v - low) / REGRESSION_STEP), 0), len(targets) - 1)]
                for v in batch["labels"]
            ]
        }

    return dataset.map(to_ids, batched=True, desc="label words")


def padded_targets(targets: list[list[int]], device: torch.device) -> torch.Tensor:
    """[candidates, longest] target ids, -100 after each one's end."""
    width = max(len(t) for t in targets)
    rows = [t + [-100] * (width - len(t)) for t in targets]
    return torch.tensor(rows, dtype=torch.long, device=device)


def candidate_log_likelihoods(
    model: nn.Module, batch: Batch, targets: torch.Tensor, mean: bool = False
) -> torch.Tensor:
    """[batch, candidates]: each candidate's log-likelihood given each input (one encoder pass).

    The encoder runs once per input; its states are repeated for every candidate, and the
    decoder scores all candidates of the batch in one teacher-forced pass.
    """
    n, c = batch["input_ids"].shape[0], targets.shape[0]
    mask = batch["attention_mask"].repeat_interleave(c, dim=0)
    labels = targets.repeat(n, 1)
    decoder_input_ids = model.prepare_decoder_input_ids_from_labels(labels=labels)
    if is_prompt_learning(model):
        # peft prepends the prompt inside its own forward, so the encoder runs per candidate
        logits = model(
            input_ids=batch["input_ids"].repeat_interleave(c, dim=0),
            attention_mask=mask,
            decoder_input_ids=decoder_input_ids,
            return_dict=True,
        ).logits
    else:
        encoded = model.get_encoder()(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], return_dict=True
        )
        hidden = encoded.last_hidden_state.repeat_interleave(c, dim=0)
        logits = model(
            encoder_outputs=(hidden,),
            attention_mask=mask,
            decoder_input_ids=decoder_input_ids,
            return_dict=True,
        ).logits
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    valid = labels != -100
    picked = log_probs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * valid
    total = picked.sum(-1)
    if mean:
        total = total / valid.sum(-1)
    return total.view(n, c)


class LabelRanker:
    """The seq2seq family's `score` for one task: label-word log-likelihoods, [batch, classes].

    Regression: the grid value whose text ranks first, as one column [batch, 1].
    """

    def __init__(
        self,
        targets: list[list[int]],
        values: list[float] | None = None,
        label_scoring: str = "sum",
    ) -> None:
        if label_scoring not in ("sum", "mean"):
            raise ValueError(f"label_scoring must be sum or mean, got {label_scoring!r}")
        self.targets = targets
        self.values = values
        self.mean = label_scoring == "mean"
        self.padded: dict[torch.device, torch.Tensor] = {}  # built once per device, not per batch

    def __call__(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        device = batch["input_ids"].device
        if device not in self.padded:
            self.padded[device] = padded_targets(self.targets, device)
        scores = candidate_log_likelihoods(model, batch, self.padded[device], self.mean)
        if self.values is None:
            return scores
        grid = torch.tensor(self.values, device=device, dtype=torch.float32)
        return grid[scores.argmax(-1)].unsqueeze(-1)


@torch.inference_mode()
def generate_labels(
    model: nn.Module,
    dataset: Dataset,
    collator: Any,
    tokenizer: PreTrainedTokenizerBase,
    words: list[str],
    batch_size: int,
) -> tuple[list[str], np.ndarray]:
    """Greedy decoding of every row: the text generated and its class (-1: no label word)."""
    model.eval()
    device = next(model.parameters()).device
    longest = max(len(tokenizer(w)["input_ids"]) for w in words)
    index = {w.strip(): i for i, w in enumerate(words)}
    texts: list[str] = []
    features = [c for c in dataset.column_names if c in ("input_ids", "attention_mask")]
    for start in range(0, len(dataset), batch_size):
        rows = dataset.select(range(start, min(start + batch_size, len(dataset))))
        batch = {
            k: v.to(device) for k, v in collator(rows.select_columns(features).to_list()).items()
        }
        out = model.generate(**batch, max_new_tokens=longest + 1, do_sample=False, num_beams=1)
        texts += [t.strip() for t in tokenizer.batch_decode(out, skip_special_tokens=True)]
    classes = np.array([index.get(t, -1) for t in texts], dtype=np.int64)
    return texts, classes
