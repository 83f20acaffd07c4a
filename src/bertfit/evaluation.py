"""The evaluate stage: score the fine-tuned model on the target's test split.

Reads the label set from collect's labels.json and the tokenisation settings saved with the
model, so the test text is encoded exactly as training text was.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from transformers import AutoTokenizer

from bertfit.data.collect import read_split, read_task_info
from bertfit.data.encoding import Encoder, Preprocessing
from bertfit.inference import predict_logits
from bertfit.metrics import per_class_metrics, task_metrics
from bertfit.models.pooling import ChunkCollator, load_sequence_classifier
from bertfit.params import EvaluateParams
from bertfit.reporting import markdown_table, write_csv, write_json, write_text
from bertfit.training.hardware import bf16_available

log = logging.getLogger(__name__)


def check_model_labels(
    model_dir: Path, config: Any, labels: list[str], problem: str = "classification"
) -> None:
    if problem == "regression":
        if config.num_labels != 1:
            raise ValueError(
                f"{model_dir}/config.json: {config.num_labels} outputs, but the task is a "
                f"regression; the model was trained on another task. Re-run finetune (dvc repro)."
            )
        return
    saved = [config.id2label[i] for i in range(len(config.id2label))]
    if saved != labels:
        raise ValueError(
            f"{model_dir}/config.json: id2label {saved} does not match the task's labels.json "
            f"{labels}; the model was trained on another task. Re-run finetune (dvc repro)."
        )


def write_report(
    path: Path,
    task: str,
    model_dir: Path,
    prep: Preprocessing,
    n: int,
    metrics: dict[str, Any],
    per_class: dict[str, dict[str, float]],
    confusion: pd.DataFrame | None,
) -> None:
    lines = [
        f"# Evaluation: {task}",
        "",
        f"Model `{model_dir}`, test split of `{task}` ({n} examples), truncation "
        f"{prep.truncation} at {prep.max_seq_length} tokens. The task's metric: "
        f"{metrics['metric']}.",
        "",
        markdown_table(["metric", "value"], [(k, v) for k, v in metrics.items() if k != "metric"]),
        "",
    ]
    if confusion is None:  # regression
        write_text(path, "\n".join(lines))
        return
    lines += [
        "## Per class",
        "",
        markdown_table(
            ["class", "precision", "recall", "F1", "support"],
            [[c, m["precision"], m["recall"], m["f1"], m["support"]] for c, m in per_class.items()],
        ),
        "",
        "## Confusion matrix (rows: actual, columns: predicted)",
        "",
        markdown_table(
            ["actual \\ predicted", *confusion.columns],
            [[i, *row] for i, row in zip(confusion.index, confusion.to_numpy(), strict=True)],
        ),
        "",
    ]
    write_text(path, "\n".join(lines))


def evaluate(
    model_dir: Path,
    task_dir: Path,
    params: EvaluateParams,
    report_dir: Path,
    predictions_file: Path,
) -> dict[str, Any]:
    info = read_task_info(task_dir)
    labels, problem, metric = info["labels"], info["problem"], info["metric"]
    task = task_dir.name
    model = load_sequence_classifier(model_dir)
    check_model_labels(model_dir, model.config, labels, problem)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prep = Preprocessing.load(model_dir)
    collator = ChunkCollator(tokenizer) if prep.truncation == "hierarchical" else None
    if torch.cuda.is_available():
        model.to("cuda")

    test = read_split(task_dir, "test")
    dataset = Encoder(tokenizer, prep).labelled(test, labels, problem, f"{task} [test]")
    bf16 = params.mixed_precision == "auto" and bf16_available()
    log.info("evaluating %s on %d %s test examples; bf16 %s", model_dir, len(test), task, bf16)
    logits = predict_logits(
        model, tokenizer, dataset, params.per_device_eval_batch_size, collator, bf16
    )
    y_true = np.asarray(dataset["labels"])
    positive = info["positive_label"]
    scores = task_metrics(problem, y_true, logits, labels.index(positive) if positive else None)
    # the task's official metric first (GLUE: MCC for CoLA, F1 for MRPC/QQP, Pearson for STS-B)
    metrics = {"metric": metric, metric: scores[metric]} | scores

    if problem == "regression":
        per_class: dict[str, dict[str, float]] = {}
        actual, predicted = y_true.tolist(), logits[:, 0].tolist()
        predictions = test.assign(predicted=predicted)
        confusion = None
    else:
        y_pred = logits.argmax(axis=-1)
        probs = torch.softmax(torch.from_numpy(logits), dim=-1).numpy()
        per_class = per_class_metrics(y_true, y_pred, labels)
        actual = [labels[i] for i in y_true]
        predicted = [labels[i] for i in y_pred]
        confusion = pd.crosstab(
            pd.Categorical(actual, labels), pd.Categorical(predicted, labels), dropna=False
        )
        predictions = test.assign(predicted=predicted, confidence=probs.max(axis=-1))

    write_json(report_dir / "metrics.json", {"task": task, "test_examples": len(test)} | metrics)
    write_json(report_dir / "per_class.json", per_class)
    write_csv(  # classification: the confusion plot's rows; regression: actual against predicted
        report_dir / "confusion.csv",
        ({"actual": a, "predicted": p} for a, p in zip(actual, predicted, strict=True)),
        ["actual", "predicted"],
    )
    predictions_file.parent.mkdir(parents=True, exist_ok=True)
    predictions.to_parquet(predictions_file, index=False)
    write_report(
        report_dir / "report.md", task, model_dir, prep, len(test), metrics, per_class, confusion
    )
    log.info("test %s: %s", task, metrics)
    return metrics
