"""training.budget: finetune's training length and input length, decided from the data."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from bertfit.data.encoding import token_lengths
from bertfit.data.tasks import Task
from bertfit.models.family import load_trained
from bertfit.models.loading import load_tokenizer
from bertfit.params import FinetuneParams, parse_section
from bertfit.training.budget import input_length, training_length
from bertfit.training.finetune import finetune, finetune_arguments
from tests.conftest import TINY_FINETUNE, live_validation, read_jsonl_gz

RULE = {"min_train_steps": 200, "max_train_epochs": 10, "min_validations": 4}


def length_for(examples: int, tmp_path: Path, **overrides: object):
    params = FinetuneParams(
        **(TINY_FINETUNE | RULE | {"per_device_train_batch_size": 24} | overrides)
    )
    return training_length(params, finetune_arguments(params, tmp_path), examples)


def test_a_large_set_keeps_its_epochs_and_validates_within_the_epoch(tmp_path: Path) -> None:
    # mr: 10,251 texts at batch 24 are 428 steps, more than min_train_steps in one epoch
    length = length_for(10251, tmp_path, num_train_epochs=1)
    assert (length.epochs, length.steps, length.steps_per_epoch) == (1, 428, 428)
    assert length.eval_steps == 107  # 4 validations in the one epoch
    assert length.reason == "finetune.num_train_epochs"


def test_a_small_set_trains_more_epochs_up_to_the_cap(tmp_path: Path) -> None:
    # the case: 1,400 texts are 59 steps an epoch; 200 steps need 4 epochs
    length = length_for(1400, tmp_path, num_train_epochs=1)
    assert (length.epochs, length.steps, length.eval_steps) == (4, 236, None)
    assert "fewer than finetune.min_train_steps 200" in length.reason
    # 100 texts: 5 steps an epoch would need 40 epochs; max_train_epochs caps it at 10
    length = length_for(100, tmp_path, num_train_epochs=1)
    assert (length.epochs, length.steps) == (10, 50)
    assert "capped at finetune.max_train_epochs 10" in length.reason
    # never fewer epochs than asked for, and null turns the rule off
    assert length_for(100, tmp_path, num_train_epochs=3, max_train_epochs=3).epochs == 3
    assert length_for(100, tmp_path, num_train_epochs=2, min_train_steps=None).epochs == 2


def test_a_very_small_set_also_gets_a_smaller_batch(tmp_path: Path) -> None:
    rule = {"min_train_steps": 400, "min_train_batch_size": 8}
    # 500 texts (sst2_500, trec_500): 21 steps an epoch at 24 would be 210 in 10 epochs; at 8,
    # 63 an epoch reach 400 in 7
    length = length_for(500, tmp_path, num_train_epochs=1, **rule)
    assert (length.batch_size, length.steps_per_epoch, length.epochs, length.steps) == (
        8, 63, 7, 441
    )  # fmt: skip
    assert length.reason.endswith(
        "fewer than finetune.min_train_steps 400 in finetune.max_train_epochs 10, so the batch "
        "drops from 24 to 8 (finetune.min_train_batch_size)"
    )
    batch24 = {"num_train_epochs": 1, "per_device_train_batch_size": 24}
    params = FinetuneParams(**(TINY_FINETUNE | RULE | rule | batch24))
    assert finetune_arguments(params, tmp_path, length=length).per_device_train_batch_size == 8
    # 100 texts: 13 steps an epoch at 8, still capped at 10 epochs
    length = length_for(100, tmp_path, num_train_epochs=1, **rule)
    assert (length.batch_size, length.epochs, length.steps) == (8, 10, 130)
    assert length.reason.endswith(
        "(finetune.min_train_batch_size), capped at finetune.max_train_epochs 10"
    )
    # a set the epochs suffice for keeps its batch (1,400 texts: 59 an epoch, 7 epochs)
    length = length_for(1400, tmp_path, num_train_epochs=1, **rule)
    assert (length.batch_size, length.epochs, length.steps) == (24, 7, 413)
    assert "batch drops" not in length.reason
    # null, or a floor not below the batch, keeps it
    for floor in (None, 24, 32):
        length = length_for(
            500, tmp_path, num_train_epochs=1, **(rule | {"min_train_batch_size": floor})
        )
        assert (length.batch_size, length.steps) == (24, 210)


def test_max_train_epochs_below_num_train_epochs_is_refused() -> None:
    data = {"finetune": TINY_FINETUNE | {"num_train_epochs": 4, "max_train_epochs": 3}}
    with pytest.raises(ValueError, match=r"max_train_epochs \(3\) must be at least num_train_"):
        parse_section(data, "finetune")


@pytest.fixture(scope="module")
def reviews(shared_datasets: Path) -> pd.DataFrame:
    """Real IMDb reviews, hundreds of words each: long for a 32-token input."""
    rows = read_jsonl_gz(shared_datasets / "imdb" / "train.jsonl.gz", 200)
    df = pd.DataFrame(rows)[["text", "label"]]
    return pd.concat([df[df["label"] == y].head(24) for y in sorted(df["label"].unique())])


def test_long_texts_get_the_long_text_length_with_the_head_scaled(
    tiny_model_dir: Path, reviews: pd.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    tokenizer = load_tokenizer(str(tiny_model_dir))
    config = type("Config", (), {"max_position_embeddings": 128})()
    params = FinetuneParams(**(TINY_FINETUNE | {"long_text_max_seq_length": 64}))
    lengths = token_lengths(tokenizer, reviews)
    with caplog.at_level(logging.WARNING, logger="bertfit.training.budget"):
        chosen = input_length(params, tokenizer, reviews, 32, config, "imdb")
    assert (chosen.max_seq_length, chosen.head_tokens) == (64, 16)  # head 8 of 32 -> 16 of 64
    assert chosen.share_over_configured == pytest.approx((lengths > 32).mean())
    assert chosen.share_truncated == pytest.approx((lengths > 64).mean())
    assert chosen.share_over_configured > 0.5
    assert "finetune reads 64 tokens instead" in caplog.text
    # the model's position limit caps it
    capped = FinetuneParams(**(TINY_FINETUNE | {"long_text_max_seq_length": 4096}))
    assert input_length(capped, tokenizer, reviews, 32, config, "imdb").max_seq_length == 128


def test_short_texts_and_hierarchical_keep_the_configured_length(
    tiny_model_dir: Path,
    reviews: pd.DataFrame,
    trec_sample: dict,
    caplog: pytest.LogCaptureFixture,
) -> None:
    tokenizer = load_tokenizer(str(tiny_model_dir))
    config = type("Config", (), {"max_position_embeddings": 128})()
    questions = pd.DataFrame(trec_sample["train"])[["text", "label"]]
    params = FinetuneParams(**(TINY_FINETUNE | {"long_text_max_seq_length": 64}))
    short = input_length(params, tokenizer, questions, 32, config, "trec")
    assert (short.max_seq_length, short.head_tokens) == (32, 8)
    pieces = FinetuneParams(**(TINY_FINETUNE | {"long_text_max_seq_length": 64,
                                                "truncation": "hierarchical"}))  # fmt: skip
    assert input_length(pieces, tokenizer, reviews, 32, config, "imdb").max_seq_length == 32
    off = FinetuneParams(**TINY_FINETUNE)  # long_text_max_seq_length null: say so, keep 32
    with caplog.at_level(logging.WARNING, logger="bertfit.training.budget"):
        assert input_length(off, tokenizer, reviews, 32, config, "imdb").max_seq_length == 32
    assert "are truncated; finetune.long_text_max_seq_length (None) does not" in caplog.text


def test_finetune_follows_the_rule_and_records_it(
    tmp_path: Path,
    tiny_model_dir: Path,
    reviews: pd.DataFrame,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """48 long reviews at batch 16: 3 steps an epoch, 4 epochs for 12 steps, validated every 2
    steps (6 validations), at the long-text length, which the saved model keeps."""
    task = Task("imdb", ["neg", "pos"])
    params = FinetuneParams(**(TINY_FINETUNE | {
        "num_train_epochs": 1, "min_train_steps": 12, "max_train_epochs": 10,
        "min_validations": 6, "long_text_max_seq_length": 64, "selection_tolerance": "auto",
    }))  # fmt: skip
    with caplog.at_level(logging.INFO, logger="bertfit.training.finetune"):
        metrics = finetune(str(tiny_model_dir), task, reviews, reviews, params, 32,
                           tmp_path / "model", tmp_path / "reports")  # fmt: skip
    plan = next(r.getMessage() for r in caplog.records if "optimisation steps" in r.getMessage())
    assert "12 optimisation steps" in plan and "epochs 4 of 3 steps" in plan
    assert "validation every 2 steps" in plan and "head_tail at 64 tokens (head 16)" in plan
    curve = live_validation(tmp_path / "reports", ["accuracy", "accuracy_se"])
    assert curve["step"].tolist() == [2, 4, 6, 8, 10, 12]
    assert (metrics["train_steps"], metrics["planned_epochs"], metrics["stopped_early"]) == (
        12, 4, False
    )  # fmt: skip
    assert (metrics["max_seq_length"], metrics["head_tokens"]) == (64, 16)
    # tolerance auto: each validation's bootstrap error is recorded, the peak's is the margin,
    # and the kept row is the latest within it
    peak = curve.set_index("step").loc[metrics["peak_step"]]
    assert (curve["accuracy_se"] > 0).all() and metrics["selection_margin"] == peak["accuracy_se"]
    within = curve[curve["accuracy"] >= peak["accuracy"] - peak["accuracy_se"]]
    assert metrics["best_step"] == within["step"].max() >= metrics["peak_step"]
    trained = load_trained(tmp_path / "model")
    prep = trained.manifest.preprocessing
    assert (prep.max_seq_length, prep.head_tokens) == (64, 16)
    manifest = json.loads((tmp_path / "model" / "bertfit_model.json").read_text())
    assert manifest["preprocessing"]["max_seq_length"] == 64


@pytest.mark.parametrize(("tolerance", "epochs", "best"), [(0, 3, 3), ("auto", 6, 18)])
def test_early_stopping_ends_the_run_after_patience_validations(
    tmp_path: Path, tiny_model_dir: Path, trec_sample: dict, tolerance: Any, epochs: int, best: int
) -> None:
    """At a learning rate too small to move the argmax, no validation beats the first: with
    patience 2 the run stops after the third of its six planned validations. With a tolerance,
    each equal validation is kept (within it of the peak), so the run goes on to the end."""
    rows = pd.DataFrame(trec_sample["train"][:48])[["text", "label"]]
    task = Task("trec", sorted(rows["label"].unique()))
    params = FinetuneParams(**(TINY_FINETUNE | {
        "num_train_epochs": 6, "learning_rate": 1e-12, "early_stopping_patience": 2,
        "metric_for_best_model": "accuracy", "selection_tolerance": tolerance,
    }))  # fmt: skip
    metrics = finetune(str(tiny_model_dir), task, rows, rows, params, 32,
                       tmp_path / "model", tmp_path / "reports")  # fmt: skip
    curve = live_validation(tmp_path / "reports", ["accuracy"])
    assert curve["step"].tolist() == [3 * e for e in range(1, epochs + 1)]  # 3 steps an epoch
    assert curve["accuracy"].nunique() == 1
    assert (metrics["train_steps"], metrics["stopped_early"], metrics["best_step"]) == (
        3 * epochs, epochs < 6, best
    )  # fmt: skip
