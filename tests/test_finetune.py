from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bertfit.metrics import classification_metrics, per_class_metrics
from bertfit.params import FinetuneParams
from bertfit.reporting import split_history
from bertfit.training.finetune import finetune
from bertfit.training.hardware import bf16_available
from tests.conftest import TINY_FINETUNE


@pytest.mark.parametrize("mixed_precision", ["no", "auto"])  # auto: bf16 where the CPU has it
def test_loss_falls_when_overfitting_one_batch(
    tmp_path: Path,
    tiny_model_dir: Path,
    trec_sample: dict,
    mixed_precision: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    rows = pd.DataFrame(trec_sample["train"][:16])[["text", "label"]]
    params = FinetuneParams(
        **(
            TINY_FINETUNE
            | {
                "num_train_epochs": 30,
                "per_device_train_batch_size": 16,
                "logging_steps": 1,
                "warmup_ratio": 0.0,
                "learning_rate": 1e-2,
                "layer_decay": 1.0,
                "mixed_precision": mixed_precision,
            }
        )
    )
    labels = sorted(rows["label"].unique())
    with caplog.at_level(logging.INFO, logger="bertfit.training.finetune"):
        metrics = finetune(
            str(tiny_model_dir),
            labels,
            rows,
            rows,
            params,
            32,
            tmp_path / "model",
            tmp_path / "reports",
        )
    bf16 = mixed_precision == "auto" and bf16_available()
    assert any(r.getMessage().endswith(f"bf16 {bf16}") for r in caplog.records)
    loss = pd.read_csv(tmp_path / "reports" / "loss.csv")["loss"].to_numpy()
    assert len(loss) == 30
    assert loss[-1] < 0.75 * loss[0]  # a random-init 2-layer BERT learns slowly
    assert 0 <= metrics["validation"]["accuracy"] <= 1
    saved = json.loads((tmp_path / "model" / "bertfit_preprocessing.json").read_text())
    assert saved == {"head_tokens": 8, "max_seq_length": 32, "truncation": "head_tail"}


def test_split_history_separates_loss_and_eval_rows() -> None:
    history = [
        {"loss": 1.0, "learning_rate": 1e-5, "epoch": 0.5, "step": 5},
        {"eval_loss": 0.9, "eval_accuracy": 0.6, "epoch": 1.0, "step": 10},
        {"train_runtime": 3.0, "epoch": 1.0, "step": 10},
    ]
    losses, evals = split_history(history)
    assert losses == [{"step": 5, "epoch": 0.5, "loss": 1.0, "learning_rate": 1e-5}]
    assert evals == [{"step": 10, "epoch": 1.0, "loss": 0.9, "accuracy": 0.6}]


def test_classification_metrics() -> None:
    y = np.array([0, 0, 1, 1, 2])
    p = np.array([0, 1, 1, 1, 2])
    m = classification_metrics(y, p)
    assert m["accuracy"] == pytest.approx(0.8)
    assert m["error_rate"] == pytest.approx(0.2)
    # F1 per class: 2/3, 0.8, 1.0
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 1.0) / 3)
    per = per_class_metrics(y, p, ["a", "b", "c"])
    assert per["a"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert per["b"]["precision"] == pytest.approx(2 / 3)
