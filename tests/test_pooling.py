from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from transformers import AutoModel

import bertfit.training.finetune as finetune_module
from bertfit.data.encoding import Encoder, Preprocessing
from bertfit.data.tasks import Task
from bertfit.inference import predict_scores
from bertfit.models.family import load_trained
from bertfit.models.loading import load_tokenizer
from bertfit.models.pooling import (
    ChunkCollator,
    HeadSpec,
    PooledClassifier,
    pooled_classifier,
)
from bertfit.params import FinetuneParams, parse_section
from bertfit.training.finetune import finetune, save
from stages import evaluate as evaluate_stage
from tests.conftest import TINY_FINETUNE, live_curve


@pytest.fixture(scope="module")
def long_texts(shared_datasets: Path) -> pd.DataFrame:
    """Real IMDb reviews (hundreds of words): at 32 tokens each is many pieces."""
    from tests.conftest import read_jsonl_gz

    rows = read_jsonl_gz(shared_datasets / "imdb" / "train.jsonl.gz", 400)
    df = pd.DataFrame(rows)[["text", "label"]]
    return pd.concat([df[df["label"] == y].head(24) for y in sorted(df["label"].unique())])


def test_pieces_cover_the_text_with_the_stride() -> None:
    ids = list(range(10))
    assert Preprocessing(6, "hierarchical", 0, None, 9).pieces(ids, 4) == [
        [0, 1, 2, 3], [4, 5, 6, 7], [8, 9]
    ]  # fmt: skip
    assert Preprocessing(6, "hierarchical", 0, 3, 9).pieces(ids, 4) == [
        [0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]
    ]  # fmt: skip
    assert Preprocessing(6, "hierarchical", 0, None, 2).pieces(ids, 4) == [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
    ]
    assert Preprocessing(6, "hierarchical", 0, None, 2).pieces([1, 2], 4) == [[1, 2]]


