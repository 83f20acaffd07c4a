"""The evaluate stage: score the fine-tuned model on the target's test split.

Reads the task from collect's labels.json (data.tasks) and the model with its manifest
(models.family.load_trained), so the test text is encoded exactly as training text was and the
model is scored through its family's score, whatever its head: an encoder's logits, or a
seq2seq model's label-word ranking. With `prediction: generate` a seq2seq model also decodes
freely, and the report gives how often that produced no label word (counted as wrong).

The headline is the task's own metric with its 95 % interval, a percentile bootstrap
over the test rows (test_interval): how far the number would move on another test set of the
same size drawn from the same texts. It is the stage's last log line, report.md's first, and
run.json's `interval`; the summary stage adds the wall time and puts it first in `dvc exp show`.

report.md embeds PNGs from figures/ beside it (bertfit.figures): the confusion matrix and F1 per
class (regression: actual against predicted), and finetune's validation curve (the kept step
marked), read from finetune's report folder by finetune_history, the one place that knows its
files' format.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.stats import bootstrap

from bertfit.calibration import calibration_record
from bertfit.data.encoding import Preprocessing, token_lengths
from bertfit.data.tasks import Task
from bertfit.figures import (
    confusion_png,
    per_class_f1_png,
    regression_png,
    reliability_png,
    validation_curve_png,
)
from bertfit.hardware import use_bf16
from bertfit.inference import class_probabilities, model_scores, probability_columns
from bertfit.metrics import metric_value, per_class_metrics, task_metrics
from bertfit.models.family import Trained, load_trained
from bertfit.models.manifest import model_fingerprint
from bertfit.models.text2text import generate_labels, target_words
from bertfit.params import EvaluateParams
from bertfit.phases import elapsed_s, headline, phase
from bertfit.reporting import (
    CURVES_DIR,
    check_writable,
    markdown_table,
    write_csv,
    write_json,
    write_record,
    write_text,
)

log = logging.getLogger(__name__)

FIGURES = "figures"  # report.md's pictures, in this folder beside it
CONFIDENCE = 0.95
# resamples of the test rows: enough that the interval's ends barely move with the resampling's
# seed, few enough that an MCC or F1 interval takes seconds on a CPU
INTERVAL_RESAMPLES = 1000


def test_interval(
    task: Task, metric: str, labels: npt.NDArray[Any], scores: npt.NDArray[Any]
) -> dict[str, Any]:
    """The metric's 95 % percentile-bootstrap interval over the test rows (seeded: the same
    predictions give the same interval)."""

    def statistic(rows: npt.NDArray[Any]) -> float:
        return metric_value(task, metric, labels[rows], scores[rows])

    result = bootstrap(
        (np.arange(len(labels)),),
        statistic,
        vectorized=False,
        n_resamples=INTERVAL_RESAMPLES,
        confidence_level=CONFIDENCE,
        method="percentile",
        rng=np.random.default_rng(0),
    )
    low, high = result.confidence_interval
    return {
        "lower": float(low),
        "upper": float(high),
        "confidence": CONFIDENCE,
        "method": f"percentile bootstrap, {INTERVAL_RESAMPLES} resamples of the test rows",
    }


def headline_text(task: str, metric: str, value: float, interval: dict[str, Any]) -> str:
    """`mr test accuracy 0.816 [0.795, 0.837]`: the test metric and its 95 % interval."""
    return f"{task} test {metric} {value:.3f} [{interval['lower']:.3f}, {interval['upper']:.3f}]"


def check_model_task(model_dir: Path, trained: Task, task: Task) -> None:
    """The model must have been trained on the task's label set (a stale model is an error)."""
    if (trained.problem, trained.labels) != (task.problem, task.labels):
        raise ValueError(
            f"{model_dir}: trained on {trained.name} ({trained.problem}, labels "
            f"{trained.labels}), but {task.name} is {task.problem} with labels {task.labels}; "
            "the model was trained on another task. Re-run finetune (dvc repro)."
        )


