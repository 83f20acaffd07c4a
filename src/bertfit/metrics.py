"""Pure metric functions: (labels, predictions) -> dict of floats, computed with scikit-learn."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from scipy.special import log_softmax
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    matthews_corrcoef,
    mean_squared_error,
    precision_recall_fscore_support,
)

if TYPE_CHECKING:  # an annotation only: the metrics stay below the task format
    from bertfit.data.tasks import Task


def classification_metrics(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """Accuracy, error rate and macro-F1 of integer class predictions."""
    accuracy = float(accuracy_score(labels, predictions))
    return {
        "accuracy": accuracy,
        "error_rate": 1.0 - accuracy,
        "macro_f1": float(f1_score(labels, predictions, average="macro", zero_division=0)),
    }


def per_class_metrics(
    labels: np.ndarray, predictions: np.ndarray, label_names: list[str]
) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support for every class in `label_names` (index = class id)."""
    ids = list(range(len(label_names)))
    p, r, f, s = precision_recall_fscore_support(labels, predictions, labels=ids, zero_division=0)
    return {
        name: {
            "precision": float(p[i]),
            "recall": float(r[i]),
            "f1": float(f[i]),
            "support": int(s[i]),
        }
        for i, name in enumerate(label_names)
    }


def regression_metrics(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """Pearson and Spearman correlation and mean squared error of numeric predictions.

    A constant prediction has no correlation; it scores 0 rather than NaN, so a collapsed model
    ranks last instead of breaking model selection.
    """
    labels = np.asarray(labels, dtype=np.float64).ravel()
    predictions = np.asarray(predictions, dtype=np.float64).ravel()
    constant = np.ptp(predictions) == 0 or np.ptp(labels) == 0
    return {
        "pearson": 0.0 if constant else float(pearsonr(labels, predictions)[0]),
        "spearman": 0.0 if constant else float(spearmanr(labels, predictions)[0]),
        "mse": float(mean_squared_error(labels, predictions)),
    }


def task_metrics(
    problem: str, labels: np.ndarray, logits: np.ndarray, positive_id: int | None = None
) -> dict[str, float]:
    """A task's metrics from model outputs: argmax classes, or the single regression value.

    Classification: accuracy, error rate, macro-F1 and Matthews correlation (CoLA's metric), plus
    the positive class's F1 when `positive_id` is given (MRPC, QQP).
    """
    if problem == "regression":
        return regression_metrics(labels, logits[:, 0])
    predictions = np.argmax(logits, axis=-1)
    scores = classification_metrics(labels, predictions)
    scores["mcc"] = float(matthews_corrcoef(labels, predictions))
    if positive_id is not None:
        scores["f1"] = float(
            f1_score(labels, predictions, pos_label=positive_id, average="binary", zero_division=0)
        )
    return scores


def score_loss(problem: str, labels: np.ndarray, scores: np.ndarray) -> float:
    """The validation loss from a model's scores: mean cross-entropy, or MSE for regression.

    For an encoder's logits this is the loss its head trains with, so selection on `loss` means
    what it meant in the Trainer's own evaluation loop.
    """
    if problem == "regression":
        return float(mean_squared_error(np.asarray(labels, dtype=np.float64), scores[:, 0]))
    log_probs = log_softmax(np.asarray(scores, dtype=np.float64), axis=-1)
    return float(-log_probs[np.arange(len(labels)), np.asarray(labels)].mean())


def metric_value(
    task: Task, metric: str, labels: npt.NDArray[Any], scores: npt.NDArray[Any]
) -> float:
    """One validation metric (a task_metrics key, or loss) of a set of scores."""
    if metric == "loss":
        return score_loss(task.problem, labels, scores)
    if metric == "accuracy" and task.problem != "regression":  # the common case, 100x quicker
        return float((np.argmax(scores, axis=-1) == labels).mean())
    return task_metrics(task.problem, labels, scores, task.positive_id)[metric]
