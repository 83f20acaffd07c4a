"""The stage scripts chained on tmp_path: collect -> finetune -> evaluate."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml
from transformers import pipeline

from bertfit.params import read_params_file
from stages import collect, evaluate, finetune
from tests.conftest import PROJECT_ROOT, TINY_FINETUNE


def write_params(path: Path, model_name: str, tasks: dict, target: str, **overrides: dict) -> Path:
    params = {
        "target": target,
        "model": {"name": model_name, "max_seq_length": 32},
        "tasks": tasks,
        "collect": {"seed": 0, "max_empty_ratio": 0.01},
        "finetune": dict(TINY_FINETUNE),
        "evaluate": {"per_device_eval_batch_size": 32},
    }
    for section, values in overrides.items():
        params[section] = params[section] | values
    path.write_text(yaml.safe_dump(params), encoding="utf-8")
    return path


@pytest.fixture()
def trec_files(tmp_path: Path, trec_sample: dict[str, list[dict]]) -> dict:
    """A files-source task made of real TREC rows."""
    for split, rows in trec_sample.items():
        pd.DataFrame(rows).to_json(tmp_path / f"{split}.jsonl", orient="records", lines=True)
    return {
        "trec": {
            "domain": "question",
            "source": {
                "kind": "files",
                "train": "train.jsonl",
                "validation": "validation.jsonl",
                "test": "test.jsonl",
            },
        }
    }


def paths(tmp_path: Path) -> dict[str, Path]:
    return {
        "data": tmp_path / "data",
        "model": tmp_path / "models" / "finetune",
        "ft_reports": tmp_path / "reports" / "finetune",
        "ev_reports": tmp_path / "reports" / "evaluate",
        "stats": tmp_path / "reports" / "collect" / "stats.json",
    }


def run_chain(params_file: Path, root: Path, p: dict[str, Path]) -> None:
    collect.main(
        [
            "--params",
            str(params_file),
            "--root",
            str(root),
            "--data-dir",
            str(p["data"]),
            "--stats-file",
            str(p["stats"]),
        ]
    )
    finetune.main(
        [
            "--params",
            str(params_file),
            "--data-dir",
            str(p["data"]),
            "--model-dir",
            str(p["model"]),
            "--report-dir",
            str(p["ft_reports"]),
        ]
    )
    evaluate.main(
        [
            "--params",
            str(params_file),
            "--data-dir",
            str(p["data"]),
            "--model-dir",
            str(p["model"]),
            "--report-dir",
            str(p["ev_reports"]),
            "--predictions-file",
            str(p["data"] / "predictions" / "test.parquet"),
        ]
    )


def test_chain_on_tiny_model(
    tmp_path: Path, tiny_model_dir: Path, trec_files: dict, trec_sample: dict
) -> None:
    params_file = write_params(tmp_path / "params.yaml", str(tiny_model_dir), trec_files, "trec")
    p = paths(tmp_path)
    run_chain(params_file, tmp_path, p)

    task_dir = p["data"] / "tasks" / "trec"
    labels = json.loads((task_dir / "labels.json").read_text())["labels"]
    assert labels == sorted({r["label"] for r in trec_sample["train"]})
    stats = json.loads(p["stats"].read_text())["trec"]
    assert stats["test"]["rows"] == len(trec_sample["test"])
    assert stats["train"]["tokens"]["p50"] > 3

    config = json.loads((p["model"] / "config.json").read_text())
    assert [config["id2label"][str(i)] for i in range(len(labels))] == labels
    assert (p["model"] / "model.safetensors").is_file()
    assert not list(p["model"].parent.glob(".finetune-*"))  # checkpoints cleaned up

    ft = json.loads((p["ft_reports"] / "metrics.json").read_text())
    assert ft["best_epoch"] in (1.0, 2.0)
    history = pd.read_csv(p["ft_reports"] / "validation.csv")
    assert history["epoch"].tolist() == [1.0, 2.0]
    assert ft["validation"]["accuracy"] == history["accuracy"].max()
    loss = pd.read_csv(p["ft_reports"] / "loss.csv")
    assert len(loss) >= 2 and loss["loss"].notna().all()

    metrics = json.loads((p["ev_reports"] / "metrics.json").read_text())
    for key in ("accuracy", "error_rate", "macro_f1"):
        assert math.isfinite(metrics[key]) and 0 <= metrics[key] <= 1
    assert metrics["accuracy"] + metrics["error_rate"] == pytest.approx(1)
    assert metrics["test_examples"] == len(trec_sample["test"])
    per_class = json.loads((p["ev_reports"] / "per_class.json").read_text())
    assert sorted(per_class) == labels
    confusion = pd.read_csv(p["ev_reports"] / "confusion.csv")
    assert list(confusion.columns) == ["actual", "predicted"]
    assert confusion["actual"].tolist() == [r["label"] for r in trec_sample["test"]]
    predictions = pd.read_parquet(p["data"] / "predictions" / "test.parquet")
    assert (predictions["predicted"] == confusion["predicted"]).all()
    assert "| accuracy |" in (p["ev_reports"] / "report.md").read_text()

    # the result is a standard HF directory: the stock pipeline loads it and predicts a label
    classify = pipeline("text-classification", model=str(p["model"]), device="cpu")
    out = classify(["What city is the capital of France ?"] * 2)
    assert out[0]["label"] in labels and 0 < out[0]["score"] <= 1


def test_finetune_never_reads_test(tmp_path: Path, tiny_model_dir: Path, trec_files: dict) -> None:
    params_file = write_params(
        tmp_path / "params.yaml",
        str(tiny_model_dir),
        trec_files,
        "trec",
        finetune={"num_train_epochs": 1},
    )
    p = paths(tmp_path)
    collect.main(
        [
            "--params",
            str(params_file),
            "--root",
            str(tmp_path),
            "--data-dir",
            str(p["data"]),
            "--stats-file",
            str(p["stats"]),
        ]
    )
    (p["data"] / "tasks" / "trec" / "test.parquet").unlink()
    finetune.main(
        [
            "--params",
            str(params_file),
            "--data-dir",
            str(p["data"]),
            "--model-dir",
            str(p["model"]),
            "--report-dir",
            str(p["ft_reports"]),
        ]
    )
    assert (p["model"] / "config.json").is_file()


def test_max_seq_length_above_model_limit_fails_finetune(
    tmp_path: Path, tiny_model_dir: Path, trec_files: dict
) -> None:
    params_file = write_params(
        tmp_path / "params.yaml",
        str(tiny_model_dir),
        trec_files,
        "trec",
        model={"max_seq_length": 4096},
    )
    p = paths(tmp_path)
    collect.main(
        [
            "--params",
            str(params_file),
            "--root",
            str(tmp_path),
            "--data-dir",
            str(p["data"]),
            "--stats-file",
            str(p["stats"]),
        ]
    )
    with pytest.raises(ValueError, match=r"max_position_embeddings \(128 .*got 4096"):
        finetune.main(
            [
                "--params",
                str(params_file),
                "--data-dir",
                str(p["data"]),
                "--model-dir",
                str(p["model"]),
                "--report-dir",
                str(p["ft_reports"]),
            ]
        )


def test_unknown_params_key_fails_the_stage(
    tmp_path: Path, tiny_model_dir: Path, trec_files: dict
) -> None:
    params_file = write_params(
        tmp_path / "params.yaml",
        str(tiny_model_dir),
        trec_files,
        "trec",
        collect={"max_empty_ration": 0.1},
    )
    with pytest.raises(ValueError, match=r"collect.max_empty_ration: unknown key"):
        collect.main(["--params", str(params_file), "--root", str(tmp_path)])


@pytest.mark.slow
def test_embedded_default_collects_and_finetunes_mr(tmp_path: Path) -> None:
    """The real chain on the embedded MiniLM and mr, with a small train sample."""
    project = read_params_file(PROJECT_ROOT / "params.yaml")
    params = copy.deepcopy(project)
    params["finetune"] |= {"max_train_samples": 96, "num_train_epochs": 1}
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    p = paths(tmp_path)
    run_chain(params_file, PROJECT_ROOT, p)
    stats = json.loads(p["stats"].read_text())["mr"]
    assert (stats["train"]["rows"], stats["validation"]["rows"], stats["test"]["rows"]) == (
        10251,
        1278,
        1279,
    )
    metrics = json.loads((p["ev_reports"] / "metrics.json").read_text())
    assert metrics["test_examples"] == 1279
    classify = pipeline("text-classification", model=str(p["model"]), device="cpu")
    assert classify("a gorgeous, witty, moving film")[0]["label"] in ("fresh", "rotten")
