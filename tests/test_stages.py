"""The stage scripts chained on tmp_path: collect, pretrain, multitask, finetune, evaluate."""

from __future__ import annotations

import copy
import json
import logging
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file
from sklearn.metrics import accuracy_score, f1_score
from transformers import pipeline

from bertfit.params import read_params_file
from stages import collect, evaluate, finetune, multitask, pretrain, summary
from tests.conftest import (
    PROJECT_ROOT,
    TINY_FINETUNE,
    TINY_MULTITASK,
    TINY_PRETRAIN,
    TINY_T5,
    live_curve,
    live_training,
    live_validation,
)

TRAINED = ("pretrain", "multitask", "finetune")  # the stages that log through DVCLive


def write_params(path: Path, model_name: str, tasks: dict, target: str, **overrides: dict) -> Path:
    params = {
        "target": target,
        "model": {"name": model_name, "max_seq_length": 32},
        "tasks": tasks,
        "collect": {
            "seed": 0,
            "max_empty_ratio": 0.01,
            "max_missing_label_ratio": 0.0,
            "corpus_heldout_ratio": 0.1,
            "warn_unknown_token_share": 0.01,
        },
        "pretrain": dict(TINY_PRETRAIN),
        "multitask": dict(TINY_MULTITASK) | {"enabled": False},
        "finetune": dict(TINY_FINETUNE),
        "evaluate": {
            "per_device_eval_batch_size": 32,
            "mixed_precision": "auto",
            "prediction": "rank",
        },
    }
    for section, values in overrides.items():
        params[section] = params.get(section, {}) | values
    path.write_text(yaml.safe_dump(params), encoding="utf-8")
    return path


def dvc_arguments() -> dict[str, dict[str, str]]:
    """Each stage's options in dvc.yaml's cmd after `stages/python stages/<name>.py`: option ->
    value.

    The chain runs the stages with these, so a path dvc.yaml changes is the path tested.
    """
    stages = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    arguments = {}
    for name, stage in stages.items():
        words = shlex.split(stage["cmd"])
        assert words[:2] == ["stages/python", f"stages/{name}.py"], stage["cmd"]
        options, values = words[2::2], words[3::2]
        assert len(options) == len(values), f"an option without a value: {stage['cmd']}"
        assert all(option.startswith("--") for option in options), stage["cmd"]
        arguments[name] = dict(zip(options, values, strict=True))
    return arguments


class Chain:
    """The stage mains with dvc.yaml's arguments, every path re-rooted under one tmp_path."""

    def __init__(self, tmp_path: Path, params_file: Path, root: Path) -> None:
        self.params = ["--params", str(params_file)]
        self.root = root
        self.with_params = {s for s, options in dvc_arguments().items() if "--params" in options}
        # per stage, option -> path: every option but --params (self.params instead) is a path
        self.paths = {
            stage: {opt: tmp_path / value for opt, value in options.items() if opt != "--params"}
            for stage, options in dvc_arguments().items()
        }
        self.data = self.paths["collect"]["--data-dir"]
        self.stats = self.paths["collect"]["--stats-file"]
        self.pretrained = self.paths["pretrain"]["--model-dir"]
        self.pt_reports = self.paths["pretrain"]["--report-dir"]
        self.checkpoints = self.paths["pretrain"]["--checkpoint-dir"]
        self.multitasked = self.paths["multitask"]["--model-dir"]
        self.mt_reports = self.paths["multitask"]["--report-dir"]
        self.model = self.paths["finetune"]["--model-dir"]
        self.ft_reports = self.paths["finetune"]["--report-dir"]
        self.ev_reports = self.paths["evaluate"]["--report-dir"]
        self.predictions = self.paths["evaluate"]["--predictions-file"]
        self.summary_dir = self.paths["summary"]["--out-dir"]

    def argv(self, stage: str) -> list[str]:
        """A stage's command line after its script: dvc.yaml's, re-rooted; collect gets --root."""
        argv = [*self.params] if stage in self.with_params else []
        for option, path in self.paths[stage].items():
            argv += [option, str(path)]
        if stage == "collect":
            argv += ["--root", str(self.root)]
        return argv

    def collect(self) -> None:
        collect.main(self.argv("collect"))

    def pretrain(self) -> None:
        pretrain.main(self.argv("pretrain"))

    def multitask(self) -> None:
        multitask.main(self.argv("multitask"))

    def finetune(self) -> None:
        finetune.main(self.argv("finetune"))

    def evaluate(self) -> None:
        evaluate.main(self.argv("evaluate"))

    def through_finetune(self) -> None:
        self.collect()
        self.pretrain()
        self.multitask()
        self.finetune()

    def summary(self) -> None:
        summary.main(self.argv("summary"))

    def all(self) -> None:
        self.through_finetune()
        self.evaluate()
        self.summary()


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