def finetune_history(report_dir: Path) -> pd.DataFrame | None:
    """finetune's validation history, a row per validation (`step`, the scores, `selection`
    with its `low`/`high` band and `kept`), or None when it is not there (evaluate run on a model
    trained elsewhere, or a run that never validated).

    The one reader of finetune's history here: its curve table (training.live),
    `curves/validation.json` in finetune's report folder.
    """
    path = report_dir / CURVES_DIR / "validation.json"
    if not path.is_file():
        return None
    rows = json.loads(path.read_text(encoding="utf-8"))["rows"]
    if not rows:
        return None
    history = pd.DataFrame(rows).drop(columns="series").dropna(axis="columns", how="all")
    return history.sort_values("step", ignore_index=True)


def curve_axes(history: pd.DataFrame, metric: str) -> tuple[str, str] | None:
    """(x, y) of the validation curve: the task's metric (else the first one) against the step."""
    x = next((c for c in ("step", "epoch") if c in history), None)
    numbers = [
        c
        for c in history.select_dtypes("number")
        if c not in ("step", "epoch", "kept", "low", "high", "selection")
    ]
    y = metric if metric in numbers else next(iter(numbers), None)
    return (x, y) if x and y else None


def draw_figures(
    figures_dir: Path,
    task: Task,
    per_class: dict[str, dict[str, float]],
    confusion: pd.DataFrame | None,
    actual: list,
    predicted: list,
    finetune_report_dir: Path | None,
    calibration: dict[str, Any] | None = None,
) -> dict[str, str]:
    """The report's PNGs; returns what each picture is -> its file name in figures_dir, or, for
    the validation curve when finetune's history is missing, why there is none."""
    figures_dir.mkdir(parents=True, exist_ok=True)
    for old in figures_dir.glob("*.png"):  # a picture this run does not draw must not linger
        old.unlink()
    drawn: dict[str, str] = {}
    if confusion is None:
        drawn["scatter"] = regression_png(
            figures_dir / "actual_vs_predicted.png", actual, predicted, task.name
        ).name
    else:
        drawn["confusion"] = confusion_png(figures_dir / "confusion.png", confusion, task.name).name
        drawn["per_class"] = per_class_f1_png(
            figures_dir / "per_class_f1.png", per_class, task.name
        ).name
    if calibration is not None:
        drawn["reliability"] = reliability_png(
            figures_dir / "reliability.png", calibration, task.name
        ).name
    history = finetune_history(finetune_report_dir) if finetune_report_dir else None
    axes = curve_axes(history, task.metric) if history is not None else None
    if axes is None:
        where = finetune_report_dir or "(no --finetune-report-dir given)"
        drawn["validation_missing"] = f"No finetune validation history in `{where}`."
        log.warning("no finetune validation history in %s: the report has no curve", where)
    else:
        drawn["validation"] = validation_curve_png(
            figures_dir / "validation.png", history, axes[1], axes[0], task.name
        ).name
    return drawn


