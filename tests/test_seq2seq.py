"""The text-to-text family on a tiny T5 built here (sentencepiece tokenizer trained in tmp)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import Adafactor, AutoModelForSeq2SeqLM, AutoTokenizer

from bertfit.data.encoding import Preprocessing
from bertfit.data.tasks import Task
from bertfit.inference import predict_scores
from bertfit.models.family import Seq2SeqFamily, family_for, load_trained
from bertfit.models.loading import load_tokenizer
from bertfit.models.text2text import (
    LabelRanker,
    Text2TextEncoder,
    label_targets,
    regression_values,
    with_targets,
)
from bertfit.params import FinetuneParams
from bertfit.training.finetune import finetune
from bertfit.training.optim import layerwise_param_groups
from bertfit.training.sampling import task_probabilities
from bertfit.training.trainer import BertfitTrainer, training_arguments
from tests.conftest import TINY_FINETUNE, live_curve

PREP = Preprocessing(48, "head_tail", 8)


def seq2seq_params(**overrides: object) -> FinetuneParams:
    base = TINY_FINETUNE | {
        "optimizer": "adafactor",
        "learning_rate": 3e-3,
        "layer_decay": 1.0,
        "weight_decay": 0.0,
        "warmup_ratio": 0.0,
        "num_train_epochs": 6,
        "per_device_train_batch_size": 8,
        "logging_steps": 2,
    }
    return FinetuneParams(**(base | overrides))


def separable(n: int, seed: int) -> pd.DataFrame:
    """Questions whose label is decided by one word: 'what' -> a, 'who' -> b."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        label = str(rng.choice(["yes", "no"]))
        word = "what" if label == "yes" else "who"
        tail = " ".join(rng.choice(["is", "the", "name", "of", "city", "river", "was"], 4))
        rows.append({"text": f"{word} {tail} ?", "label": label})
    return pd.DataFrame(rows)


def test_family_comes_from_the_config_not_the_name(tmp_path: Path, tiny_t5_dir: Path) -> None:
    renamed = tmp_path / "bert-base-uncased"  # a misleading name: the config decides
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir)
    model.save_pretrained(renamed)
    AutoTokenizer.from_pretrained(tiny_t5_dir).save_pretrained(renamed)
    assert family_for(str(renamed)).name == "seq2seq"


def test_inputs_carry_the_prefix_and_targets_the_label_words(tiny_t5_dir: Path) -> None:
    tokenizer = load_tokenizer(str(tiny_t5_dir))
    task = Task("trec", ["DESC", "HUM"], label_words={"DESC": "description", "HUM": "human"})
    encoder = Text2TextEncoder(tokenizer, PREP)
    df = pd.DataFrame({"text": ["Who was the first man on the moon ?"], "label": ["HUM"]})
    ds = encoder.labelled(df, task, "train")
    decoded = tokenizer.decode(ds[0]["input_ids"], skip_special_tokens=True)
    assert decoded.startswith("trec:") and "moon" in decoded
    assert ds[0]["input_ids"][-1] == tokenizer.eos_token_id
    assert ds[0]["labels"] == 1  # class ids, as the encoder family
    targets = label_targets(tokenizer, task, task.words())
    trained_on = with_targets(ds, targets, None)
    assert trained_on[0]["labels"] == tokenizer("human")["input_ids"]

    long = pd.DataFrame({"text": [" ".join(["word"] * 200)], "label": ["DESC"]})
    assert len(encoder.labelled(long, task, "train")[0]["input_ids"]) == PREP.max_seq_length


def test_pairs_are_written_as_t5_does(tiny_t5_dir: Path) -> None:
    tokenizer = load_tokenizer(str(tiny_t5_dir))
    task = Task("mrpc", ["no", "yes"])
    df = pd.DataFrame({"text": ["the city"], "text_pair": ["the river"], "label": ["yes"]})
    ids = Text2TextEncoder(tokenizer, PREP).labelled(df, task, "train")[0]["input_ids"]
    text = tokenizer.decode(ids, skip_special_tokens=True)
    assert text.replace(" ", "") == "mrpcsentence1:thecitysentence2:theriver"


@torch.no_grad()
def naive_scores(model: torch.nn.Module, tokenizer, texts_ids: list, targets: list) -> np.ndarray:
    """One forward per (row, label) with the loss of the label's tokens: the obvious loop."""
    out = np.zeros((len(texts_ids), len(targets)))
    for i, ids in enumerate(texts_ids):
        for j, target in enumerate(targets):
            loss = model(input_ids=torch.tensor([ids]), labels=torch.tensor([target])).loss
            out[i, j] = -float(loss) * len(target)  # the loss is the mean over target tokens
    return out


