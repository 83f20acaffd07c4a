"""Tokenisation with the paper's truncation strategies (Sun et al. 2019, section 5.3.1).

head-only keeps the first tokens, tail-only the last, head+tail the first `head_tokens` and the
last (budget - head_tokens); the paper's best is 128 + 382 at 512. Tokenizers only truncate from
one end, so single texts are tokenised in full and cut here; sentence pairs use the tokenizer's
own `longest_first` truncation of the pair (head-only on each side). `hierarchical` keeps the
whole text as a list of max_seq_length pieces (models.pooling encodes each and pools them).

The settings travel with the model (in its manifest, models.manifest), so evaluate and later
users encode exactly as finetune did instead of repeating the values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from datasets import Dataset
from datasets.fingerprint import generate_random_fingerprint
from transformers import PreTrainedTokenizerBase

from bertfit.data.tasks import Task

STRATEGIES = ("head_tail", "head", "tail", "hierarchical")


@dataclass(frozen=True)
class Preprocessing:
    max_seq_length: int
    truncation: str
    head_tokens: int
    # hierarchical: the text in pieces of max_seq_length (special tokens included), a piece
    # starting every chunk_stride tokens (None: right after the previous one), at most max_chunks
    chunk_stride: int | None = None
    max_chunks: int | None = None

    def validate(self, num_special_tokens: int, section: str = "finetune") -> None:
        if self.truncation not in STRATEGIES:
            raise ValueError(
                f"params.yaml: {section}.truncation must be one of {list(STRATEGIES)}, "
                f"got {self.truncation!r}"
            )
        budget = self.max_seq_length - num_special_tokens
        if self.truncation == "head_tail" and not 0 <= self.head_tokens <= budget:
            raise ValueError(
                f"params.yaml: {section}.head_tokens must be in [0, {budget}] (max_seq_length "
                f"{self.max_seq_length} minus {num_special_tokens} special tokens), "
                f"got {self.head_tokens}"
            )
        if self.truncation == "hierarchical":
            if self.chunk_stride is not None and not 0 < self.chunk_stride <= budget:
                raise ValueError(
                    f"params.yaml: {section}.chunk_stride must be in [1, {budget}] (a piece's "
                    f"{budget} text tokens; null = no overlap), got {self.chunk_stride}"
                )
            if self.max_chunks is None or self.max_chunks < 1:
                raise ValueError(
                    f"params.yaml: {section}.max_chunks must be at least 1, got {self.max_chunks}"
                )

    def pieces(self, ids: list[int], budget: int) -> list[list[int]]:
        """hierarchical: the token ids cut into at most max_chunks pieces of `budget` ids."""
        stride = self.chunk_stride or budget
        starts = range(0, max(len(ids) - budget, 0) + stride, stride)
        return [ids[s : s + budget] for s in starts][: self.max_chunks]


def token_lengths(tokenizer: Any, frame: pd.DataFrame) -> np.ndarray:
    """Each row's length in tokens, special tokens included, before any truncation."""
    pairs = list(frame["text_pair"]) if "text_pair" in frame else None
    ids = tokenizer(list(frame["text"]), pairs, truncation=False, verbose=False)["input_ids"]
    return np.array([len(x) for x in ids])


def truncate_ids(ids: list[int], budget: int, strategy: str, head_tokens: int) -> list[int]:
    """Cut a token id list to `budget` ids by the named strategy."""
    if len(ids) <= budget:
        return ids
    if strategy == "head":
        return ids[:budget]
    if strategy == "tail":
        return ids[len(ids) - budget :]
    head = min(head_tokens, budget)
    tail = budget - head
    return ids[:head] + (ids[len(ids) - tail :] if tail else [])


