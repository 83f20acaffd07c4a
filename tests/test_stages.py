"""The stage scripts chained on tmp_path: collect, pretrain, multitask, finetune, evaluate."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from transformers import pipeline

from bertfit.params import read_params_file
from stages import collect, evaluate, finetune, multitask, pretrain
from tests.conftest import PROJECT_ROOT, TINY_FINETUNE, TINY_MULTITASK, TINY_PRETRAIN


def write_params(path: Path, model_name: str, tasks: dict, target: str, **overrides: dict) -> Path:
    params = {
        "target": target,
        "model": {"name": model_name, "max_seq_length": 32},
        "tasks": tasks,
        "collect": {"seed": 0, "max_empty_ratio": 0.01, "corpus_heldout_ratio": 0.1},
        "pretrain": dict(TINY_PRETRAIN),
        "multitask": dict(TINY_MULTITASK) | {"enabled": False},
        "finetune": dict(TINY_FINETUNE),
        "evaluate": {"per_device_eval_batch_size": 32, "mixed_precision": "auto"},
    }
    for section, values in overrides.items():
        params[section] = params.get(section, {}) | values
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


class Chain:
    """The stage mains with every path under one tmp_path, as dvc.yaml passes them."""

    def __init__(self, tmp_path: Path, params_file: Path, root: Path) -> None:
        self.params = ["--params", str(params_file)]
        self.root = root
        self.data = tmp_path / "data"
        self.stats = tmp_path / "reports" / "collect" / "stats.json"
        self.pretrained = tmp_path / "models" / "pretrain"
        self.multitasked = tmp_path / "models" / "multitask"
        self.model = tmp_path / "models" / "finetune"
        self.pt_reports = tmp_path / "reports" / "pretrain"
        self.mt_reports = tmp_path / "reports" / "multitask"
        self.ft_reports = tmp_path / "reports" / "finetune"
        self.ev_reports = tmp_path / "reports" / "evaluate"
        self.checkpoints = tmp_path / "checkpoints" / "pretrain"
        self.predictions = self.data / "predictions" / "test.parquet"

    def collect(self) -> None:
        collect.main(
            [
                *self.params,
                "--root",
                str(self.root),
                "--data-dir",
                str(self.data),
                "--stats-file",
                str(self.stats),
            ]
        )

    def pretrain(self) -> None:
        pretrain.main(
            [
                *self.params,
                "--corpus-dir",
                str(self.data / "corpus"),
                "--model-dir",
                str(self.pretrained),
                "--report-dir",
                str(self.pt_reports),
                "--checkpoint-dir",
                str(self.checkpoints),
            ]
        )

    def multitask(self) -> None:
        multitask.main(
            [
                *self.params,
                "--data-dir",
                str(self.data),
                "--base-model-dir",
                str(self.pretrained),
                "--model-dir",
                str(self.multitasked),
                "--report-dir",
                str(self.mt_reports),
            ]
        )

    def finetune(self) -> None:
        finetune.main(
            [
                *self.params,
                "--data-dir",
                str(self.data),
                "--base-model-dir",
                str(self.multitasked),
                "--model-dir",
                str(self.model),
                "--report-dir",
                str(self.ft_reports),
            ]
        )

    def evaluate(self) -> None:
        evaluate.main(
            [
                *self.params,
                "--data-dir",
                str(self.data),
                "--model-dir",
                str(self.model),
                "--report-dir",
                str(self.ev_reports),
                "--predictions-file",
                str(self.predictions),
            ]
        )

    def all(self) -> None:
        self.collect()
        self.pretrain()
        self.multitask()
        self.finetune()
        self.evaluate()


def question_length_task(tmp_path: Path, trec_sample: dict) -> dict:
    """A regression task on the real questions: the target is each question's word count."""
    rows = [
        {"question": r["text"], "words": float(len(r["text"].split()))}
        for split in ("train", "validation")
        for r in trec_sample[split]
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "qlen.csv", index=False)
    return {
        "qlen": {
            "domain": "question",
            "problem": "regression",
            "source": {
                "kind": "files",
                "train": "qlen.csv",
                "text_column": "question",
                "label_column": "words",
            },
            "split": {"validation_ratio": 0.2, "test_ratio": 0.1},
        }
    }


