from __future__ import annotations

from pathlib import Path

import pytest
import torch
from datasets import Dataset
from transformers import DataCollatorWithPadding, Trainer, TrainingArguments, set_seed

from bertfit.models.heads import load_classifier
from bertfit.models.loading import load_tokenizer
from bertfit.training.optim import layer_depth
from bertfit.training.trainer import BertfitTrainer

BASE_LR = 2e-5
XI = 0.9


@pytest.fixture()
def optimizer(tiny_model_dir: Path, tmp_path: Path):
    model = load_classifier(str(tiny_model_dir), ["a", "b", "c"])
    args = TrainingArguments(
        output_dir=str(tmp_path),
        learning_rate=BASE_LR,
        weight_decay=0.01,
        report_to="none",
        use_cpu=True,
    )
    trainer = BertfitTrainer(
        model=model,
        args=args,
        layer_decay=XI,
        train_dataset=Dataset.from_dict({"input_ids": [[1]]}),
    )
    return trainer.create_optimizer()


def rates_by_name(optimizer) -> dict[str, tuple[float, float]]:
    return {
        name: (group["lr"], group["weight_decay"])
        for group in optimizer.param_groups
        for name in group["names"]
    }


def test_optimizer_groups_follow_layer_decay(optimizer) -> None:
    rates = rates_by_name(optimizer)
    # tiny model: 2 encoder layers; top layer and heads at the base rate
    assert rates["classifier.weight"][0] == pytest.approx(BASE_LR)
    assert rates["bert.pooler.dense.weight"][0] == pytest.approx(BASE_LR)
    assert rates["bert.encoder.layer.1.attention.self.query.weight"][0] == pytest.approx(BASE_LR)
    assert rates["bert.encoder.layer.0.output.dense.weight"][0] == pytest.approx(BASE_LR * XI)
    # embeddings lowest: ξ^L with L = 2 (the reference code never decayed them)
    assert rates["bert.embeddings.word_embeddings.weight"][0] == pytest.approx(BASE_LR * XI**2)
    assert rates["bert.embeddings.LayerNorm.weight"][0] == pytest.approx(BASE_LR * XI**2)


def test_no_weight_decay_on_bias_and_layernorm(optimizer) -> None:
    rates = rates_by_name(optimizer)
    assert rates["bert.encoder.layer.0.output.dense.weight"][1] == 0.01
    assert rates["bert.encoder.layer.0.output.dense.bias"][1] == 0.0
    assert rates["bert.encoder.layer.0.output.LayerNorm.weight"][1] == 0.0
    assert rates["classifier.bias"][1] == 0.0


def test_every_trainable_parameter_is_in_exactly_one_group(optimizer, tiny_model_dir) -> None:
    names = [n for g in optimizer.param_groups for n in g["names"]]
    model = load_classifier(str(tiny_model_dir), ["a", "b", "c"])
    assert sorted(names) == sorted(n for n, p in model.named_parameters() if p.requires_grad)


@pytest.mark.parametrize(
    ("name", "depth"),
    [
        ("bert.embeddings.word_embeddings.weight", 0),
        ("bert.encoder.layer.0.attention.self.query.weight", 1),
        ("bert.encoder.layer.11.output.dense.bias", 12),
        ("roberta.encoder.layer.3.output.dense.bias", 4),
        ("model.layers.5.mlp.up_proj.weight", 6),
        ("bert.pooler.dense.weight", 13),
        ("classifier.weight", 13),
    ],
)
def test_layer_depth(name: str, depth: int) -> None:
    assert layer_depth(name, num_layers=12) == depth


def test_layer_decay_one_trains_exactly_as_the_stock_trainer(
    tiny_model_dir: Path, tmp_path: Path, trec_sample: dict
) -> None:
    """With ξ = 1 the per-depth groups change nothing: the same weights as HF's own optimiser.

    pretrain and multitask run through BertfitTrainer with layer_decay 1.0, where they used the
    stock Trainer before; their results must not move.
    """
    tokenizer = load_tokenizer(str(tiny_model_dir))
    texts = [r["text"] for r in trec_sample["train"][:32]]
    rows = tokenizer(texts, truncation=True, max_length=32)
    ds = Dataset.from_dict(dict(rows) | {"labels": [i % 3 for i in range(len(texts))]})
    weights = {}
    for name, cls, extra in (
        ("stock", Trainer, {}),
        ("bertfit", BertfitTrainer, {"layer_decay": 1.0}),
    ):
        set_seed(0)
        args = TrainingArguments(
            output_dir=str(tmp_path / name), max_steps=4, per_device_train_batch_size=8,
            learning_rate=1e-3, weight_decay=0.01, warmup_steps=0.1, report_to="none",
            use_cpu=True, save_strategy="no", seed=0,
        )  # fmt: skip
        trainer = cls(
            model=load_classifier(str(tiny_model_dir), ["a", "b", "c"]),
            args=args,
            train_dataset=ds,
            data_collator=DataCollatorWithPadding(tokenizer),
            **extra,
        )
        trainer.train()
        weights[name] = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    assert weights["stock"].keys() == weights["bertfit"].keys()
    for key, value in weights["stock"].items():
        assert torch.equal(value, weights["bertfit"][key]), key