def test_hierarchical_encoding_keeps_every_piece_with_special_tokens(
    tiny_model_dir: Path, long_texts: pd.DataFrame
) -> None:
    tokenizer = load_tokenizer(str(tiny_model_dir))
    encoder = Encoder(tokenizer, Preprocessing(32, "hierarchical", 0, None, 50))
    ds = encoder.dataset(long_texts.head(3), {y: i for i, y in enumerate(["neg", "pos"])})
    full = tokenizer(long_texts["text"].head(3).tolist(), add_special_tokens=False)["input_ids"]
    for pieces, ids, length in zip(ds["input_ids"], full, ds["length"], strict=True):
        assert len(pieces) == -(-len(ids) // 30) > 1  # 30 text tokens per 32-token piece
        assert all(
            p[0] == tokenizer.cls_token_id and p[-1] == tokenizer.sep_token_id for p in pieces
        )
        assert [t for p in pieces for t in p[1:-1]] == ids  # nothing lost, nothing repeated
        assert length == sum(len(p) for p in pieces)


@pytest.mark.parametrize("pooling", ["mean", "max", "attention"])
def test_pool_matches_a_per_text_reference(tiny_model_dir: Path, pooling: str) -> None:
    model = pooled_classifier(str(tiny_model_dir), ["a", "b"], HeadSpec("cls", 1, pooling))
    torch.manual_seed(0)
    pieces, counts = torch.randn(6, 32), torch.tensor([1, 3, 2])
    pooled = model.pool(pieces, counts)
    for i, chunk in enumerate(pieces.split(counts.tolist())):
        if pooling == "mean":
            expected = chunk.mean(0)
        elif pooling == "max":
            expected = chunk.max(0).values
        else:
            expected = (model.attention(chunk).squeeze(-1).softmax(0)[:, None] * chunk).sum(0)
        assert torch.allclose(pooled[i], expected, atol=1e-6)


@pytest.mark.parametrize("feature", ["mean", "max", "concat"])
def test_features_combine_the_last_layers_cls(tiny_model_dir: Path, feature: str) -> None:
    model = pooled_classifier(str(tiny_model_dir), ["a", "b", "c"], HeadSpec(feature, 2, None))
    model.eval()
    inputs = {"input_ids": torch.tensor([[2, 10, 11, 3]]), "attention_mask": torch.ones(1, 4)}
    hidden = model.encoder(**inputs, output_hidden_states=True).hidden_states
    last_two = torch.stack([hidden[-2][:, 0], hidden[-1][:, 0]], 1)
    expected = {"mean": last_two.mean(1), "max": last_two.max(1).values,
                "concat": last_two.flatten(1)}[feature]  # fmt: skip
    assert torch.allclose(model.features(**inputs), expected, atol=1e-6)
    assert model.classifier.in_features == (64 if feature == "concat" else 32)


def run_finetune(tmp_path: Path, model_dir: Path, df: pd.DataFrame, **overrides: object) -> dict:
    params = FinetuneParams(**(TINY_FINETUNE | {"num_train_epochs": 2} | overrides))
    return finetune(str(model_dir), Task("imdb", sorted(set(df["label"]))), df, df, params, 32,
                    tmp_path / "model", tmp_path / "reports")  # fmt: skip


@pytest.mark.parametrize(
    "overrides",
    [
        {"truncation": "hierarchical", "chunk_pooling": "mean"},
        {"truncation": "hierarchical", "chunk_pooling": "max", "chunk_stride": 20},
        {"truncation": "hierarchical", "chunk_pooling": "attention", "feature": "concat"},
        {"feature": "mean"},
    ],
)
def test_pooled_finetune_saves_a_model_that_reloads_and_predicts_the_same(
    tmp_path: Path,
    tiny_model_dir: Path,
    long_texts: pd.DataFrame,
    overrides: dict,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    in_memory = []  # the trained model as finetune saves it, copied before it is written

    def keep_a_copy(model: nn.Module, *args: object) -> None:
        in_memory.append(copy.deepcopy(model))
        save(model, *args)

    monkeypatch.setattr(finetune_module, "save", keep_a_copy)
    metrics = run_finetune(tmp_path, tiny_model_dir, long_texts, **overrides)
    out = tmp_path / "model"
    manifest = json.loads((out / "bertfit_model.json").read_text())
    assert manifest["head"] == "pooled"
    assert manifest["head_config"]["feature"] == overrides.get("feature", "cls")
    assert AutoModel.from_pretrained(out).config.id2label == {0: "neg", 1: "pos"}

    trained = load_trained(out)
    assert isinstance(trained.model, PooledClassifier)
    prep = trained.manifest.preprocessing
    hierarchical = prep.truncation == "hierarchical"
    assert hierarchical == (overrides.get("truncation") == "hierarchical")
    ds = trained.encoder().labelled(long_texts, trained.task, "validation")
    collator, score = trained.collator(), trained.family.score
    assert isinstance(collator, ChunkCollator) == hierarchical
    first = predict_scores(trained.model, ds, 16, collator, score)
    # the reloaded model is the trained one, head and pooling included, not a fresh head
    (trained_in_memory,) = in_memory
    np.testing.assert_allclose(
        first, predict_scores(trained_in_memory, ds, 16, collator, score), atol=1e-5
    )
    # and the selected epoch's: it scores what finetune reported
    accuracy = float((first.argmax(-1) == np.asarray(ds["labels"])).mean())
    assert accuracy == pytest.approx(metrics["validation"]["accuracy"])
    again = load_trained(out).model
    second = predict_scores(again, ds, 5, collator, score)  # other batches, same outputs
    np.testing.assert_allclose(first, second, atol=1e-5)
    # batched prediction equals scoring one text at a time, pieces and padding notwithstanding
    row = ds.select([7])
    np.testing.assert_allclose(predict_scores(again, row, 1, collator, score), first[7:8],
                               atol=1e-5)  # fmt: skip


def test_hierarchical_loss_falls_when_overfitting(
    tmp_path: Path, tiny_model_dir: Path, trec_sample: dict
) -> None:
    # documents of five real questions of one class: 2-3 pieces each at 32 tokens, in the tiny
    # model's own vocabulary (built from TREC)
    questions = pd.DataFrame(trec_sample["train"])
    docs = [
        {"text": " ".join(group["text"].iloc[i : i + 5]), "label": label}
        for label, group in questions.groupby("label")
        for i in range(0, 15, 5)
        if len(group) >= i + 5
    ]
    rows = pd.DataFrame(docs)
    overrides = {"truncation": "hierarchical", "chunk_pooling": "attention",
                 "num_train_epochs": 25, "per_device_train_batch_size": 16, "logging_steps": 1,
                 "learning_rate": 1e-2, "layer_decay": 1.0, "warmup_ratio": 0.0}  # fmt: skip
    run_finetune(tmp_path, tiny_model_dir, rows, **overrides)
    loss = live_curve(tmp_path / "reports", "finetune", "loss")["loss"].to_numpy()
    assert loss[-3:].mean() < 0.75 * loss[:3].mean()


def test_evaluate_stage_scores_a_hierarchical_model(
    tmp_path: Path, tiny_model_dir: Path, long_texts: pd.DataFrame
) -> None:
    run_finetune(
        tmp_path, tiny_model_dir, long_texts, truncation="hierarchical", num_train_epochs=1
    )
    task_dir = tmp_path / "data" / "tasks" / "imdb"
    task_dir.mkdir(parents=True)
    long_texts.to_parquet(task_dir / "test.parquet")
    (task_dir / "labels.json").write_text(json.dumps({"task": "imdb", "labels": ["neg", "pos"]}))
    params = tmp_path / "params.yaml"
    params.write_text("target: imdb\ntasks: {imdb: {domain: s, source: {kind: files, train: x}}}\n"
                      "evaluate: {per_device_eval_batch_size: 8, mixed_precision: auto,\n"
                      "           prediction: rank}\n"
                      )  # fmt: skip
    evaluate_stage.main(["--params", str(params), "--data-dir", str(tmp_path / "data"),
                         "--model-dir", str(tmp_path / "model"),
                         "--report-dir", str(tmp_path / "ev"),
                         "--predictions-file", str(tmp_path / "pred.parquet")])  # fmt: skip
    record = json.loads((tmp_path / "ev" / "run.json").read_text())
    assert record["test_examples"] == len(long_texts)
    assert len(pd.read_parquet(tmp_path / "pred.parquet")) == len(long_texts)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"chunk_pooling": "median"}, r"finetune.chunk_pooling: Input should be 'mean'"),
        ({"feature": "pooler"}, r"finetune.feature: Input should be 'cls'"),
        ({"truncation": "sliding"}, r"finetune.truncation: Input should be 'head_tail'"),
        ({"max_chunks": 0}, r"finetune.max_chunks: Input should be greater than 0"),
    ],
)
def test_bad_pooling_names_are_errors(override: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_section({"finetune": TINY_FINETUNE | override}, "finetune")


def test_head_tokens_above_the_budget_and_pairs_are_refused(tiny_model_dir: Path) -> None:
    tokenizer = load_tokenizer(str(tiny_model_dir))
    with pytest.raises(ValueError, match=r"finetune.head_tokens must be in \[0, 30\]"):
        Encoder(tokenizer, Preprocessing(32, "head_tail", 31))
    with pytest.raises(ValueError, match=r"finetune.chunk_stride must be in \[1, 30\]"):
        Encoder(tokenizer, Preprocessing(32, "hierarchical", 0, 31, 4))
    encoder = Encoder(tokenizer, Preprocessing(32, "hierarchical", 0, None, 4))
    with pytest.raises(ValueError, match=r"hierarchical pooling splits single texts"):
        encoder.encode(["a question"], ["a second text"])
    model = pooled_classifier(str(tiny_model_dir), ["a", "b"], HeadSpec("mean", 2, None))
    with pytest.raises(ValueError, match=r"feature_layers must be in \[1, 2\]"):
        PooledClassifier(model.encoder, HeadSpec("mean", 3, None))
