"""T5's span-corruption objective for further pretraining of the seq2seq family (Raffel et al.
2020, 3.1.4 and 3.3.4).

A random 15 % of each block's tokens, in spans of mean length 3, is dropped from the encoder
input; each span is replaced there by one sentinel token and the decoder learns to write
`<extra_id_0> span 0 <extra_id_1> span 1 ... </s>`. Transformers ships this only as the Flax
example (examples/flax/language-modeling/run_t5_mlm_flax.py: FlaxDataCollatorForT5MLM,
random_spans_noise_mask, compute_input_and_target_lengths); this is a torch port of it, so the
same Trainer and stage run both families.

Where the port differs, and why:

- Sentinel ids are looked up by name (`<extra_id_k>`), never computed as `len(tokenizer) - 1 - k`
  as the Flax collator does: that holds for Google's T5 vocabulary only, and the tokenizers
  trained from scratch here (models.scratch) put the sentinels in ascending order, so the
  computed ids would name ordinary pieces and the model would learn nonsense.
- Masks are dynamic like MLMCollator's (a fresh mask every time a block is seen), drawn from a
  numpy generator seeded from torch's global RNG, so transformers' `set_seed`, the Trainer's
  checkpointed RNG state and the fixed held-out masks (common.fixed_masks) make them reproducible.
- Every document ends with `</s>` before packing, as in the Flax example (its tokenizer call adds
  the eos of each text); T5's own C4 pipeline concatenates without one. The corpora here are
  mostly short texts (questions, tweets, reviews), many to a block, and without a boundary
  the model would be taught to fill spans across unrelated texts.
- The span counts of compute_input_and_target_lengths and random_spans_noise_mask come from one
  function, so a block of the expanded length always corrupts to exactly `max_seq_length`
  tokens (the Flax pair disagrees for short blocks, mean span 1 and density 0.5's length
  hack, and its collator then fails on the lengths).

Inputs are always packed (no padding, every input exactly `max_seq_length` tokens); scores on
the held-out blocks, corrupted once with a fixed seed, are the mean cross-entropy over target
tokens, its perplexity and teacher-forced accuracy.
"""

from __future__ import annotations

import logging
import math
from typing import Any, ClassVar

import numpy as np
import torch
from datasets import Dataset
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from bertfit.models.family import load_seq2seq, pad_multiple
from bertfit.models.loading import check_max_seq_length
from bertfit.params import PretrainParams
from bertfit.training.objectives.common import (
    check_corpus,
    heldout_batches,
    heldout_scores,
    tokenize_and_pack,
)

log = logging.getLogger(__name__)

SENTINEL_TOKEN = "<extra_id_{}>"


def noise_counts(
    length: int, noise_density: float, mean_noise_span_length: float
) -> tuple[int, int]:
    """(noise tokens, noise spans) of a block of `length` tokens, as T5 counts them.

    At least one noise and one non-noise token and one span; at most as many spans as there are
    noise tokens and non-noise tokens, since spans and the gaps between them are non-empty.
    """
    if length < 2:
        raise ValueError(f"span corruption needs blocks of at least 2 tokens, got {length}")
    noise = min(max(round(length * noise_density), 1), length - 1)
    spans = max(round(noise / mean_noise_span_length), 1)
    return noise, min(spans, noise, length - noise)


def corrupted_lengths(
    tokens_length: int, noise_density: float, mean_noise_span_length: float
) -> tuple[int, int]:
    """(input length, target length) of a corrupted block, eos included in both."""
    noise, spans = noise_counts(tokens_length, noise_density, mean_noise_span_length)
    # inputs: the kept tokens and one sentinel per span; targets: the spans, each after its
    # sentinel
    return tokens_length - noise + spans + 1, noise + spans + 1