def write_report(
    path: Path,
    task: str,
    model_dir: Path,
    prep: Preprocessing,
    n: int,
    metrics: dict[str, Any],
    per_class: dict[str, dict[str, float]],
    confusion: pd.DataFrame | None,
    figures: dict[str, str] | None = None,
    interval: dict[str, Any] | None = None,
    calibration: dict[str, Any] | None = None,
    mistakes: pd.DataFrame | None = None,
) -> None:
    """report.md: the headline (the task's metric with its interval), the scores, per class,
    the confusion matrix, the calibration (ECE before and after temperature scaling, the
    reliability diagram, the most confident mistakes) and the pictures."""
    figures = figures or {}

    def picture(key: str, alt: str) -> list[str]:
        return [f"![{alt}]({FIGURES}/{figures[key]})", ""] if key in figures else []

    cut = metrics.get("test_share_truncated")
    metric = metrics["metric"]
    lines = [f"# Evaluation: {task}", ""]
    if interval is not None:
        lines += [
            f"**{headline_text(task, metric, metrics[metric], interval)}**: the 95 % interval "
            f"is a {interval['method']}.",
            "",
        ]
    lines += [
        f"Model `{model_dir}`, test split of `{task}` ({n} examples), truncation "
        f"{prep.truncation} at {prep.max_seq_length} tokens"
        + (f" ({100 * cut:.1f} % of the test texts were cut to fit)" if cut is not None else "")
        + f". The task's metric: {metrics['metric']}.",
        "",
        markdown_table(["metric", "value"], [(k, v) for k, v in metrics.items() if k != "metric"]),
        "",
    ]
    if confusion is None:  # regression
        lines += ["## Actual against predicted", "", *picture("scatter", "actual vs predicted")]
    else:
        lines += [
            "## Per class",
            "",
            markdown_table(
                ["class", "precision", "recall", "F1", "support"],
                [
                    [c, m["precision"], m["recall"], m["f1"], m["support"]]
                    for c, m in per_class.items()
                ],
            ),
            "",
            *picture("per_class", "F1 per class"),
            "## Confusion matrix (rows: actual, columns: predicted)",
            "",
            markdown_table(
                ["actual \\ predicted", *confusion.columns],
                [[i, *row] for i, row in zip(confusion.index, confusion.to_numpy(), strict=True)],
            ),
            "",
            *picture("confusion", "confusion matrix"),
        ]
    if calibration is not None:
        lines += calibration_lines(calibration, mistakes, picture("reliability", "reliability"))
    if figures:
        lines += ["## Validation during finetune", ""]
        lines += picture("validation", "finetune validation curve") or [
            figures["validation_missing"],
            "",
        ]
    write_text(path, "\n".join(lines))


MISTAKES_SHOWN = 10  # the most confident wrong predictions listed in report.md
EXCERPT = 120  # characters of a text shown in that table


def confident_mistakes(
    test: pd.DataFrame, actual: list, predicted: list, probs: np.ndarray
) -> pd.DataFrame:
    """The wrong predictions made with the highest probability, the surest first."""
    confidence = probs.max(axis=-1)
    rows = pd.DataFrame(
        {
            "text": test["text"].to_numpy(),
            "gold": actual,
            "predicted": predicted,
            "probability": confidence,
        }
    )
    wrong = rows[rows["gold"] != rows["predicted"]]
    return wrong.sort_values("probability", ascending=False, kind="stable").head(MISTAKES_SHOWN)


def calibration_lines(
    calibration: dict[str, Any], mistakes: pd.DataFrame | None, picture: list[str]
) -> list[str]:
    """report.md's calibration section."""
    t = calibration["temperature"]
    lines = [
        "## Calibration",
        "",
        f"Probabilities are the softmax of the scores divided by a temperature T = {t:.3f}, "
        "fitted on the validation split at the end of finetune (temperature scaling; the "
        "predicted class does not change). Expected calibration error on the test split, 10 "
        "equal-width confidence bins:",
        "",
        markdown_table(
            ["probabilities", "ECE"],
            [
                ["raw softmax (T = 1)", calibration["ece_uncalibrated"]],
                [f"temperature-scaled (T = {t:.3f})", calibration["ece"]],
            ],
        ),
        "",
        *picture,
    ]
    if mistakes is not None and len(mistakes):
        lines += [
            "### The most confident mistakes",
            "",
            markdown_table(
                ["text", "gold", "predicted", "probability"],
                [
                    [excerpt(r.text), r.gold, r.predicted, r.probability]
                    for r in mistakes.itertuples(index=False)
                ],
            ),
            "",
        ]
    return lines


def excerpt(text: str) -> str:
    return text if len(text) <= EXCERPT else text[: EXCERPT - 1].rstrip() + "…"


def generation(
    trained: Trained, task: Task, dataset: Any, params: EvaluateParams, y_true: np.ndarray
) -> dict[str, Any]:
    """`prediction: generate` on a seq2seq model: free decoding, its accuracy and validity."""
    if params.prediction == "rank" or not trained.family.generates:
        return {"metrics": {}, "texts": None}
    values = trained.manifest.head_config.get("values")
    words = target_words(task, values)
    texts, classes = generate_labels(
        trained.model,
        dataset,
        trained.collator(),
        trained.tokenizer,
        words,
        params.per_device_eval_batch_size,
    )
    valid = classes >= 0
    metrics: dict[str, Any] = {"generate_valid_share": float(valid.mean())}
    if task.problem == "classification":  # a text that is no label word is wrong
        metrics["generate_accuracy"] = float((classes == y_true).mean())
    log.info(
        "generate: %.1f %% of %d outputs are label words",
        100 * metrics["generate_valid_share"],
        len(texts),
    )
    return {"metrics": metrics, "texts": texts}


