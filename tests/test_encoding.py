from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from transformers import AutoTokenizer

from bertfit.data.encoding import Encoder, Preprocessing, special_tokens_template, truncate_ids

IDS = list(range(100, 120))  # 20 content ids


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("head", list(range(100, 108))),
        ("tail", list(range(112, 120))),
        ("head_tail", [100, 101, 102, 115, 116, 117, 118, 119]),
    ],
)
def test_truncate_ids(strategy: str, expected: list[int]) -> None:
    assert truncate_ids(IDS, budget=8, strategy=strategy, head_tokens=3) == expected


def test_truncate_ids_leaves_short_inputs_alone() -> None:
    assert truncate_ids(IDS[:5], budget=8, strategy="head_tail", head_tokens=3) == IDS[:5]


def test_head_tail_with_all_head_is_head_only() -> None:
    assert truncate_ids(IDS, 8, "head_tail", head_tokens=8) == truncate_ids(IDS, 8, "head", 0)


def test_paper_split_at_512() -> None:
    long = list(range(2000))
    cut = truncate_ids(long, budget=510, strategy="head_tail", head_tokens=128)
    assert cut[:128] == long[:128] and cut[128:] == long[-382:]


@pytest.fixture()
def tokenizer(tiny_model_dir: Path):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_special_tokens_template_for_bert(tokenizer) -> None:
    assert special_tokens_template(tokenizer) == (
        [tokenizer.cls_token_id],
        [tokenizer.sep_token_id],
    )


def test_encoder_head_tail_keeps_both_ends(tokenizer) -> None:
    words = [f"what{i}" for i in range(60)]  # many word pieces each
    text = " ".join(["where"] * 5 + words + ["city"] * 5)
    enc = Encoder(
        tokenizer, Preprocessing(max_seq_length=24, truncation="head_tail", head_tokens=5)
    )
    ids = enc.encode([text])["input_ids"][0]
    full = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == 24
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    assert ids[1:6] == full[:5] and ids[6:-1] == full[-17:]


def test_encoder_dataset_has_lengths_and_labels(tokenizer) -> None:
    df = pd.DataFrame({"text": ["what is a city ?", "who is it ?"], "label": ["LOC", "HUM"]})
    enc = Encoder(tokenizer, Preprocessing(16, "head", 0))
    ds = enc.dataset(df, {"HUM": 0, "LOC": 1})
    assert ds["labels"] == [1, 0]
    assert ds["length"] == [len(x) for x in ds["input_ids"]]
    assert set(ds.column_names) >= {"input_ids", "attention_mask", "token_type_ids"}


def test_encoder_pairs_use_both_texts_within_limit(tokenizer) -> None:
    df = pd.DataFrame({"text": ["what is it ?"], "text_pair": ["city " * 50], "label": ["a"]})
    ds = Encoder(tokenizer, Preprocessing(20, "head_tail", 4)).dataset(df, {"a": 0})
    assert ds["length"][0] == 20
    assert set(ds["token_type_ids"][0]) == {0, 1}


def test_head_tokens_above_budget_is_an_error(tokenizer) -> None:
    with pytest.raises(
        ValueError,
        match=r"finetune.head_tokens must be in \[0, 14\] "
        r"\(max_seq_length 16 minus 2 special tokens\), got 15",
    ):
        Encoder(tokenizer, Preprocessing(16, "head_tail", 15))