def compute_input_and_target_lengths(
    inputs_length: int, noise_density: float, mean_noise_span_length: float
) -> tuple[int, int]:
    """(raw block length, target length) such that a corrupted block is `inputs_length` long.

    The longest raw block whose corrupted input, eos included, still fits `inputs_length`; with
    T5's 512 / 0.15 / 3 that is 568 raw tokens and 114 target tokens.
    """
    if inputs_length < 3:
        raise ValueError(
            f"params.yaml: pretrain.max_seq_length must be at least 3 for span corruption "
            f"(a kept token, a sentinel and eos), got {inputs_length}"
        )

    def input_length(tokens_length: int) -> int:
        return corrupted_lengths(tokens_length, noise_density, mean_noise_span_length)[0]

    tokens_length = inputs_length
    while tokens_length > 2 and input_length(tokens_length) > inputs_length:
        tokens_length -= 1
    while input_length(tokens_length + 1) <= inputs_length:
        tokens_length += 1
    if input_length(tokens_length) != inputs_length:
        raise ValueError(
            f"params.yaml: no block length corrupts to exactly pretrain.max_seq_length="
            f"{inputs_length} tokens with noise_density={noise_density} and "
            f"mean_noise_span_length={mean_noise_span_length}; raise max_seq_length"
        )
    targets_length = corrupted_lengths(tokens_length, noise_density, mean_noise_span_length)[1]
    # T5's hack for density 0.5: one token less makes targets as long as inputs (a round number)
    if noise_density == 0.5 and targets_length > inputs_length:
        shorter = corrupted_lengths(tokens_length - 1, noise_density, mean_noise_span_length)
        if shorter[0] == inputs_length:
            tokens_length, targets_length = tokens_length - 1, shorter[1]
    return tokens_length, targets_length


def random_segmentation(num_items: int, num_segments: int, rng: np.random.Generator) -> np.ndarray:
    """Lengths of a uniformly random split of num_items into num_segments non-empty parts."""
    first_in_segment = np.zeros(num_items, dtype=bool)
    # the segment starts other than position 0: num_segments - 1 of the num_items - 1 positions
    starts = rng.choice(num_items - 1, size=num_segments - 1, replace=False) + 1
    first_in_segment[starts] = True
    first_in_segment[0] = True
    return np.diff(np.append(np.flatnonzero(first_in_segment), num_items))


def random_spans_noise_mask(
    length: int, noise_density: float, mean_noise_span_length: float, rng: np.random.Generator
) -> np.ndarray:
    """T5's noise mask: True at the corrupted tokens, in random spans, non-noise first.

    round(length * density) noise tokens in max(1, round(noise / mean_span)) spans; noise and
    non-noise are each split at random into that many non-empty spans, which alternate,
    beginning with non-noise (so the last token is always noise). Under these constraints every
    mask is equally likely.
    """
    noise, spans = noise_counts(length, noise_density, mean_noise_span_length)
    noise_lengths = random_segmentation(noise, spans, rng)
    kept_lengths = random_segmentation(length - noise, spans, rng)
    interleaved = np.stack([kept_lengths, noise_lengths], axis=1).reshape(-1)
    span_number = np.repeat(np.arange(2 * spans), interleaved)
    return span_number % 2 == 1


def sentinel_ids(tokenizer: PreTrainedTokenizerBase) -> np.ndarray:
    """The ids of `<extra_id_0>`, `<extra_id_1>`, ... by name, as many as the tokenizer has."""
    ids: list[int] = []
    while len(ids) < len(tokenizer):
        token = SENTINEL_TOKEN.format(len(ids))
        token_id = tokenizer.convert_tokens_to_ids(token)
        # unknown tokens map to unk (or None); the round trip tells a real sentinel apart
        if token_id is None or tokenizer.convert_ids_to_tokens(token_id) != token:
            break
        ids.append(token_id)
    if not ids:
        raise ValueError(
            f"{type(tokenizer).__name__}: span corruption needs T5-style sentinel tokens "
            f"<extra_id_0>, <extra_id_1>, ... and this tokenizer has none (a BERT or BART "
            f"vocabulary). Pretrain a T5-family model, or set pretrain.corpus: none"
        )
    return np.asarray(ids, dtype=np.int64)


def fill_spans(tokens: np.ndarray, spans: np.ndarray, sentinels: np.ndarray) -> np.ndarray:
    """Each row's runs of True in `spans` replaced by one sentinel, in order.

    Every row must have the same number of runs and of True positions (true of T5's masks for
    blocks of one length), so the rows stay equally long.
    """
    first = spans.copy()
    first[:, 1:] &= ~spans[:, :-1]
    span_index = np.cumsum(first, axis=1) - 1
    filled = np.where(first, sentinels[np.maximum(span_index, 0)], tokens)
    return filled[~spans | first].reshape(len(tokens), -1)