def truncated_share(tokenizer: Any, test: pd.DataFrame, prep: Any) -> float:
    """The share of test texts longer than the model's input (a warning when most are)."""
    cut = float((token_lengths(tokenizer, test) > prep.max_seq_length).mean())
    if cut > 0.5:
        log.warning(
            "%.0f %% of the test texts are longer than the model's %d-token input and were "
            "truncated (%s)",
            100 * cut,
            prep.max_seq_length,
            prep.truncation,
        )
    return round(cut, 4)


@dataclass
class Outcome:
    """What the test predictions are, for the report and the predictions file."""

    per_class: dict[str, dict[str, float]]
    actual: list
    predicted: list
    predictions: pd.DataFrame  # the test rows with bertfit predict's columns
    confusion: pd.DataFrame | None = None  # classification only, as are the rest
    calibration: dict[str, Any] | None = None
    mistakes: pd.DataFrame | None = None


def test_outcome(
    task: Task, test: pd.DataFrame, y_true: np.ndarray, logits: np.ndarray, temperature: float
) -> Outcome:
    """The per-class scores, the confusion, the calibration (probabilities: the scores over
    `temperature`) and the most confident mistakes; for regression the predicted values."""
    labels = task.labels
    if task.problem == "regression":
        actual, predicted = y_true.tolist(), logits[:, 0].tolist()
        return Outcome({}, actual, predicted, test.assign(score=predicted))
    y_pred = logits.argmax(axis=-1)
    probs = class_probabilities(logits, temperature)
    actual = [labels[i] for i in y_true]
    predicted = [labels[i] for i in y_pred]
    confusion = pd.crosstab(
        pd.Categorical(actual, labels), pd.Categorical(predicted, labels), dropna=False
    )
    predictions = test.assign(prediction=predicted, **probability_columns(labels, probs))
    return Outcome(
        per_class_metrics(y_true, y_pred, labels),
        actual,
        predicted,
        predictions,
        confusion,
        calibration_record(logits, y_true, temperature),
        confident_mistakes(test, actual, predicted, probs),
    )


@dataclass
class EvaluationRun:
    """What evaluate's set-up prepared: the trained model read back with its manifest, the
    target's test rows and those rows encoded as training encoded its texts."""

    model_dir: Path
    trained: Trained
    task: Task
    test: pd.DataFrame
    dataset: Any


@dataclass
class Scored:
    """What evaluate's run found: the metrics (the task's own first), the task's scores, the
    free decoding's metrics (empty without it), the outcome, every test row with its
    prediction, and the 95 % interval of the task's metric."""

    metrics: dict[str, Any]
    scores: dict[str, float]
    generated: dict[str, Any]
    outcome: Outcome
    predictions: pd.DataFrame
    interval: dict[str, Any]