def trec_and_qlen_params(
    root: Path, model_name: str, trec_files: dict, trec_sample: dict, **overrides: dict
) -> Path:
    """params.yaml in root for the trec target with multitask on trec and qlen (regression)."""
    tasks = trec_files | question_length_task(root, trec_sample)
    multitask = {"enabled": True, "tasks": ["trec", "qlen"]} | overrides.pop("multitask", {})
    return write_params(
        root / "params.yaml", model_name, tasks, "trec", multitask=multitask, **overrides
    )


@pytest.mark.slow
def test_text_to_text_chain_from_scratch(
    tmp_path: Path, trec_files: dict, trec_sample: dict
) -> None:
    """A T5 built by collect (sentencepiece trained on the data) through all five stages."""
    (tmp_path / "t5.json").write_text(json.dumps(TINY_T5), encoding="utf-8")
    tasks = trec_files | question_length_task(tmp_path, trec_sample)
    tasks["trec"] = tasks["trec"] | {"label_words": {"HUM": "person", "LOC": "place"}}
    seq2seq = {"optimizer": "adafactor", "learning_rate": 3e-3, "layer_decay": 1.0}
    params_file = write_params(
        tmp_path / "params.yaml",
        "scratch:t5.json",
        tasks,
        "trec",
        pretrain={"learning_rate": 1e-2, "max_steps": 20} | seq2seq,
        multitask={"enabled": True, "tasks": ["trec", "qlen"], "mixing_limit": 100} | seq2seq,
        finetune={"num_train_epochs": 3} | seq2seq,
        evaluate={"prediction": "generate"},
    )
    c = Chain(tmp_path, params_file, tmp_path)
    c.all()

    scratch = c.paths["collect"]["--scratch-dir"]
    tokenizer = json.loads((scratch / "tokenizer_config.json").read_text())
    assert tokenizer["tokenizer_class"] == "T5Tokenizer"
    vocab = json.loads((scratch / "tokenizer.json").read_text())["model"]["vocab"]
    assert [piece for piece, _ in vocab[:3]] == ["<pad>", "</s>", "<unk>"]
    trec = json.loads((c.data / "tasks" / "trec" / "labels.json").read_text())
    assert trec["label_words"] == {"HUM": "person", "LOC": "place"}

    pt = json.loads((c.pt_reports / "run.json").read_text())
    assert pt["steps"] == 20
    assert pt["heldout_after"]["loss"] < pt["heldout_before"]["loss"]
    manifest = json.loads((c.multitasked / "bertfit_model.json").read_text())
    assert (manifest["family"], manifest["head"]) == ("seq2seq", "text2text")
    grid = manifest["heads"]["qlen"]["head_config"]["values"]
    words = pd.read_parquet(c.data / "tasks" / "qlen" / "train.parquet")["label"]
    assert grid[0] <= words.min() and grid[-1] >= words.max()
    assert grid[1] - grid[0] == pytest.approx(0.2)
    mt = json.loads((c.mt_reports / "run.json").read_text())
    assert set(mt["validation"]) == {"trec", "qlen"}

    ft_manifest = json.loads((c.model / "bertfit_model.json").read_text())
    assert (ft_manifest["family"], ft_manifest["stage"]) == ("seq2seq", "finetune")
    metrics = json.loads((c.ev_reports / "metrics.json").read_text())
    predictions = pd.read_parquet(c.predictions)
    labels = json.loads((c.data / "tasks" / "trec" / "labels.json").read_text())["labels"]
    assert set(predictions["prediction"]) <= set(labels)  # ranking: always a valid label
    assert metrics["accuracy"] == pytest.approx(
        accuracy_score(predictions["label"], predictions["prediction"])
    )
    assert 0 <= metrics["generate_valid_share"] <= 1
    words = ["person", "place", *[x for x in labels if x not in ("HUM", "LOC")]]
    valid = predictions["generated"].isin(words).mean()
    assert metrics["generate_valid_share"] == pytest.approx(valid)