class SpanCorruptionCollator:
    """Corrupt packed blocks of raw tokens into T5 inputs and targets, a fresh mask every call.

    Examples are `{"input_ids": [...]}` blocks of the expanded length (compute_input_and_target
    _lengths), without eos. Returns `input_ids` and `attention_mask` [batch, input_length] (the
    kept tokens and sentinels, eos last) and `labels` [batch, target_length] (each sentinel
    followed by its span, eos last); T5 builds decoder_input_ids from labels itself. With
    pad_to_multiple_of, inputs are padded with pad / attention 0 and labels with -100.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        noise_density: float,
        mean_noise_span_length: float,
        input_length: int,
        target_length: int,
        pad_to_multiple_of: int | None = None,
    ) -> None:
        self.sentinels = sentinel_ids(tokenizer)
        if tokenizer.eos_token_id is None or tokenizer.pad_token_id is None:
            raise ValueError(
                f"{type(tokenizer).__name__}: span corruption needs an eos and a pad token "
                f"(T5's </s> and <pad>), got eos={tokenizer.eos_token}, pad={tokenizer.pad_token}"
            )
        self.tokenizer = tokenizer
        self.noise_density = noise_density
        self.mean_noise_span_length = mean_noise_span_length
        self.input_length = input_length
        self.target_length = target_length
        self.pad_to_multiple_of = pad_to_multiple_of
        self.tokens_length, expected_target = compute_input_and_target_lengths(
            input_length, noise_density, mean_noise_span_length
        )
        if expected_target != target_length:
            raise ValueError(
                f"target_length {target_length} does not match input_length {input_length}: "
                f"corruption gives {expected_target} target tokens (compute_input_and_target"
                f"_lengths)"
            )
        _, spans = noise_counts(self.tokens_length, noise_density, mean_noise_span_length)
        if spans > len(self.sentinels):
            raise ValueError(
                f"a block of {self.tokens_length} tokens is corrupted into {spans} spans, but "
                f"the tokenizer has only {len(self.sentinels)} sentinel tokens <extra_id_k>: "
                f"lower pretrain.max_seq_length ({input_length}) or pretrain.noise_density "
                f"({noise_density}), or raise pretrain.mean_noise_span_length "
                f"({mean_noise_span_length})"
            )

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        tokens = np.asarray([np.asarray(e["input_ids"], dtype=np.int64) for e in examples])
        if tokens.ndim != 2 or tokens.shape[1] != self.tokens_length:
            lengths = sorted({len(e["input_ids"]) for e in examples})
            raise ValueError(
                f"span corruption takes packed blocks of {self.tokens_length} tokens (for "
                f"max_seq_length {self.input_length}), got blocks of {lengths} tokens"
            )
        # torch's global RNG seeds the mask, so set_seed and fixed_masks make it reproducible
        rng = np.random.default_rng(int(torch.randint(2**31, ())))
        noise = np.stack(
            [
                random_spans_noise_mask(
                    self.tokens_length, self.noise_density, self.mean_noise_span_length, rng
                )
                for _ in range(len(tokens))
            ]
        )
        eos = np.full((len(tokens), 1), self.tokenizer.eos_token_id, dtype=np.int64)
        input_ids = np.concatenate([fill_spans(tokens, noise, self.sentinels), eos], axis=1)
        labels = np.concatenate([fill_spans(tokens, ~noise, self.sentinels), eos], axis=1)
        if input_ids.shape[1] != self.input_length or labels.shape[1] != self.target_length:
            raise RuntimeError(
                f"corrupted lengths {input_ids.shape[1]} / {labels.shape[1]} differ from the "
                f"planned {self.input_length} / {self.target_length}"
            )
        input_ids = self.pad(input_ids, self.tokenizer.pad_token_id)
        attention_mask = np.zeros_like(input_ids)
        attention_mask[:, : self.input_length] = 1
        return {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(attention_mask),
            "labels": torch.from_numpy(self.pad(labels, -100)),
        }

    def pad(self, ids: np.ndarray, value: int) -> np.ndarray:
        if not self.pad_to_multiple_of:
            return ids
        width = math.ceil(ids.shape[1] / self.pad_to_multiple_of) * self.pad_to_multiple_of
        return np.pad(ids, ((0, 0), (0, width - ids.shape[1])), constant_values=value)


def check_packing(params: PretrainParams) -> None:
    if not params.packing:
        raise ValueError(
            "params.yaml: pretrain.packing must be true for seq2seq models, got false: span "
            "corruption packs the corpus into full blocks so that every corrupted input is "
            f"exactly pretrain.max_seq_length={params.max_seq_length} tokens"
        )


def tokenize_blocks(
    texts: list[str], tokenizer: PreTrainedTokenizerBase, params: PretrainParams, where: str
) -> Dataset:
    """The texts, each ending in eos, concatenated and cut into raw blocks of the expanded length.

    The remainder of each batch of 2000 texts is dropped (run_mlm, the Flax example;
    common.tokenize_and_pack).
    """
    check_packing(params)
    check_corpus(texts, params, where)
    block, _ = compute_input_and_target_lengths(
        params.max_seq_length, params.noise_density, params.mean_noise_span_length
    )
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError(
            f"{type(tokenizer).__name__}: span corruption needs an eos token (T5's </s>)"
        )

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        encoded = tokenizer(
            batch["text"], add_special_tokens=False, return_attention_mask=False, verbose=False
        )
        return {"input_ids": [[*ids, eos] for ids in encoded["input_ids"]]}

    block_name = (
        f"{block} (which span corruption shortens to pretrain.max_seq_length="
        f"{params.max_seq_length})"
    )
    return tokenize_and_pack(texts, tokenize, block, block_name, where)


def target_sums(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> tuple[float, int, int]:
    """A held-out batch's summed target-token loss, teacher-forced correct tokens and targets."""
    logits = model(**batch).logits
    labels = batch["labels"]
    scored = labels != -100
    loss = nn.functional.cross_entropy(logits[scored].float(), labels[scored], reduction="sum")
    correct = int((logits[scored].argmax(-1) == labels[scored]).sum())
    return float(loss), correct, int(scored.sum())


