"""GLUE-style tasks offline: the catalogue's GLUE entries, read from local files in their schema."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from transformers import AutoConfig

from bertfit.params import parse_tasks, read_params_file
from tests.conftest import PROJECT_ROOT
from tests.test_stages import Chain, write_params

# GLUE's own schema on the hub (nyu-mll/glue): text columns, class names, the split scored
GLUE = {
    "cola": ("cola", "sentence", None, ["unacceptable", "acceptable"], "validation"),
    "mrpc": ("mrpc", "sentence1", "sentence2", ["not_equivalent", "equivalent"], "validation"),
    "qqp": ("qqp", "question1", "question2", ["not_duplicate", "duplicate"], "validation"),
    "stsb": ("stsb", "sentence1", "sentence2", None, "validation"),
    "mnli": ("mnli", "premise", "hypothesis", ["entailment", "neutral", "contradiction"],
             "validation_matched"),
    "mnli_mismatched": ("mnli", "premise", "hypothesis",
                        ["entailment", "neutral", "contradiction"], "validation_mismatched"),
    "qnli": ("qnli", "question", "sentence", ["entailment", "not_entailment"], "validation"),
    "rte": ("rte", "sentence1", "sentence2", ["entailment", "not_entailment"], "validation"),
    "wnli": ("wnli", "sentence1", "sentence2", ["not_entailment", "entailment"], "validation"),
}  # fmt: skip
# the class a pair of same-class questions gets (the rest: the other class)
POSITIVE = {"equivalent", "duplicate", "entailment", "acceptable"}


def glue_rows(entry: str, trec: list[dict]) -> list[dict]:
    """Rows in the entry's GLUE columns and class names, made from real TREC questions.

    A pair is similar / "equivalent" / entailed when both questions share a coarse class, so the
    labels carry signal; single-sentence CoLA rows take acceptability from the question's class.
    """
    _, first, second, names, _ = GLUE[entry]
    rows = []
    for a, b in zip(trec, trec[1:] + trec[:1], strict=True):
        same = a["label"] == b["label"]
        row = {first: a["text"]} | ({} if second is None else {second: b["text"]})
        if names is None:  # STS-B: a 0-5 score
            row["label"] = 4.0 + 0.2 * len(b["text"]) % 1 if same else 1.0
        elif len(names) == 3:  # MNLI
            row["label"] = names[0] if same else names[1 + (len(a["text"]) > 40)]
        else:
            signal = a["label"] in ("DESC", "ENTY", "HUM") if second is None else same
            row["label"] = next(n for n in names if (n in POSITIVE) == signal)
        rows.append(row)
    return rows


@pytest.mark.parametrize("entry", sorted(GLUE))
def test_glue_entries_follow_the_hub_schema(entry: str) -> None:
    """Each catalogue entry names GLUE's config, columns and scored split, and parses."""
    config, first, second, names, test_split = GLUE[entry]
    spec = read_params_file(PROJECT_ROOT / "params.yaml")["tasks"][entry]
    source = spec["source"]
    assert (source["kind"], source["path"], source["name"]) == ("hub", "nyu-mll/glue", config)
    assert (source["text_column"], source.get("text_pair_column")) == (first, second)
    assert (source["validation_split"], source["test_split"]) == (None, test_split)
    assert spec["in_corpora"] is False
    task = parse_tasks({"tasks": {entry: spec}})[entry]
    assert task.problem == ("regression" if names is None else "classification")
    if task.positive_label is not None:
        assert task.positive_label in names and task.positive_label in POSITIVE