def test_chain_on_tiny_model(
    tmp_path: Path, tiny_model_dir: Path, trec_files: dict, trec_sample: dict
) -> None:
    params_file = trec_and_qlen_params(tmp_path, str(tiny_model_dir), trec_files, trec_sample)
    c = Chain(tmp_path, params_file, tmp_path)
    c.all()

    qlen = json.loads((c.data / "tasks" / "qlen" / "labels.json").read_text())
    assert (qlen["problem"], qlen["labels"]) == ("regression", [])
    assert pd.read_parquet(c.data / "tasks" / "qlen" / "train.parquet")["label"].dtype == float
    mt = json.loads((c.mt_reports / "run.json").read_text())
    assert set(mt["validation"]["qlen"]) == {"pearson", "spearman", "mse", "loss"}
    mt_mean = live_curve(c.mt_reports, "multitask", "validation_mean_main")
    mt_best = mt_mean["validation_mean_main"].idxmax()  # the first maximum
    assert mt["best_step"] == mt_mean["step"][mt_best]
    trec_accuracy = live_curve(c.mt_reports, "multitask", "validation/trec/accuracy")
    assert mt["validation"]["trec"]["accuracy"] == trec_accuracy["accuracy"][mt_best]
    assert sum(mt["task_batches"].values()) == TINY_MULTITASK["max_steps"]
    for task in ("trec", "qlen"):
        assert len(live_curve(c.mt_reports, "multitask", f"task_loss/{task}"))
    manifest = json.loads((c.multitasked / "bertfit_model.json").read_text())
    heads = manifest["heads"]
    assert (manifest["head"], sorted(heads)) == ("multitask", ["qlen", "trec"])
    assert heads["qlen"]["task"]["problem"] == "regression" and heads["trec"]["task"]["labels"]
    assert (c.multitasked / heads["trec"]["file"]).is_file()
    ft = json.loads((c.ft_reports / "run.json").read_text())
    assert ft["head_from_multitask"]

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

    pt = json.loads((c.pt_reports / "run.json").read_text())
    assert pt["steps"] == TINY_PRETRAIN["max_steps"]
    assert pt["heldout_after"]["loss"] < pt["heldout_before"]["loss"]

    config = json.loads((c.model / "config.json").read_text())
    assert [config["id2label"][str(i)] for i in range(len(labels))] == labels
    assert (c.model / "model.safetensors").is_file()
    assert not list(c.model.parent.glob(".finetune-*"))  # checkpoints cleaned up

    ft = json.loads((c.ft_reports / "run.json").read_text())
    selected_on = json.loads((c.ft_reports / "run.json").read_text())["selected_on"]
    history = live_validation(c.ft_reports, sorted({"accuracy", selected_on}))
    assert history["step"].tolist() == [ft["train_steps"] // 2, ft["train_steps"]]  # per epoch
    assert ft["validation"]["accuracy"] == history["accuracy"].max()
    scores = history[selected_on]
    best = scores.idxmin() if selected_on == "loss" else scores.idxmax()  # the first best epoch
    assert ft["best_step"] == history.loc[best, "step"]
    assert ft["validation"][selected_on] == history.loc[best, selected_on]
    loss = live_training(c.ft_reports, "finetune")
    assert len(loss) >= 2 and loss["loss"].notna().all() and loss["learning_rate"].notna().all()

    metrics = json.loads((c.ev_reports / "metrics.json").read_text())
    predictions = pd.read_parquet(c.predictions)
    actual, predicted = predictions["label"], predictions["prediction"]
    assert metrics["accuracy"] == pytest.approx(accuracy_score(actual, predicted))
    macro_f1 = f1_score(actual, predicted, average="macro", zero_division=0)
    assert metrics["macro_f1"] == pytest.approx(macro_f1)
    assert metrics["accuracy"] + metrics["error_rate"] == pytest.approx(1)
    record = json.loads((c.ev_reports / "run.json").read_text())
    assert record["test_examples"] == len(trec_sample["test"])
    interval = record["interval"]  # the headline's 95 % interval holds the test accuracy
    assert interval["lower"] <= metrics["accuracy"] <= interval["upper"]
    # metrics.json: what a reviewer compares (issue 34), a column each in `dvc exp show`; the
    # calibrated probabilities' expected calibration error too
    assert set(metrics) == {"accuracy", "error_rate", "macro_f1", "mcc", "ece"}
    reviewed = {
        r: json.loads((r / "metrics.json").read_text())
        for r in (c.pt_reports, c.mt_reports, c.ft_reports)
    }
    assert reviewed[c.pt_reports] == {
        "heldout_after": {"loss": pt["heldout_after"]["loss"]},
        "heldout_before": {"loss": pt["heldout_before"]["loss"]},
    }
    assert reviewed[c.mt_reports] == {"validation_mean_main": mt["validation_mean_main"]}
    assert reviewed[c.ft_reports] == {
        "validation": {selected_on: ft["validation"][selected_on]},
        "trainable_parameters": ft["trainable_parameters"],
        "train_examples": ft["train_examples"],
    }
    assert set(json.loads((c.ft_reports / "run.json").read_text())["params"]) >= {"seed"}
    report_lines = (c.ev_reports / "report.md").read_text().splitlines()
    assert report_lines[2].startswith(f"**trec test accuracy {metrics['accuracy']:.3f} [")

    # the summary: the headline first in `dvc exp show`, every stage's record in git
    headline = json.loads((c.summary_dir / "headline.json").read_text())
    assert list(headline) == [
        "test_accuracy",
        "test_accuracy_lower",
        "test_accuracy_upper",
        "wall_min",
    ]
    assert headline["test_accuracy"] == metrics["accuracy"]
    assert headline["test_accuracy_lower"] == interval["lower"]
    walls = [json.loads((r / "run.json").read_text())["wall_s"] for r in reviewed]
    assert headline["wall_min"] > sum(walls) / 60 > 0  # evaluate's time too
    stages = json.loads((c.summary_dir / "stages.json").read_text())
    assert list(stages) == ["evaluate", "finetune", "multitask", "pretrain"]
    assert stages["finetune"]["best_step"] == ft["best_step"] and "params" not in stages["finetune"]

    # the curves the plots draw: a row per step and series, the kept step marked
    mt_curves = json.loads((c.mt_reports / "curves" / "validation.json").read_text())["rows"]
    mean = [r for r in mt_curves if r["series"] == "mean"]
    assert [r["step"] for r in mean] == mt_mean["step"].tolist()
    assert [r["kept"] for r in mean] == [int(r["step"] == mt["best_step"]) for r in mean]
    trec_rows = [r for r in mt_curves if r["series"] == "trec"]
    assert [r["selection"] for r in trec_rows] == trec_accuracy["accuracy"].tolist()
    assert {r["series"] for r in mt_curves} == {"trec", "qlen", "mean"}
    assert all(r["accuracy"] is None for r in mt_curves if r["series"] == "qlen")
    ft_curves = json.loads((c.ft_reports / "curves" / "validation.json").read_text())["rows"]
    assert [r["step"] for r in ft_curves] == history["step"].tolist()
    assert [r["kept"] for r in ft_curves] == [int(r["step"] == ft["best_step"]) for r in ft_curves]
    training = json.loads((c.mt_reports / "curves" / "training.json").read_text())["rows"]
    assert {r["series"] for r in training} == {"all tasks", "trec", "qlen"}
    per_class = json.loads((c.ev_reports / "per_class.json").read_text())
    assert sorted(per_class) == labels
    confusion = pd.read_csv(c.ev_reports / "confusion.csv")
    assert list(confusion.columns) == ["actual", "predicted"]
    assert confusion["actual"].tolist() == [r["label"] for r in trec_sample["test"]]
    assert (predictions["prediction"] == confusion["predicted"]).all()
    report = (c.ev_reports / "report.md").read_text()
    assert "| accuracy |" in report
    # its pictures: the confusion matrix, F1 per class, and the curve from finetune's history
    for name in ("confusion.png", "per_class_f1.png", "validation.png"):
        assert f"(figures/{name})" in report
        assert (c.ev_reports / "figures" / name).read_bytes()[:4] == b"\x89PNG"

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


def test_max_seq_length_above_model_limit_fails_collect(
    tmp_path: Path, tiny_model_dir: Path, trec_files: dict
) -> None:
    params_file = write_params(
        tmp_path / "params.yaml",
        str(tiny_model_dir),
        trec_files,
        "trec",
        model={"max_seq_length": 4096},
    )
    c = Chain(tmp_path, params_file, tmp_path)
    with pytest.raises(ValueError, match=r"max_position_embeddings \(128 .*got 4096"):
        c.collect()
    assert not c.data.exists()  # refused before any task is read


@pytest.mark.parametrize(
    ("left_out", "pickled", "message"),
    [
        ("tokenizer*", False, r"has no tokenizer: .*tokenizer.json or .* \(vocab.txt\)"),
        ("model.safetensors", True, r"pytorch_model.bin \(a pickle\).*safetensors only"),
        ("model.safetensors", False, r"has a config.json but no weights"),
    ],
    ids=["no-tokenizer", "pickle-only", "config-only"],
)
def test_an_incomplete_model_directory_fails_collect(
    tmp_path: Path,
    tiny_model_dir: Path,
    trec_files: dict,
    left_out: str,
    pickled: bool,
    message: str,
) -> None:
    """Each of these got through collect, and trained on the wrong tokenizer or failed later."""
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken, ignore=shutil.ignore_patterns(left_out))
    if pickled:
        weights = load_file(tiny_model_dir / "model.safetensors")
        torch.save(weights, broken / "pytorch_model.bin")
    params_file = write_params(tmp_path / "params.yaml", str(broken), trec_files, "trec")
    c = Chain(tmp_path, params_file, tmp_path)
    with pytest.raises(
        FileNotFoundError, match=re.escape(f"model.name '{broken}'") + ".*" + message
    ):
        c.collect()
    assert not c.data.exists()


