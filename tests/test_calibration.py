"""Temperature scaling and the expected calibration error (bertfit.calibration), fitted by
finetune and applied by evaluate and predict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from huggingface_hub import ModelCard

from bertfit.calibration import (
    confidence_bins,
    expected_calibration_error,
    fit_temperature,
    probabilities,
)
from bertfit.data.tasks import Task, read_task, write_task
from bertfit.evaluation import evaluate
from bertfit.model_card import card_data
from bertfit.models.family import load_trained
from bertfit.models.manifest import read_manifest
from bertfit.params import EvaluateParams, FinetuneParams
from bertfit.predict import predict_frame
from bertfit.training.finetune import finetune
from tests.conftest import TINY_FINETUNE

EVAL = EvaluateParams(per_device_eval_batch_size=8, prediction="rank", mixed_precision="no")


def test_the_fitted_temperature_undoes_overconfidence() -> None:
    """Labels drawn from softmax(z): scores 3·z are three times too sure, and T ≈ 3 fixes it."""
    rng = np.random.default_rng(0)
    z = rng.normal(0, 1.5, size=(20000, 4))
    labels = np.array([rng.choice(4, p=p) for p in probabilities(z)])
    assert fit_temperature(3 * z, labels) == pytest.approx(3.0, rel=0.05)
    assert fit_temperature(z, labels) == pytest.approx(1.0, rel=0.05)
    before = expected_calibration_error(probabilities(3 * z), labels)
    after = expected_calibration_error(probabilities(3 * z, fit_temperature(3 * z, labels)), labels)
    assert before > 0.1 > 0.02 > after


def test_ece_by_hand() -> None:
    # two predictions at 0.9 (one right), two at 0.6 (both right): bins 9 and 6
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.4, 0.6]])
    labels = np.array([0, 1, 1, 1])
    bins = confidence_bins(probs, labels)
    assert [b["count"] for b in bins] == [0, 0, 0, 0, 0, 0, 2, 0, 0, 2]
    assert expected_calibration_error(probs, labels) == pytest.approx(
        0.5 * abs(0.5 - 0.9) + 0.5 * abs(1.0 - 0.6)
    )


def test_finetune_fits_it_and_evaluate_and_predict_apply_it(
    tmp_path: Path, tiny_model_dir: Path, trec_sample: dict
) -> None:
    rows = pd.DataFrame(trec_sample["train"][:96])[["text", "label"]]
    validation = pd.DataFrame(trec_sample["validation"])[["text", "label"]]
    test = pd.DataFrame(trec_sample["test"])[["text", "label"]]
    task = Task("trec", sorted(set(rows["label"])))
    params = FinetuneParams(**(TINY_FINETUNE | {"num_train_epochs": 3, "mixed_precision": "no"}))
    finetune(str(tiny_model_dir), task, rows, validation, params, 32, tmp_path / "model",
             tmp_path / "reports")  # fmt: skip
    temperature = read_manifest(tmp_path / "model").temperature
    run = json.loads((tmp_path / "reports" / "run.json").read_text())
    assert run["calibration"]["temperature"] == temperature != 1.0
    assert set(run["calibration"]) == {"temperature", "ece_uncalibrated", "ece"}

    write_task(task, {"test": test}, [], tmp_path / "trec")
    metrics, predictions = evaluate(tmp_path / "model", read_task(tmp_path / "trec"), EVAL,
                                    tmp_path / "ev")  # fmt: skip
    assert {"ece", "ece_uncalibrated"} <= set(metrics)
    assert "ece" in json.loads((tmp_path / "ev" / "metrics.json").read_text())
    report = (tmp_path / "ev" / "report.md").read_text()
    assert "## Calibration" in report and f"T = {temperature:.3f}" in report
    assert (
        "| raw softmax (T = 1) |" in report and "![reliability](figures/reliability.png)" in report
    )
    assert "### The most confident mistakes" in report
    assert (tmp_path / "ev" / "figures" / "reliability.png").stat().st_size > 0
    # predict gives the same calibrated probabilities evaluate reports
    out = predict_frame(load_trained(tmp_path / "model"), test, batch_size=8)
    columns = [f"prob_{label}" for label in task.labels]
    np.testing.assert_allclose(out[columns].to_numpy(), predictions[columns].to_numpy(), atol=1e-6)


def test_the_card_names_the_bases_licence_and_parses() -> None:
    from bertfit.models.manifest import Manifest

    base = {"name": "m", "hub_id": "org/m", "language": "en", "license": "Apache-2.0"}
    recipe = [{"stage": "pretrain", "base_model": base}]
    manifest = Manifest(family="encoder", head="stock", stage="finetune", recipe=recipe)
    metrics = {"validation": {"accuracy": 0.9}}
    data = card_data(manifest, Task("t", ["a", "b"]), {}, metrics, "x")
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n# x\n")
    assert card.data.license == "apache-2.0"