def span_scores(model: PreTrainedModel, batches: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Held-out target-token loss (token-weighted), perplexity and teacher-forced accuracy."""
    return heldout_scores(model, batches, target_sums, "target_tokens")


class SpanCorruption:
    """Further pretraining with T5's span-corruption objective, as the pretrain stage runs it."""

    name = "span_corruption"
    # the LM head is the decoder's output layer, loaded with the model: no head warm-up
    fresh_head = False
    # as MaskedLM; the blocks hold input_ids only, so there is nothing to drop anyway
    trainer_arguments: ClassVar[dict[str, Any]] = {"remove_unused_columns": False}

    def __init__(self, params: PretrainParams, model_name: str) -> None:
        check_packing(params)
        self.params = params
        self.model_name = model_name
        self.tokens_length, self.target_length = compute_input_and_target_lengths(
            params.max_seq_length, params.noise_density, params.mean_noise_span_length
        )
        log.info(
            "span corruption: raw blocks of %d tokens -> inputs of %d, targets of %d "
            "(noise_density %s, mean_noise_span_length %s)",
            self.tokens_length,
            params.max_seq_length,
            self.target_length,
            params.noise_density,
            params.mean_noise_span_length,
        )

    def load_model(self) -> PreTrainedModel:
        model = load_seq2seq(self.model_name)
        # T5's relative positions set no limit; families with absolute positions do
        check_max_seq_length(model.config, self.params.max_seq_length, self.model_name)
        return model

    def tokenize(self, texts: list[str], tokenizer: PreTrainedTokenizerBase, where: str) -> Dataset:
        return tokenize_blocks(texts, tokenizer, self.params, where)

    def collator(self, tokenizer: PreTrainedTokenizerBase) -> SpanCorruptionCollator:
        return SpanCorruptionCollator(
            tokenizer,
            noise_density=self.params.noise_density,
            mean_noise_span_length=self.params.mean_noise_span_length,
            input_length=self.params.max_seq_length,
            target_length=self.target_length,
            pad_to_multiple_of=pad_multiple(),
        )

    def heldout(
        self, dataset: Dataset, collator: SpanCorruptionCollator
    ) -> list[dict[str, torch.Tensor]]:
        """The held-out blocks to score, capped and corrupted once with a fixed seed."""
        _, batches = heldout_batches(dataset, collator, self.params)
        return batches

    def score(self, model: PreTrainedModel, heldout: list[dict[str, torch.Tensor]]) -> dict:
        return span_scores(model, heldout)

    def for_training(self, model: PreTrainedModel) -> None:
        """Nothing to change: T5's own forward computes the loss over the targets."""

    def after_training(self, model: PreTrainedModel) -> None:
        """Nothing to undo."""

    def export(self, model: PreTrainedModel) -> PreTrainedModel:
        """The whole seq2seq model: finetune and multitask score label words with its decoder."""
        return model