def test_a_scratch_model_is_built_then_checked_by_collect(tmp_path: Path, trec_files: dict) -> None:
    config = {
        "model_type": "bert",
        "vocab_size": 300,
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 4,
        "intermediate_size": 37,
        "max_position_embeddings": 64,
    }
    (tmp_path / "bert.json").write_text(json.dumps(config), encoding="utf-8")
    params_file = write_params(tmp_path / "params.yaml", "scratch:bert.json", trec_files, "trec")
    c = Chain(tmp_path, params_file, tmp_path)
    c.collect()
    scratch = c.paths["collect"]["--scratch-dir"]
    assert (scratch / "model.safetensors").is_file() and (scratch / "tokenizer.json").is_file()
    assert json.loads(c.stats.read_text())["trec"]["unknown_token_share"] < 0.01

    too_long = write_params(
        tmp_path / "long.yaml",
        "scratch:bert.json",
        trec_files,
        "trec",
        model={"max_seq_length": 128},
    )
    with pytest.raises(ValueError, match=r"max_position_embeddings \(64 .*got 128"):
        Chain(tmp_path, too_long, tmp_path).collect()


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


def test_a_target_outside_multitask_tasks_passes_multitask_through(
    tmp_path: Path,
    tiny_model_dir: Path,
    trec_files: dict,
    trec_sample: dict,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A user's own target with the demo multitask set: neither collect nor multitask spends
    time on the other tasks; the log says why and how to include the target (issue 13)."""
    params_file = trec_and_qlen_params(
        tmp_path,
        str(tiny_model_dir),
        trec_files,
        trec_sample,
        multitask={"enabled": True, "tasks": ["qlen"]},
        pretrain={"corpus": "none"},
    )
    c = Chain(tmp_path, params_file, tmp_path)
    c.collect()
    assert sorted(p.name for p in (c.data / "tasks").iterdir()) == ["trec"]  # qlen not read
    assert sorted(json.loads(c.stats.read_text())) == ["corpus", "trec"]
    c.pretrain()
    with caplog.at_level(logging.INFO):
        c.multitask()
    said = [r.getMessage() for r in caplog.records]  # the stage's headline: its last line
    assert any(
        "the target 'trec' is not in multitask.tasks ['qlen'] (add it there to train it "
        "together with them): "
        in m
        and m.endswith("passed through unchanged")
        for m in said
    ), said
    assert json.loads((c.mt_reports / "metrics.json").read_text()) == {}
    assert json.loads((c.mt_reports / "run.json").read_text())["enabled"] is False
    manifest = json.loads((c.multitasked / "bertfit_model.json").read_text())
    assert manifest["head"] == "none" and not (c.multitasked / "multitask_heads").exists()
    assert manifest["recipe"][-1]["reason"].startswith("the target 'trec' is not in")


@pytest.mark.slow
def test_embedded_default_chain_on_mr(tmp_path: Path) -> None:
    """The real chain on the embedded MiniLM and mr, with few steps and a small train sample."""
    params = copy.deepcopy(read_params_file(PROJECT_ROOT / "params.yaml"))
    params["pretrain"] |= {"max_steps": 4, "save_steps": 2, "head_warmup_steps": 2, "eval_steps": 2}
    params["multitask"] |= {"max_steps": 4, "eval_steps": 4}  # one validation of the four tasks
    params["finetune"] |= {"max_train_samples": 96, "num_train_epochs": 1, "min_train_steps": None}
    params["finetune"] |= {"max_validation_samples": 200}
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
    pt = json.loads((c.pt_reports / "run.json").read_text())
    assert pt["steps"] == 4 and pt["heldout_before"]["masked_tokens"] > 0
    # MiniLM's fresh MLM head learns alone first: the held-out loss falls before the encoder moves
    assert pt["heldout_before"]["loss"] > pt["heldout_after_head_warmup"]["loss"]
    mt = json.loads((c.mt_reports / "run.json").read_text())
    assert sorted(mt["validation"]) == ["airline", "bbc", "mr", "trec"]
    assert sum(mt["task_batches"].values()) == 4
    ft = json.loads((c.ft_reports / "run.json").read_text())
    assert ft["head_from_multitask"]
    assert (ft["train_examples"], ft["validation_examples"]) == (96, 200)  # both drawn
    evaluated = json.loads((c.ev_reports / "run.json").read_text())  # the whole record
    assert evaluated["test_examples"] == 1279
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
    for stage in ("pretrain", "multitask", "finetune"):  # dvc_arguments checks the script paths
        done = subprocess.run(
            [*launch, str(PROJECT_ROOT / "stages" / f"{stage}.py"), *c.argv(stage)],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    pt = json.loads((c.pt_reports / "run.json").read_text())
    runs = {s: json.loads((c.paths[s]["--report-dir"] / "run.json").read_text()) for s in TRAINED}
    assert {s: r["world_size"] for s, r in runs.items()} == dict.fromkeys(TRAINED, 2)
    assert pt["steps"] == TINY_PRETRAIN["max_steps"]
    mt = json.loads((c.mt_reports / "run.json").read_text())
    assert mt["task_batches"] == {"trec": 2 * TINY_MULTITASK["max_steps"]}
    ft = json.loads((c.ft_reports / "run.json").read_text())
    assert ft["head_from_multitask"]
    # the main process alone writes the DVCLive logs: each logging step once
    pt_loss = live_curve(c.pt_reports, "pretrain", "loss")["step"]
    assert pt_loss.is_unique and pt_loss.iloc[-1] == TINY_PRETRAIN["max_steps"]
    assert live_curve(c.mt_reports, "multitask", "validation_mean_main")["step"].is_unique
    assert live_curve(c.ft_reports, "finetune", "validation/loss")["step"].is_unique
    assert (c.model / "config.json").is_file()
    assert not list(c.model.parent.glob(".finetune-*"))
    c.evaluate()
    assert json.loads((c.ev_reports / "run.json").read_text())["test_examples"] == 60
