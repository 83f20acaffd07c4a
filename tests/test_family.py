"""The model-family seam, the model-directory manifest and selection's keep-the-best contract."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import T5Config

from bertfit.data.encoding import Preprocessing
from bertfit.data.tasks import Task, read_task, write_task
from bertfit.models.family import family_of, load_trained
from bertfit.models.heads import load_classifier
from bertfit.models.loading import load_config
from bertfit.models.manifest import Manifest, read_manifest
from bertfit.training.selection import (
    Selection,
    ValidationSet,
    bootstrap_error,
    selection_metric,
)


def test_manifest_round_trips_with_task_and_preprocessing(tmp_path: Path) -> None:
    task = Task("mrpc", ["equivalent", "not"], metric="f1", positive_label="equivalent")
    manifest = Manifest(
        family="encoder",
        head="pooled",
        stage="finetune",
        preprocessing=Preprocessing(64, "hierarchical", 0, 16, 4),
        task=task,
        head_config={"feature": "mean", "feature_layers": 2, "chunk_pooling": "max"},
    )
    manifest.save(tmp_path)
    again = read_manifest(tmp_path)
    assert again == manifest
    assert again.task.positive_id == 0


def test_manifest_errors_name_the_directory_and_the_head(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"was not written by a bertfit stage"):
        read_manifest(tmp_path)
    with pytest.raises(ValueError, match=r"manifest head must be one of .*got 'linear'"):
        Manifest(family="encoder", head="linear", stage="finetune")


def test_a_bare_encoder_has_nothing_to_score_with(tmp_path: Path, tiny_model_dir: Path) -> None:
    encoder_dir = tmp_path / "encoder"  # a copy: the session's tiny model stays unmarked
    shutil.copytree(tiny_model_dir, encoder_dir)
    Manifest("encoder", "none", "pretrain").save(encoder_dir)
    with pytest.raises(ValueError, match=r"bare encoder .*pretrain stage.*models/finetune"):
        load_trained(encoder_dir)


def test_family_comes_from_the_config_not_the_name(tiny_model_dir: Path) -> None:
    assert family_of(load_config(str(tiny_model_dir))).name == "encoder"
    t5 = T5Config(d_model=16, num_layers=1, num_heads=2, d_ff=32, vocab_size=100)
    assert family_of(t5, "'my-bert'").name == "seq2seq"  # named like an encoder, a T5


def test_task_round_trips_through_the_on_disk_contract(tmp_path: Path) -> None:
    task = Task("qlen", [], problem="regression", metric="pearson", domain="question")
    rows = pd.DataFrame({"text": ["a b", "c"], "label": [2.0, 1.0]})
    write_task(task, {"train": rows}, ["unlabelled"], tmp_path / "qlen")
    again = read_task(tmp_path / "qlen")
    assert again == task and again.num_labels == 1
    assert again.split("train").equals(rows)
    with pytest.raises(FileNotFoundError, match=r"test.parquet: missing; run the collect stage"):
        again.split("test")
    with pytest.raises(ValueError, match=r"positive_label 'yes' is not a label"):
        write_task(Task("t", ["a", "b"], positive_label="yes"), {}, [], tmp_path / "t")


def test_selection_metric_refuses_class_metrics_for_regression() -> None:
    assert selection_metric("task", Task("cola", ["a", "b"], metric="mcc")) == "mcc"
    with pytest.raises(ValueError, match=r"'accuracy' does not exist for a regression task"):
        selection_metric("accuracy", Task("stsb", [], problem="regression", metric="pearson"))


@pytest.mark.parametrize(
    ("metric", "values", "best"),
    [("accuracy", [0.5, 0.7, 0.7, 0.6], 1), ("loss", [0.9, 0.4, 0.6, 0.4], 1)],
)
def test_selection_keeps_and_restores_the_best_weights(
    tiny_model_dir: Path, metric: str, values: list[float], best: int
) -> None:
    """The first best row wins (ties keep the earlier one); restore puts its weights back."""
    model = load_classifier(str(tiny_model_dir), ["a", "b"])
    task = Task("t", ["a", "b"])
    selection = Selection([ValidationSet(task, None, metric)], lambda _: None, None, 8)
    weights = []
    for step, value in enumerate(values):
        with torch.no_grad():
            model.classifier.weight.fill_(float(step))
        weights.append(model.classifier.weight.clone())
        selection.record(model, {"step": step, metric: value})
    assert selection.restore(model)["step"] == best
    assert torch.equal(model.classifier.weight, weights[best])


@pytest.mark.parametrize(
    ("metric", "values", "kept"),
    [
        # peak 0.84 at step 1; 0.78 is more than 0.05 below it, 0.81 is within
        ("accuracy", [0.80, 0.84, 0.82, 0.78, 0.81], [0, 1, 2, 2, 4]),
        ("loss", [0.50, 0.30, 0.33, 0.40, 0.34], [0, 1, 2, 2, 4]),
    ],
)
def test_selection_with_a_tolerance_keeps_the_latest_row_near_the_peak(
    tiny_model_dir: Path, tmp_path: Path, metric: str, values: list[float], kept: list[int]
) -> None:
    model = load_classifier(str(tiny_model_dir), ["a", "b"])
    task = Task("t", ["a", "b"])
    make = lambda: Selection(  # noqa: E731
        [ValidationSet(task, None, metric)], lambda _: None, None, 8, tolerance=0.05
    )
    selection = make()
    weights = []
    for step, value in enumerate(values):
        with torch.no_grad():
            model.classifier.weight.fill_(float(step))
        weights.append(model.classifier.weight.clone())
        selection.record(model, {"step": step, metric: value})
        assert (selection.best["step"], selection.peak["step"]) == (kept[step], 1 if step else 0)
    resumed = make()  # a resumed run knows the peak, not only the kept row
    selection.save_state(tmp_path)
    resumed.load_state(tmp_path)
    assert (resumed.best["step"], resumed.peak["step"]) == (4, 1)
    assert resumed.restore(model)["step"] == 4
    assert torch.equal(model.classifier.weight, weights[4])


def test_auto_tolerance_is_the_bootstrap_error_of_the_peak(tiny_model_dir: Path) -> None:
    """One standard error: for accuracy near the binomial sqrt(p (1 - p) / n), the same each run;
    the margin is the peak row's, so a lower row within it is kept."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 200)
    scores = rng.normal(size=(200, 2))
    scores[np.arange(200), labels] += 1.2
    task = Task("t", ["a", "b"])
    error = bootstrap_error(task, "accuracy", labels, scores)
    p = float((scores.argmax(1) == labels).mean())
    assert error == pytest.approx(np.sqrt(p * (1 - p) / 200), rel=0.25)
    assert bootstrap_error(task, "accuracy", labels, scores) == error
    assert bootstrap_error(task, "mcc", labels, scores) > error  # MCC spans [-1, 1]
    model = load_classifier(str(tiny_model_dir), ["a", "b"])
    sets = [ValidationSet(task, None, "accuracy")]
    selection = Selection(sets, lambda _: None, None, 8, tolerance="auto")
    selection.record(model, {"step": 1, "accuracy": 0.85, "accuracy_se": 0.025})
    selection.record(model, {"step": 2, "accuracy": 0.83, "accuracy_se": 0.03})
    assert selection.margin() == 0.025 and selection.best["step"] == 2
    selection.record(model, {"step": 3, "accuracy": 0.82, "accuracy_se": 0.03})
    assert selection.best["step"] == 2
    with pytest.raises(ValueError, match=r"must be a number >= 0 or 'auto', not 'some'"):
        Selection(sets, lambda _: None, None, 8, tolerance="some")