def test_chain_on_tiny_model(
    tmp_path: Path, tiny_model_dir: Path, trec_files: dict, trec_sample: dict
) -> None:
    tasks = trec_files | question_length_task(tmp_path, trec_sample)
    params_file = write_params(
        tmp_path / "params.yaml",
        str(tiny_model_dir),
        tasks,
        "trec",
        multitask={"enabled": True, "tasks": ["trec", "qlen"]},
    )
    c = Chain(tmp_path, params_file, tmp_path)
    c.all()

    qlen = json.loads((c.data / "tasks" / "qlen" / "labels.json").read_text())
    assert (qlen["problem"], qlen["labels"]) == ("regression", [])
    assert pd.read_parquet(c.data / "tasks" / "qlen" / "train.parquet")["label"].dtype == float
    mt = json.loads((c.mt_reports / "metrics.json").read_text())
    assert set(mt["validation"]["qlen"]) == {"pearson", "spearman", "mse"}
    assert 0 <= mt["validation"]["trec"]["accuracy"] <= 1
    assert sum(mt["task_batches"].values()) == TINY_MULTITASK["max_steps"]
    mt_loss = pd.read_csv(c.mt_reports / "loss.csv")
    assert {"loss_trec", "loss_qlen"} <= set(mt_loss.columns)
    heads = json.loads((c.multitasked / "multitask_heads" / "tasks.json").read_text())["tasks"]
    assert heads["qlen"]["problem"] == "regression" and heads["trec"]["labels"]
    assert json.loads((c.ft_reports / "metrics.json").read_text())["head_from_multitask"]

    task_dir = c.data / "tasks" / "trec"
    labels = json.loads((task_dir / "labels.json").read_text())["labels"]
    assert labels == sorted({r["label"] for r in trec_sample["train"]})
    stats = json.loads(c.stats.read_text())
    assert stats["trec"]["test"]["rows"] == len(trec_sample["test"])
    assert stats["trec"]["train"]["tokens"]["p50"] > 3
    assert stats["corpus"]["tasks"] == ["trec"]
    corpus = pd.concat(
        [pd.read_parquet(c.data / "corpus" / f"{s}.parquet") for s in ("train", "heldout")]
    )
    held_out = {r["text"] for s in ("validation", "test") for r in trec_sample[s]}
    assert len(corpus) > 0 and not set(corpus["text"]) & held_out

    pt = json.loads((c.pt_reports / "metrics.json").read_text())
    assert pt["steps"] == TINY_PRETRAIN["max_steps"]
    assert pt["heldout_after"]["loss"] < pt["heldout_before"]["loss"]

    config = json.loads((c.model / "config.json").read_text())
    assert [config["id2label"][str(i)] for i in range(len(labels))] == labels
    assert (c.model / "model.safetensors").is_file()
    assert not list(c.model.parent.glob(".finetune-*"))  # checkpoints cleaned up

    ft = json.loads((c.ft_reports / "metrics.json").read_text())
    assert ft["best_epoch"] in (1.0, 2.0)
    history = pd.read_csv(c.ft_reports / "validation.csv")
    assert history["epoch"].tolist() == [1.0, 2.0]
    assert ft["validation"]["accuracy"] == history["accuracy"].max()
    loss = pd.read_csv(c.ft_reports / "loss.csv")
    assert len(loss) >= 2 and loss["loss"].notna().all()

    metrics = json.loads((c.ev_reports / "metrics.json").read_text())
    for key in ("accuracy", "error_rate", "macro_f1"):
        assert math.isfinite(metrics[key]) and 0 <= metrics[key] <= 1
    assert metrics["accuracy"] + metrics["error_rate"] == pytest.approx(1)
    assert metrics["test_examples"] == len(trec_sample["test"])
    per_class = json.loads((c.ev_reports / "per_class.json").read_text())
    assert sorted(per_class) == labels
    confusion = pd.read_csv(c.ev_reports / "confusion.csv")
    assert list(confusion.columns) == ["actual", "predicted"]
    assert confusion["actual"].tolist() == [r["label"] for r in trec_sample["test"]]
    predictions = pd.read_parquet(c.predictions)
    assert (predictions["predicted"] == confusion["predicted"]).all()
    assert "| accuracy |" in (c.ev_reports / "report.md").read_text()

    # the result is a standard HF directory: the stock pipeline loads it and predicts a label
    classify = pipeline("text-classification", model=str(c.model), device="cpu")
    out = classify(["What city is the capital of France ?"] * 2)
    assert out[0]["label"] in labels and 0 < out[0]["score"] <= 1


def ready_for_finetune(tmp_path: Path, model_dir: Path, tasks: dict, **overrides: dict) -> Chain:
    """collect and pass-through pretrain and multitask of the trec task, ready for finetune."""
    params_file = write_params(
        tmp_path / "params.yaml",
        str(model_dir),
        tasks,
        "trec",
        pretrain={"corpus": "none"},
        **overrides,
    )
    c = Chain(tmp_path, params_file, tmp_path)
    c.collect()
    c.pretrain()
    c.multitask()
    return c


def test_finetune_never_reads_test(tmp_path: Path, tiny_model_dir: Path, trec_files: dict) -> None:
    c = ready_for_finetune(tmp_path, tiny_model_dir, trec_files, finetune={"num_train_epochs": 1})
    (c.data / "tasks" / "trec" / "test.parquet").unlink()
    c.finetune()
    assert (c.model / "config.json").is_file()