@pytest.mark.parametrize(
    ("entry", "keys"),
    [
        ("cola", {"mcc", "accuracy"}),
        ("mrpc", {"f1", "accuracy"}),
        ("qqp", {"f1", "accuracy"}),
        ("stsb", {"pearson", "spearman", "mse"}),
        ("mnli", {"accuracy", "macro_f1"}),
        ("mnli_mismatched", {"accuracy", "macro_f1"}),
        ("qnli", {"accuracy"}),
        ("rte", {"accuracy"}),
        ("wnli", {"accuracy"}),
    ],
)
def test_glue_entry_runs_with_its_official_metric(
    tmp_path: Path, tiny_model_dir: Path, trec_sample: dict, entry: str, keys: set
) -> None:
    catalogue = read_params_file(PROJECT_ROOT / "params.yaml")["tasks"]
    spec = catalogue[entry]
    hub = spec["source"]
    assert (hub["kind"], hub["path"], hub["name"]) == ("hub", "nyu-mll/glue", GLUE[entry][0])
    for split in ("train", "test"):  # the entry's own columns, from local files
        pd.DataFrame(
            glue_rows(entry, trec_sample[split if split == "train" else "validation"])
        ).to_json(tmp_path / f"{split}.jsonl", orient="records", lines=True)
    local = {k: v for k, v in hub.items() if k.endswith("_column")}
    spec = spec | {
        "source": {"kind": "files", "train": "train.jsonl", "test": "test.jsonl"} | local
    }
    parse_tasks({"tasks": {entry: spec}})  # a valid catalogue entry
    params_file = write_params(
        tmp_path / "params.yaml",
        str(tiny_model_dir),
        {entry: spec},
        entry,
        pretrain={"corpus": "none"},
        finetune={"num_train_epochs": 1, "metric_for_best_model": "task"},
    )
    c = Chain(tmp_path, params_file, tmp_path)
    c.all()

    info = json.loads((c.data / "tasks" / entry / "labels.json").read_text())
    assert info["metric"] == spec.get("metric", "accuracy")
    assert info["sentence_pair"] == ("text_pair_column" in local)  # what bertfit predict asks
    metrics = json.loads((c.ev_reports / "metrics.json").read_text())
    ev_run = json.loads((c.ev_reports / "run.json").read_text())  # names: not metrics
    assert (ev_run["task"], ev_run["metric"]) == (entry, info["metric"]) and keys <= set(metrics)
    assert not any(isinstance(v, str) for v in metrics.values())
    assert all(math.isfinite(metrics[k]) for k in keys)
    assert ev_run["test_examples"] == len(trec_sample["validation"])
    # the headline: the task's own metric inside its 95 % interval
    assert ev_run["interval"]["lower"] <= metrics[info["metric"]] <= ev_run["interval"]["upper"]
    ft_run = json.loads((c.ft_reports / "run.json").read_text())  # strings: not metrics
    assert ft_run["selected_on"] == info["metric"]
    if entry == "stsb":  # regression: one output, numeric predictions
        config = AutoConfig.from_pretrained(c.model)
        assert (config.num_labels, config.problem_type) == (1, "regression")
        predictions = pd.read_parquet(c.predictions)
        assert predictions["score"].dtype == float and "prediction" not in predictions


def test_pair_task_without_its_second_column_is_an_error(
    tmp_path: Path, tiny_model_dir: Path, trec_sample: dict
) -> None:
    rows = [{"sentence1": r["text"], "label": "equivalent"} for r in trec_sample["train"]]
    pd.DataFrame(rows).to_json(tmp_path / "train.jsonl", orient="records", lines=True)
    spec = {"domain": "glue", "source": {"kind": "files", "train": "train.jsonl",
            "text_column": "sentence1", "text_pair_column": "sentence2"},
            "split": {"validation_ratio": 0.1, "test_ratio": 0.1}}  # fmt: skip
    params_file = write_params(
        tmp_path / "params.yaml", str(tiny_model_dir), {"mrpc": spec}, "mrpc"
    )
    with pytest.raises(ValueError, match=r"missing column\(s\) \['sentence2'\]"):
        Chain(tmp_path, params_file, tmp_path).collect()


def test_regression_task_with_text_labels_is_an_error(
    tmp_path: Path, tiny_model_dir: Path, trec_sample: dict
) -> None:
    pd.DataFrame(trec_sample["train"]).to_json(
        tmp_path / "train.jsonl", orient="records", lines=True
    )
    spec = {"domain": "q", "problem": "regression", "metric": "pearson",
            "source": {"kind": "files", "train": "train.jsonl"},
            "split": {"validation_ratio": 0.1, "test_ratio": 0.1}}  # fmt: skip
    params_file = write_params(tmp_path / "params.yaml", str(tiny_model_dir), {"q": spec}, "q")
    with pytest.raises(ValueError, match=r"a regression task needs numeric labels; 240 are not"):
        Chain(tmp_path, params_file, tmp_path).collect()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"problem": "regression", "metric": "accuracy"}, r"'accuracy' does not fit a regression"),
        ({"metric": "pearson"}, r"metric 'pearson' does not fit a classification task"),
        ({"metric": "f1"}, r"metric f1 needs positive_label"),
    ],
)
def test_task_metric_must_fit_the_task(spec: dict, message: str) -> None:
    base = {"domain": "d", "source": {"kind": "files", "train": "x.csv"}}
    with pytest.raises(ValueError, match=message):
        parse_tasks({"tasks": {"t": base | spec}})
    defaults = parse_tasks({"tasks": {"c": base, "r": base | {"problem": "regression"}}})
    assert (defaults["c"].metric, defaults["r"].metric) == ("accuracy", "pearson")