@pytest.mark.parametrize("label_scoring", ["sum", "mean"])
def test_rank_scores_equal_a_naive_loop_per_label(tiny_t5_dir: Path, label_scoring: str) -> None:
    torch.manual_seed(0)
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir).eval()
    tokenizer = load_tokenizer(str(tiny_t5_dir))
    task = Task(
        "q", ["a", "b", "c"], label_words={"a": "city", "b": "the name of the river", "c": "?"}
    )
    targets = label_targets(tokenizer, task, task.words())
    assert len({len(t) for t in targets}) > 1  # unequal lengths: padding must not count
    df = pd.DataFrame({"text": ["what is it ?", "who was the man in the city ?"], "label": "a"})
    ds = Text2TextEncoder(tokenizer, PREP).labelled(df, task, "test")
    family = Seq2SeqFamily()
    ranker = LabelRanker(targets, None, label_scoring)
    scores = predict_scores(model, ds, 2, family.collator(tokenizer, PREP), ranker)
    expected = naive_scores(model, tokenizer, ds["input_ids"], targets)
    if label_scoring == "mean":
        expected = expected / np.array([len(t) for t in targets])
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-4)


def test_regression_targets_are_numbers_on_a_0_2_grid(tiny_t5_dir: Path) -> None:
    values = regression_values(pd.Series([0.0, 1.37, 5.0]))
    assert values[:3] == [0.0, 0.2, 0.4] and values[-1] == 5.0 and len(values) == 26
    tokenizer = load_tokenizer(str(tiny_t5_dir))
    task = Task("stsb", [], problem="regression", metric="pearson")
    family = Seq2SeqFamily()
    config = family.head_config(task, pd.DataFrame({"label": [0.0, 1.37, 5.0]}), "sum")
    df = pd.DataFrame({"text": ["a", "b"], "text_pair": ["c", "d"], "label": [1.37, 4.9]})
    ds = family.training_set(
        family.encoder(tokenizer, PREP).labelled(df, task, "train"), task, tokenizer, config
    )
    assert tokenizer.decode(ds[0]["labels"], skip_special_tokens=True) == "1.4"
    assert tokenizer.decode(ds[1]["labels"], skip_special_tokens=True) == "4.8"
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir)
    scores = predict_scores(
        model,
        ds.remove_columns("labels"),
        2,
        family.collator(tokenizer, PREP),
        family.scorer(task, tokenizer, config),
    )
    assert scores.shape == (2, 1) and set(scores[:, 0]) <= set(np.float32(values))


def test_a_separable_task_is_learned_and_the_saved_model_scores_the_same(
    tmp_path: Path, tiny_t5_dir: Path
) -> None:
    train, validation = separable(64, 0), separable(32, 1)
    task = Task("toy", ["no", "yes"])
    metrics = finetune(
        str(tiny_t5_dir),
        task,
        train,
        validation,
        seq2seq_params(),
        48,
        tmp_path / "model",
        tmp_path / "reports",
    )
    loss = live_curve(tmp_path / "reports", "finetune", "loss")["loss"].to_numpy()
    assert loss[-1] < 0.5 * loss[0]
    assert metrics["validation"]["accuracy"] >= 0.9

    manifest = json.loads((tmp_path / "model" / "bertfit_model.json").read_text())
    assert (manifest["family"], manifest["head"]) == ("seq2seq", "text2text")
    assert manifest["task"]["labels"] == ["no", "yes"]
    assert not list((tmp_path / "model").glob("*.bin"))  # safetensors only, no pickles
    trained = load_trained(tmp_path / "model")
    ds = trained.encoder().labelled(validation, task, "validation")
    scores = predict_scores(trained.model, ds, 16, trained.collator(), trained.scorer())
    assert (scores.argmax(-1) == np.asarray(ds["labels"])).mean() == metrics["validation"][
        "accuracy"
    ]
    # a standard seq2seq directory: transformers alone loads it and writes a label word
    model = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "model")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "model")
    out = model.generate(
        **tokenizer(["toy: what is the city ?"], return_tensors="pt"), max_new_tokens=3
    )
    assert tokenizer.decode(out[0], skip_special_tokens=True).strip() in ("yes", "no")