def special_tokens_template(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """The ids a tokenizer puts before and after a single text ([CLS] … [SEP] for BERT).

    Found by probing rather than by name, so RoBERTa's <s> … </s> or T5's … </s> work too.
    """
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    for i in range(len(full) - len(bare) + 1):
        if full[i : i + len(bare)] == bare:
            return full[:i], full[i + len(bare) :]
    raise ValueError(f"cannot locate the text inside {type(tokenizer).__name__}'s special tokens")


def label_values(df: pd.DataFrame, task: Task, split: str) -> list[Any]:
    """A split's `labels`: class ids in the task's label order, or floats (regression)."""
    if task.problem == "regression":
        return df["label"].astype(float).tolist()
    unknown = sorted(set(df["label"]) - set(task.labels))
    if unknown:
        raise ValueError(f"{task.name} [{split}]: labels {unknown} are not in {task.labels}")
    index = {label: i for i, label in enumerate(task.labels)}
    return [index[label] for label in df["label"]]


class Encoder:
    """Turns frames of `text` [+ `text_pair`] into model inputs under one Preprocessing."""

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, prep: Preprocessing, section: str = "finetune"
    ) -> None:
        self.tokenizer = tokenizer
        self.prep = prep
        self.prefix, self.suffix = special_tokens_template(tokenizer)
        self.budget = prep.max_seq_length - len(self.prefix) - len(self.suffix)
        prep.validate(len(self.prefix) + len(self.suffix), section)
        self.with_token_types = "token_type_ids" in tokenizer.model_input_names
        self.hierarchical = prep.truncation == "hierarchical"

    def encode(self, texts: list[str], text_pairs: list[str] | None = None) -> dict[str, list]:
        if text_pairs is not None and self.hierarchical:
            raise ValueError(
                "finetune.truncation: hierarchical pooling splits single texts; a sentence-pair "
                "task (text_pair) needs head_tail, head or tail"
            )
        if text_pairs is not None:
            enc = self.tokenizer(
                texts, text_pairs, truncation="longest_first", max_length=self.prep.max_seq_length
            )
            return {
                k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc
            }
        # no truncation here on purpose: the strategies need the whole text's ids
        ids = self.tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
        if self.hierarchical:  # each example: a list of pieces, each with its special tokens
            input_ids = [
                [self.prefix + p + self.suffix for p in self.prep.pieces(x, self.budget)]
                for x in ids
            ]
            out: dict[str, list] = {
                "input_ids": input_ids,
                "attention_mask": [[[1] * len(p) for p in x] for x in input_ids],
            }
            if self.with_token_types:
                out["token_type_ids"] = [[[0] * len(p) for p in x] for x in input_ids]
            return out
        input_ids = [
            self.prefix
            + truncate_ids(x, self.budget, self.prep.truncation, self.prep.head_tokens)
            + self.suffix
            for x in ids
        ]
        out = {
            "input_ids": input_ids,
            "attention_mask": [[1] * len(x) for x in input_ids],
        }
        if self.with_token_types:
            out["token_type_ids"] = [[0] * len(x) for x in input_ids]
        return out

    def _map_batch(self, batch: dict[str, list]) -> dict[str, Any]:
        out = self.encode(batch["text"], batch.get("text_pair"))
        if self.hierarchical:  # the tokens the encoder sees: what batching should group by
            out["length"] = [sum(len(p) for p in x) for x in out["input_ids"]]
        else:
            out["length"] = [len(x) for x in out["input_ids"]]
        return out

    def labelled(self, df: pd.DataFrame, task: Task, split: str) -> Dataset:
        """dataset() with `labels`: class ids in the task's label order, or floats (regression)."""
        return self.dataset(df).add_column("labels", label_values(df, task, split))

    def inputs(self, df: pd.DataFrame, task: Task) -> Dataset:
        """Unlabelled rows as model inputs, for prediction (the task adds nothing here)."""
        return self.dataset(df)

    def dataset(self, df: pd.DataFrame, label2id: dict[str, int] | None = None) -> Dataset:
        """A tokenised datasets.Dataset with `length` (and `labels` when label2id is given)."""
        cols = ["text"] + (["text_pair"] if "text_pair" in df.columns else [])
        ds = Dataset.from_pandas(df[cols].reset_index(drop=True), preserve_index=False)
        # the rows live in memory and are never cached to disk, so the fingerprint only names
        # them: a random one spares datasets from hashing the tokenizer on every call (dill over
        # the whole vocabulary, about 90 ms: most of a single text's time in bertfit serve)
        ds = ds.map(
            self._map_batch,
            batched=True,
            batch_size=1000,
            remove_columns=cols,
            desc="tokenising",
            new_fingerprint=generate_random_fingerprint(),
        )
        if label2id is not None:
            ds = ds.add_column("labels", [label2id[label] for label in df["label"]])
        return ds
