from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from bertfit.models.family import load_seq2seq
from bertfit.params import PretrainParams
from bertfit.training.objectives.span_corruption import (
    SpanCorruption,
    SpanCorruptionCollator,
    compute_input_and_target_lengths,
    corrupted_lengths,
    random_spans_noise_mask,
    sentinel_ids,
    tokenize_blocks,
)
from tests.conftest import TINY_PRETRAIN

MAX_SEQ_LENGTH = TINY_PRETRAIN["max_seq_length"]


def params(**overrides: object) -> PretrainParams:
    return PretrainParams(**(TINY_PRETRAIN | overrides))


@pytest.fixture(scope="module")
def t5_tokenizer(tiny_t5_dir: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(tiny_t5_dir)


@pytest.fixture(scope="module")
def texts(trec_sample: dict[str, list[dict]]) -> list[str]:
    return [r["text"] for r in trec_sample["train"]]


@pytest.fixture(scope="module")
def blocks(texts: list[str], t5_tokenizer: PreTrainedTokenizerBase) -> Dataset:
    return tokenize_blocks(texts, t5_tokenizer, params(), "test corpus")


def collator(tokenizer: PreTrainedTokenizerBase, **kwargs: object) -> SpanCorruptionCollator:
    _, target_length = compute_input_and_target_lengths(MAX_SEQ_LENGTH, 0.15, 3.0)
    return SpanCorruptionCollator(tokenizer, 0.15, 3.0, MAX_SEQ_LENGTH, target_length, **kwargs)


def reassemble(input_ids: list[int], labels: list[int], sentinels: set[int]) -> list[int]:
    """The original block: each sentinel of the input replaced by its span from the labels."""
    spans: dict[int, list[int]] = {}
    current = None
    for token in labels[:-1]:  # the last is eos
        if token in sentinels:
            current = token
            spans[current] = []
        else:
            spans[current].append(token)
    out: list[int] = []
    for token in input_ids[:-1]:
        out.extend(spans.pop(token) if token in sentinels else [token])
    assert not spans, "every target span is used once"
    return out


def test_lengths_are_t5s() -> None:
    # T5's C4 setting: 568 raw tokens corrupt to 512 inputs and 114 targets
    assert compute_input_and_target_lengths(512, 0.15, 3.0) == (568, 114)
    for inputs_length in range(3, 600):
        tokens_length, targets_length = compute_input_and_target_lengths(inputs_length, 0.15, 3.0)
        assert corrupted_lengths(tokens_length, 0.15, 3.0) == (inputs_length, targets_length)
        assert corrupted_lengths(tokens_length + 1, 0.15, 3.0)[0] > inputs_length


def test_noise_mask_density_and_span_length() -> None:
    rng = np.random.default_rng(0)
    masks = np.stack([random_spans_noise_mask(114, 0.15, 3.0, rng) for _ in range(200)])
    assert abs(masks.mean() - 0.15) <= 0.01
    starts = masks[:, 1:] & ~masks[:, :-1]
    assert abs(masks.sum() / starts.sum() - 3.0) <= 0.3
    assert not masks[:, 0].any() and masks[:, -1].all()  # non-noise first, noise last
    assert len({m.tobytes() for m in masks}) > 150  # random, not one mask repeated


def test_sentinels_are_looked_up_by_name(t5_tokenizer: PreTrainedTokenizerBase) -> None:
    ids = sentinel_ids(t5_tokenizer)
    assert len(ids) == 100
    assert t5_tokenizer.convert_ids_to_tokens(ids.tolist()) == [
        f"<extra_id_{k}>" for k in range(100)
    ]
    # this tokenizer's sentinels ascend, so Google's len(tokenizer) - 1 - k would be wrong
    assert ids[0] != len(t5_tokenizer) - 1
    assert all(i != len(t5_tokenizer) - 1 - k for k, i in enumerate(ids.tolist()))


def test_inputs_and_targets_reassemble_the_block(
    blocks: Dataset, t5_tokenizer: PreTrainedTokenizerBase
) -> None:
    corrupt = collator(t5_tokenizer)
    sentinels = set(corrupt.sentinels.tolist())
    rows = blocks.to_list()
    assert len(rows) >= 50
    torch.manual_seed(0)
    for _ in range(3):
        batch = corrupt(rows)
        for row, input_ids, labels in zip(rows, batch["input_ids"], batch["labels"], strict=True):
            input_ids, labels = input_ids.tolist(), labels.tolist()
            assert reassemble(input_ids, labels, sentinels) == row["input_ids"]
            used = [t for t in input_ids if t in sentinels]
            assert used == corrupt.sentinels[: len(used)].tolist()  # <extra_id_0>, 1, ... in order


def test_collated_lengths_and_eos(blocks: Dataset, t5_tokenizer: PreTrainedTokenizerBase) -> None:
    corrupt = collator(t5_tokenizer)
    rows = blocks.to_list()[:8]
    assert {len(r["input_ids"]) for r in rows} == {corrupt.tokens_length}
    batch = corrupt(rows)
    eos = t5_tokenizer.eos_token_id
    assert batch["input_ids"].shape == (8, MAX_SEQ_LENGTH)
    assert batch["labels"].shape == (8, corrupt.target_length)
    assert (batch["input_ids"][:, -1] == eos).all() and (batch["labels"][:, -1] == eos).all()
    assert batch["attention_mask"].all()

    padded = collator(t5_tokenizer, pad_to_multiple_of=5)(rows)
    width = math.ceil(corrupt.target_length / 5) * 5
    assert padded["labels"].shape == (8, width)
    assert (padded["labels"][:, corrupt.target_length :] == -100).all()
    assert padded["attention_mask"][:, MAX_SEQ_LENGTH:].sum() == 0


def test_masks_are_dynamic_and_seeded(
    blocks: Dataset, t5_tokenizer: PreTrainedTokenizerBase
) -> None:
    corrupt = collator(t5_tokenizer)
    rows = blocks.to_list()[:8]
    torch.manual_seed(3)
    first, second = corrupt(rows), corrupt(rows)
    assert not torch.equal(first["input_ids"], second["input_ids"])
    torch.manual_seed(3)
    again = corrupt(rows)
    for key in first:
        assert torch.equal(first[key], again[key])


def test_tokenizer_without_sentinels_is_refused(tiny_model_dir: Path) -> None:
    # conftest's build_tiny_bert: a WordPiece vocabulary, no <extra_id_k>
    bert = AutoTokenizer.from_pretrained(tiny_model_dir)
    with pytest.raises(ValueError, match=r"T5-style sentinel tokens.*pretrain\.corpus: none"):
        collator(bert)
    with pytest.raises(ValueError, match=r"no seq2seq LM form.*AutoModelForSeq2SeqLM"):
        load_seq2seq(str(tiny_model_dir))


def test_more_spans_than_sentinels_is_refused(t5_tokenizer: PreTrainedTokenizerBase) -> None:
    _, target_length = compute_input_and_target_lengths(2048, 0.15, 3.0)
    with pytest.raises(ValueError, match=r"only 100 sentinel tokens.*pretrain\.max_seq_length"):
        SpanCorruptionCollator(t5_tokenizer, 0.15, 3.0, 2048, target_length)


def test_corpus_errors(tiny_t5_dir: Path, t5_tokenizer: PreTrainedTokenizerBase) -> None:
    with pytest.raises(ValueError, match=r"pretrain\.packing must be true for seq2seq"):
        SpanCorruption(params(packing=False), str(tiny_t5_dir))
    with pytest.raises(ValueError, match=r"pretrain\.packing must be true for seq2seq"):
        tokenize_blocks(["a text"], t5_tokenizer, params(packing=False), "corpus train")
    with pytest.raises(ValueError, match=r"corpus train: the corpus is empty"):
        tokenize_blocks([], t5_tokenizer, params(), "corpus train")
    with pytest.raises(ValueError, match=r"less than one block of 34"):
        tokenize_blocks(["What is a cat?"], t5_tokenizer, params(), "corpus train")


def test_blocks_keep_an_eos_after_each_text(t5_tokenizer: PreTrainedTokenizerBase) -> None:
    texts = ["What is a cat?", "Who wrote Hamlet?"] * 20
    blocks = tokenize_blocks(texts, t5_tokenizer, params(), "corpus train")
    one = t5_tokenizer(texts[:2], add_special_tokens=False)["input_ids"]
    expected = one[0] + [t5_tokenizer.eos_token_id] + one[1] + [t5_tokenizer.eos_token_id]
    assert blocks[0]["input_ids"][: len(expected)] == expected


def test_span_corruption_end_to_end(
    tiny_t5_dir: Path, t5_tokenizer: PreTrainedTokenizerBase, trec_sample: dict
) -> None:
    objective = SpanCorruption(params(heldout_max_blocks=6), str(tiny_t5_dir))
    assert objective.name == "span_corruption"
    model = objective.load_model()
    train = objective.tokenize([r["text"] for r in trec_sample["train"]], t5_tokenizer, "train")
    heldout_ds = objective.tokenize(
        [r["text"] for r in trec_sample["validation"]], t5_tokenizer, "held-out"
    )
    corrupt = objective.collator(t5_tokenizer)
    heldout = objective.heldout(heldout_ds, corrupt)
    assert sum(len(b["input_ids"]) for b in heldout) == 6
    again = objective.heldout(heldout_ds, corrupt)
    assert all(
        torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(heldout, again, strict=True)
    )

    scores = objective.score(model, heldout)
    assert set(scores) == {"loss", "perplexity", "accuracy", "target_tokens"}
    assert math.isfinite(scores["loss"]) and scores["perplexity"] > 1
    assert scores["target_tokens"] == sum(int((b["labels"] != -100).sum()) for b in heldout)

    objective.for_training(model)
    torch.manual_seed(0)
    batch = corrupt(train.to_list()[:8])
    before = objective.score(model, [batch])["loss"]
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(30):
        optimizer.zero_grad()
        model(**batch).loss.backward()
        optimizer.step()
    objective.after_training(model)
    after = objective.score(model, [batch])["loss"]
    assert after < before
    assert objective.export(model) is model