def test_both_adafactor_modes_train(tmp_path: Path, tiny_t5_dir: Path) -> None:
    train = separable(32, 2)
    task = Task("toy", ["no", "yes"])
    for relative in (False, True):
        params = seq2seq_params(adafactor_relative_step=relative, num_train_epochs=2)
        finetune(
            str(tiny_t5_dir),
            task,
            train,
            train,
            params,
            48,
            tmp_path / f"m{relative}",
            tmp_path / f"r{relative}",
        )
        loss = live_curve(tmp_path / f"r{relative}", "finetune", "loss")
        assert np.isfinite(loss["loss"]).all()


def test_adafactor_relative_step_is_the_source_documents_mode(tiny_t5_dir: Path) -> None:
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir)
    args_fixed = seq2seq_params()
    for relative in (False, True):
        params = seq2seq_params(adafactor_relative_step=relative)
        trainer = BertfitTrainer(
            model=model,
            args=training_arguments(params, Path("unused"), num_train_epochs=1),
            layer_decay=1.0,
            adafactor_relative_step=relative,
        )
        optimizer = trainer.create_optimizer()
        assert isinstance(optimizer, Adafactor)
        group = optimizer.param_groups[0]
        assert group["relative_step"] is relative and group["scale_parameter"] is relative
        assert group["warmup_init"] is relative
        if not relative:
            assert group["lr"] == args_fixed.learning_rate


def test_layer_decay_counts_encoder_then_decoder_blocks(tiny_t5_dir: Path) -> None:
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir)
    groups = layerwise_param_groups(model, 1.0, 0.5, 0.0, [])
    depth = {n: g["depth"] for g in groups for n in g["names"]}
    rate = {n: g["lr"] for g in groups for n in g["names"]}
    assert depth["shared.weight"] == 0
    assert depth["encoder.block.0.layer.0.SelfAttention.q.weight"] == 1
    assert depth["encoder.block.1.layer.0.SelfAttention.q.weight"] == 2
    assert depth["decoder.block.0.layer.0.SelfAttention.q.weight"] == 3
    assert depth["decoder.block.1.layer.0.SelfAttention.q.weight"] == 4
    assert rate["decoder.block.1.layer.0.SelfAttention.q.weight"] == 1.0
    assert rate["encoder.block.0.layer.0.SelfAttention.q.weight"] == 0.5**3


def test_mixing_limit_caps_a_task_as_t5_does() -> None:
    p = task_probabilities([100, 10_000], "proportional", 2.0, mixing_limit=1_000)
    np.testing.assert_allclose(p, [100 / 1100, 1000 / 1100])
    assert task_probabilities([100, 10_000], "proportional", 2.0)[1] > 0.99


def test_clashing_label_words_are_named(tiny_t5_dir: Path) -> None:
    tokenizer = load_tokenizer(str(tiny_t5_dir))
    task = Task("q", ["LOC", "ENTY", "HUM"], label_words={"LOC": "place", "ENTY": "place"})
    with pytest.raises(ValueError, match="labels 'LOC' and 'ENTY' tokenise to the same"):
        label_targets(tokenizer, task, task.words())


def test_a_label_word_that_tokenises_to_nothing_is_an_error(tiny_t5_dir: Path) -> None:
    tokenizer = load_tokenizer(str(tiny_t5_dir))
    task = Task("q", ["a", "b"], label_words={"a": " ", "b": "city"})
    with pytest.raises(ValueError, match=r"label_words: 'a' -> ' ' tokenises to nothing"):
        label_targets(tokenizer, task, task.words())


def test_a_prefix_too_long_for_max_seq_length_is_an_error(tiny_t5_dir: Path) -> None:
    tokenizer = load_tokenizer(str(tiny_t5_dir))
    task = Task("q", ["a", "b"], prefix="what is the name of the city of the river: " * 3)
    df = pd.DataFrame({"text": ["who ?"], "label": ["a"]})
    with pytest.raises(ValueError, match=r"tasks.q.prefix .* leaving none for the text"):
        Text2TextEncoder(tokenizer, Preprocessing(16, "head", 0)).labelled(df, task, "train")


def test_fp16_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="T5-family models overflow in fp16"):
        seq2seq_params(mixed_precision="fp16")


def test_encoder_heads_are_refused_for_text_to_text(tiny_t5_dir: Path) -> None:
    from bertfit.models.pooling import HeadSpec

    with pytest.raises(ValueError, match="text-to-text model writes label words"):
        Seq2SeqFamily().classifier(str(tiny_t5_dir), Task("q", ["a"]), HeadSpec("mean", 2, None))