def test_max_seq_length_above_model_limit_fails_finetune(
    tmp_path: Path, tiny_model_dir: Path, trec_files: dict
) -> None:
    c = ready_for_finetune(tmp_path, tiny_model_dir, trec_files, model={"max_seq_length": 4096})
    with pytest.raises(ValueError, match=r"max_position_embeddings \(128 .*got 4096"):
        c.finetune()


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
        Chain(tmp_path, params_file, tmp_path).collect()


def test_multitask_task_missing_from_the_catalogue_fails_collect(
    tmp_path: Path, tiny_model_dir: Path, trec_files: dict
) -> None:
    params_file = write_params(
        tmp_path / "params.yaml",
        str(tiny_model_dir),
        trec_files,
        "trec",
        multitask={"enabled": True, "tasks": ["trec", "yelp"]},
    )
    with pytest.raises(ValueError, match=r"multitask.tasks: \['yelp'\] not in the catalogue"):
        Chain(tmp_path, params_file, tmp_path).collect()


@pytest.mark.slow
def test_embedded_default_chain_on_mr(tmp_path: Path) -> None:
    """The real chain on the embedded MiniLM and mr, with few steps and a small train sample."""
    params = copy.deepcopy(read_params_file(PROJECT_ROOT / "params.yaml"))
    params["pretrain"] |= {"max_steps": 4, "save_steps": 2}
    params["multitask"] |= {"max_steps": 4, "eval_steps": 2}
    params["finetune"] |= {"max_train_samples": 96, "num_train_epochs": 1}
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    c = Chain(tmp_path, params_file, PROJECT_ROOT)
    c.all()
    stats = json.loads(c.stats.read_text())
    assert (
        stats["mr"]["train"]["rows"],
        stats["mr"]["validation"]["rows"],
        stats["mr"]["test"]["rows"],
    ) == (10251, 1278, 1279)
    # within_task: mr's train text and its plot synopses
    assert stats["corpus"]["train_texts"] + stats["corpus"]["heldout_texts"] > 10251
    pt = json.loads((c.pt_reports / "metrics.json").read_text())
    assert pt["steps"] == 4 and pt["heldout_before"]["masked_tokens"] > 0
    mt = json.loads((c.mt_reports / "metrics.json").read_text())
    assert sorted(mt["validation"]) == ["airline", "bbc", "mr", "trec"]
    assert sum(mt["task_batches"].values()) == 4
    assert json.loads((c.ft_reports / "metrics.json").read_text())["head_from_multitask"]
    metrics = json.loads((c.ev_reports / "metrics.json").read_text())
    assert metrics["test_examples"] == 1279
    classify = pipeline("text-classification", model=str(c.model), device="cpu")
    assert classify("a gorgeous, witty, moving film")[0]["label"] in ("fresh", "rotten")


@pytest.mark.slow
def test_stages_run_under_torchrun(tmp_path: Path, tiny_model_dir: Path, trec_files: dict) -> None:
    """pretrain, multitask and finetune as 2 DDP processes (gloo on the CPU), as on GPUs."""
    params_file = write_params(
        tmp_path / "params.yaml",
        str(tiny_model_dir),
        trec_files,
        "trec",
        multitask={"enabled": True},
    )
    c = Chain(tmp_path, params_file, tmp_path)
    c.collect()
    # torchrun; `accelerate launch --multi_gpu` is the same on GPUs (its --cpu means 1 process)
    launch = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
    ]
    stage_args = {
        "pretrain.py": [
            "--corpus-dir",
            str(c.data / "corpus"),
            "--model-dir",
            str(c.pretrained),
            "--report-dir",
            str(c.pt_reports),
            "--checkpoint-dir",
            str(c.checkpoints),
        ],
        "multitask.py": [
            "--data-dir",
            str(c.data),
            "--base-model-dir",
            str(c.pretrained),
            "--model-dir",
            str(c.multitasked),
            "--report-dir",
            str(c.mt_reports),
        ],
        "finetune.py": [
            "--data-dir",
            str(c.data),
            "--base-model-dir",
            str(c.multitasked),
            "--model-dir",
            str(c.model),
            "--report-dir",
            str(c.ft_reports),
        ],
    }
    for script, args in stage_args.items():
        done = subprocess.run(
            [*launch, str(PROJECT_ROOT / "stages" / script), *c.params, *args],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    pt = json.loads((c.pt_reports / "metrics.json").read_text())
    assert (pt["world_size"], pt["steps"]) == (2, TINY_PRETRAIN["max_steps"])
    mt = json.loads((c.mt_reports / "metrics.json").read_text())
    assert mt["world_size"] == 2 and mt["task_batches"] == {"trec": 2 * TINY_MULTITASK["max_steps"]}
    ft = json.loads((c.ft_reports / "metrics.json").read_text())
    assert ft["world_size"] == 2 and ft["head_from_multitask"]
    assert (c.model / "config.json").is_file()
    assert not list(c.model.parent.glob(".finetune-*"))
    c.evaluate()
    assert json.loads((c.ev_reports / "metrics.json").read_text())["test_examples"] == 60
