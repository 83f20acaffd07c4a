from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from bertfit import search
from bertfit.params import parse_section
from tests.test_stages import ready_for_finetune

SPACE = {
    "n_trials": 3,
    "seed": 0,
    "max_train_samples": 80,
    "learning_rate": [1.0e-4, 3.0e-3],
    "num_train_epochs": [1, 2],
    "per_device_train_batch_size": [16, 32],
    "warmup_ratio": [0.0, 0.2],
    "layer_decay": [0.8, 1.0],
}


def test_search_runs_trials_on_validation_and_writes_the_best_override(
    tmp_path: Path,
    tiny_model_dir: Path,
    trec_files: dict,
) -> None:
    c = ready_for_finetune(tmp_path, tiny_model_dir, trec_files, search=SPACE)
    (c.data / "tasks" / "trec" / "test.parquet").unlink()  # the search must never read test
    out = tmp_path / "search"
    search.main(["--params", c.params[1], "--space", c.params[1], "--data-dir", str(c.data),
                 "--base-model-dir", str(c.multitasked), "--out", str(out)])  # fmt: skip

    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 3 and (trials["state"] == "COMPLETE").all()
    assert trials["value"].between(0, 1).all()  # validation accuracy of each trial
    assert trials["learning_rate"].between(1e-4, 3e-3).all()
    assert set(trials["per_device_train_batch_size"]) <= {16, 32}
    assert trials["learning_rate"].nunique() == 3  # each trial its own values

    text = (out / "best_params.yaml").read_text()
    best = yaml.safe_load(text)["finetune"]
    row = trials.loc[trials["value"].idxmax()]
    assert best["learning_rate"] == pytest.approx(row["learning_rate"])
    assert best["num_train_epochs"] == row["num_train_epochs"] and best["warmup_steps"] is None
    assert f"validation accuracy {row['value']:.4f}" in text.splitlines()[0]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"learning_rate": [1e-3, 1e-5]}, r"learning_rate must be \[low, high\]"),
        ({"warmup_ratio": [0.0, 1.5]}, r"warmup_ratio must be \[low, high\] .* <= 0.999"),
        ({"per_device_train_batch_size": []}, r"List should have at least 1 item"),
        ({"n_trials": 0}, r"search.n_trials: Input should be greater than 0"),
    ],
)
def test_bad_search_space_is_named(override: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_section({"search": SPACE | override}, "search")