def evaluate(
    model_dir: Path,
    task: Task,
    params: EvaluateParams,
    report_dir: Path,
    finetune_report_dir: Path | None = None,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Score the model in model_dir on the task's test split; write the reports.

    finetune_report_dir: where finetune wrote its validation history, for the report's curve.

    Returns the metrics and every test row with its prediction, in the columns bertfit predict
    writes (`prediction` and `prob_<label>`, or `score` for regression).
    """
    check_writable(report_dir)
    run = prepare_evaluation(model_dir, task)
    scored = score_test(run, params)
    save_evaluation(run, scored, params, report_dir, finetune_report_dir)
    return scored.metrics, scored.predictions


def prepare_evaluation(model_dir: Path, task: Task) -> EvaluationRun:
    """The set-up: the model (trained on this task's labels) and its encoded test split."""
    trained = load_trained(model_dir)
    check_model_task(model_dir, trained.task, task)
    test = task.split("test")
    with phase("tokenising"):
        dataset = trained.encoder().labelled(test, task, "test")
    return EvaluationRun(model_dir, trained, task, test, dataset)


def score_test(run: EvaluationRun, params: EvaluateParams) -> Scored:
    """The run: the test rows scored through the family, the task's metrics, the share of
    texts cut, the free decoding (`prediction: generate`), the calibration and the interval."""
    trained, task, test, dataset = run.trained, run.task, run.test, run.dataset
    bf16 = use_bf16(params.mixed_precision)
    log.info(
        "evaluating %s on %d %s test examples; bf16 %s", run.model_dir, len(test), task.name, bf16
    )
    with phase("scoring"):
        logits = model_scores(trained, dataset, task, params.per_device_eval_batch_size, bf16)
    y_true = np.asarray(dataset["labels"])
    scores = task_metrics(task.problem, y_true, logits, task.positive_id)
    # the task's official metric first (GLUE: MCC for CoLA, F1 for MRPC/QQP, Pearson for STS-B)
    metrics = {"metric": task.metric, task.metric: scores[task.metric]} | scores
    prep = trained.manifest.preprocessing
    if prep.truncation != "hierarchical":  # hierarchical reads long texts in pieces
        metrics["test_share_truncated"] = truncated_share(trained.tokenizer, test, prep)

    generated = generation(trained, task, dataset, params, y_true)
    metrics |= generated["metrics"]
    out = test_outcome(task, test, y_true, logits, trained.manifest.temperature)
    predictions = out.predictions
    if out.calibration is not None:
        calibration = out.calibration
        metrics |= {"ece": calibration["ece"], "ece_uncalibrated": calibration["ece_uncalibrated"]}
    if generated["texts"] is not None:
        predictions = predictions.assign(generated=generated["texts"])

    interval = test_interval(task, task.metric, y_true, logits)
    return Scored(metrics, scores, generated["metrics"], out, predictions, interval)


def save_evaluation(
    run: EvaluationRun,
    scored: Scored,
    params: EvaluateParams,
    report_dir: Path,
    finetune_report_dir: Path | None,
) -> None:
    """The save: metrics.json and run.json, per_class.json, confusion.csv, the figures and
    report.md; the test scores logged and the headline."""
    task, test, out, metrics = run.task, run.test, scored.outcome, scored.metrics
    calibration = out.calibration
    # metrics.json: the test scores, what a reviewer compares; run.json: the whole record (the
    # task's and its metric's names, the interval, the sizes, the params, the wall time)
    record = {"task": task.name, "test_examples": len(test)} | metrics
    record |= {"interval": scored.interval}
    # which model these scores are of: bertfit export attaches them to its card only when the
    # directory it exports has this fingerprint
    record["model"] = {"dir": str(run.model_dir), "fingerprint": model_fingerprint(run.model_dir)}
    seconds = elapsed_s()
    if seconds is not None:
        record["wall_s"] = seconds
    record["params"] = params.model_dump(mode="json")
    if calibration is not None:
        record["calibration"] = calibration
    ece = ["ece"] if calibration is not None else []
    write_record(report_dir, record, [*scored.scores, *scored.generated, *ece])
    write_json(report_dir / "per_class.json", out.per_class)
    write_csv(  # classification: the confusion plot's rows; regression: actual against predicted
        report_dir / "confusion.csv",
        ({"actual": a, "predicted": p} for a, p in zip(out.actual, out.predicted, strict=True)),
        ["actual", "predicted"],
    )
    figures = draw_figures(
        report_dir / FIGURES,
        task,
        out.per_class,
        out.confusion,
        out.actual,
        out.predicted,
        finetune_report_dir,
        calibration,
    )
    write_report(
        report_dir / "report.md",
        task.name,
        run.model_dir,
        run.trained.manifest.preprocessing,
        len(test),
        metrics,
        out.per_class,
        out.confusion,
        figures,
        scored.interval,
        calibration,
        out.mistakes,
    )
    scores = scored.scores
    log.info("test scores: %s", ", ".join(f"{k} {v:.4g}" for k, v in scores.items()))
    line = headline_text(task.name, task.metric, scores[task.metric], scored.interval)
    headline(f"{line}; report: {report_dir / 'report.md'}")
